/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The wire protocol between skmesh-cni (the chained CNI plugin) and meshd,
 * shared by both sides.
 *
 * meshd listens on a unix stream socket (SKM_CNI_SOCKET unless the plugin's
 * config says "socket"). The plugin connects, writes ONE request, a JSON
 * object followed by '\n', and shuts its write side down; meshd answers with
 * ONE JSON object followed by '\n' and closes. Each side reads at most
 * SKM_CNI_MSG_MAX bytes; more is a malformed peer.
 *
 * Request (every string field present unless said otherwise):
 *   {"version": 1,
 *    "op": "add" | "del" | "check",
 *    "containerId": "...",            CNI_CONTAINERID
 *    "netns": "/var/run/netns/...",   CNI_NETNS ("" on a DEL without one)
 *    "ifName": "eth0",                CNI_IFNAME
 *    "podNamespace": "...", "podName": "...", "podUid": "...",
 *                                     CNI_ARGS K8S_POD_*; absent on a DEL
 *                                     whose runtime gave none
 *    "hostInterfaces": ["cni0", "veth1234"],
 *                                     prevResult's interfaces without a
 *                                     sandbox, in its order (add, check)
 *    "ips": ["10.0.0.5", "fd00::5"]}  prevResult's ips, the address only,
 *                                     in its order (add, check)
 *
 * Reply: {"ok": true} once the pod is enrolled (maps written, its in-pod
 * listeners open) for "add", removed for "del", still enrolled for "check";
 * else {"ok": false, "error": "what went wrong"}.
 *
 * When meshd cannot be reached (no socket, refused, no reply within the
 * plugin's ackTimeoutMs) an ADD still succeeds: the plugin leaves the
 * request, as above, in SKM_CNI_PENDING_DIR/<containerId>.json (mode 0600,
 * at most SKM_CNI_MSG_MAX bytes, at most SKM_CNI_PENDING_MAX files) for
 * meshd to enrol once it is up; the DEL of that container removes it.
 */
#ifndef SKMESH_CNI_H
#define SKMESH_CNI_H

#define SKM_CNI_PROTO_VERSION	1
#define SKM_CNI_SOCKET		"/var/run/skmesh/cni.sock"
#define SKM_CNI_PENDING_DIR	"/var/run/skmesh/cni-pending"
#define SKM_CNI_MSG_MAX		(64 * 1024)
#define SKM_CNI_PENDING_MAX	4096
#define SKM_CNI_ACK_TIMEOUT_MS	10000

#endif /* SKMESH_CNI_H */
