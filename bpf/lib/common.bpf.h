/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants the kernel headers would give user space but vmlinux.h lacks. */
#ifndef SKM_COMMON_BPF_H
#define SKM_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "skmesh.h"

#define AF_INET		2
#define ECONNREFUSED	111
#define TC_ACT_OK	0
#define IPPROTO_TCP	6

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

#endif /* SKM_COMMON_BPF_H */
