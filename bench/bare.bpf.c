// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bare.bpf.c - the "limit" of the same-node bench: a bare sockmap redirect.
 *
 * sockops puts every established IPv4 socket whose both ends are in the
 * pod range into a SOCKHASH keyed by its 4-tuple; sk_msg redirects each
 * message to the peer socket's ingress queue. No metrics, no policy,
 * nothing else: whatever skmesh costs on top of this is its own overhead.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "skmesh.h"

#define AF_INET		2

/* Only sockets with both ends in pod_net/pod_mask are accelerated, so
 * nothing else on the machine is touched. Network order; set by skm-bare
 * before load (default 10.99.0.0/16, the test pod range). */
const volatile __u32 pod_net = bpf_htonl(0x0a630000);	/* 10.99.0.0 */
const volatile __u32 pod_mask = bpf_htonl(0xffff0000);	/* /16 */

/* bare_sock_hash: 4-tuple as seen from a socket -> that socket */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SKM_MAX_SOCKS);
	__type(key, struct skm_sock_key);
	__type(value, __u64);
} bare_sock_hash SEC(".maps");

static __always_inline int in_pods(__u32 ip)
{
	return (ip & pod_mask) == pod_net;
}

SEC("sockops")
int bare_sockops(struct bpf_sock_ops *skops)
{
	struct skm_sock_key key = {};

	if (skops->family != AF_INET)
		return 1;
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (!in_pods(skops->local_ip4) || !in_pods(skops->remote_ip4))
		return 1;

	key.sip = skops->local_ip4;
	key.dip = skops->remote_ip4;
	key.sport = skops->local_port;
	key.dport = bpf_ntohl(skops->remote_port);
	bpf_sock_hash_update(skops, &bare_sock_hash, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int bare_sk_msg(struct sk_msg_md *msg)
{
	/* The peer's key is ours reversed. */
	struct skm_sock_key key = {
		.sip = msg->remote_ip4,
		.dip = msg->local_ip4,
		.sport = bpf_ntohl(msg->remote_port),
		.dport = msg->local_port,
	};

	/* When the peer is not in the map (another node), the helper finds
	 * nothing and the message goes through TCP: SK_PASS without a
	 * redirect target means "pass", never drop. */
	bpf_msg_redirect_hash(msg, &bare_sock_hash, &key, BPF_F_INGRESS);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
