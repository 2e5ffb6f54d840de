/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* meshctl ca: the mesh root CA of standalone mode (tools/meshctl-ca.c). */
#ifndef SKM_MESHCTL_CA_H
#define SKM_MESHCTL_CA_H

/* Runs `meshctl ca ...` with ARGV[0] = "ca". Returns the exit status:
 * 0 done, 1 failed, 2 usage error. Touches no bpffs. */
int meshctl_ca_main(int argc, char **argv);

#endif /* SKM_MESHCTL_CA_H */
