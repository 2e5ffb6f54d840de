/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The libFuzzer entry points, declared for every fuzz target (the Makefile
 * passes this header with -include, so a target needs no #include of it):
 * LLVMFuzzerTestOneInput runs one input and returns 0; the optional
 * LLVMFuzzerInitialize runs once before the first. The same object links
 * with libFuzzer (make fuzz) and with tests/fuzz/replay.c (make test).
 */
#ifndef SKM_FUZZ_H
#define SKM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif /* SKM_FUZZ_H */
