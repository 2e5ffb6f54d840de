/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One HTTP/2 connection of the CA service, without I/O: the bytes the
 * TLS layer read go in (ca_conn_recv), the bytes to write come out
 * (ca_conn_send). It serves unary gRPC calls: each stream's headers are
 * checked (grpc.h), its one message gathered, and when the client ends
 * the stream the host's call() is made, right there, and its answer
 * sent: the message then trailers, or a trailers-only error.
 *
 * Bounds: at most CA_CONN_STREAMS streams at once (SETTINGS, enforced by
 * nghttp2 with REFUSED_STREAM), CA_CONN_HDR_BYTES of header fields on a
 * stream (more: RST_STREAM), a message of at most the host's max_msg,
 * and every byte of message held counted against a budget shared by all
 * connections (over it: RESOURCE_EXHAUSTED, nothing stored).
 */
#ifndef SKM_CA_CONN_H
#define SKM_CA_CONN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "grpc.h"

#define CA_CONN_STREAMS		16
#define CA_CONN_HDR_BYTES	(16U << 10)

/* What a call answers: status OK with BODY (a packed response message,
 * malloc'ed, taken over), or an error status and a message. */
struct ca_reply {
	enum grpc_status status;
	char message[256];
	uint8_t *body;
	size_t len;
};

struct ca_conn_host {
	/* A whole request whose headers passed grpc_req_check (the
	 * message in r->msg). Fills OUT. */
	void (*call)(void *arg, struct grpc_req *r, struct ca_reply *out);
	/* A stream refused before call() (headers, framing, budget): told
	 * for counting and logging. */
	void (*refused)(void *arg, enum grpc_status st, const char *why);
	void *arg;
	size_t max_msg;			/* a message's bytes */
	_Atomic size_t *budget;		/* message bytes all connections may
					 * still hold */
};

struct ca_conn;

/* NULL on out of memory. The server's SETTINGS are queued at once. */
struct ca_conn *ca_conn_new(const struct ca_conn_host *host);
void ca_conn_free(struct ca_conn *c);
/* Bytes read from the peer. 0, or -EPROTO when the connection must be
 * closed (a protocol error: GOAWAY is queued for ca_conn_send). */
int ca_conn_recv(struct ca_conn *c, const uint8_t *in, size_t len);
/* Bytes to write, in *OUT (valid until the next call); 0 when there is
 * nothing, <0 on error. */
ssize_t ca_conn_send(struct ca_conn *c, const uint8_t **out);
/* Whether the connection still wants to read or write (0: close it). */
int ca_conn_alive(struct ca_conn *c);
/* Asks the peer to go away (GOAWAY NO_ERROR), e.g. at shutdown. */
void ca_conn_shutdown(struct ca_conn *c);

#endif /* SKM_CA_CONN_H */
