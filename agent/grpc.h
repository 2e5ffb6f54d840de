/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * gRPC over HTTP/2, the parts a unary call needs on either side, without
 * I/O: the caller owns the socket, the TLS and the nghttp2 session, and
 * hands headers and DATA bytes to these functions as nghttp2's callbacks
 * deliver them. Messages are protobuf-c's (proto/ca.proto, built into
 * $(OUT)/proto/); this file never looks inside one.
 *
 * Wire rules (grpc/grpc doc/PROTOCOL-HTTP2.md):
 * - a message is framed as a 1-byte compressed flag, a 4-byte big-endian
 *   length and the bytes; compression is never negotiated here, so a set
 *   flag is refused (INTERNAL, as gRPC does for an unasked-for one); a
 *   length above the receiver's maximum (GRPC_MAX_MSG, 4 MiB, gRPC's
 *   default) is RESOURCE_EXHAUSTED, refused before any of it is stored;
 * - a request is POST to /<package>.<Service>/<Method> with content-type
 *   application/grpc (or application/grpc+proto) and "te: trailers";
 * - the status travels in trailers: grpc-status (decimal) and grpc-message
 *   (percent-encoded UTF-8); an error with no message body is sent as a
 *   "trailers-only" response (one HEADERS frame with :status 200,
 *   content-type and both fields, END_STREAM).
 *
 * Typical server use, per stream:
 *	struct grpc_req r; grpc_req_init(&r, GRPC_MAX_MSG);
 *	on_header:  grpc_req_header(&r, name, nlen, value, vlen);
 *	end of headers: st = grpc_req_check(&r, GRPC_CA_PATH, why, sizeof why);
 *	on_data:    rc = grpc_msg_feed(&r.msg, data, len);  (<0: refuse)
 *	end stream: grpc_msg_done(&r.msg) -> the message in r.msg.buf/len
 *	grpc_req_free(&r);
 * and a client, per call:
 *	grpc_frame_hdr() before the packed request in its DATA,
 *	struct grpc_resp p; grpc_resp_init(&p, GRPC_MAX_MSG);
 *	on_header (headers and trailers): grpc_resp_header(&p, ...);
 *	on_data:   grpc_msg_feed(&p.msg, ...);
 *	at close:  st = grpc_resp_status(&p, msg, sizeof msg);
 */
#ifndef SKM_GRPC_H
#define SKM_GRPC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (grpc/grpc doc/statuscodes.md). */
enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};
#define GRPC_STATUS_COUNT	17

/* "OK", "INVALID_ARGUMENT", ... ("UNKNOWN" for a code out of range). */
const char *grpc_status_name(int code);

#define GRPC_FRAME_HDR		5		/* flag + 32-bit length */
#define GRPC_MAX_MSG		(4U << 20)	/* gRPC's default maximum */
#define GRPC_MAX_TOKEN		8192		/* a bearer token's bytes */
#define GRPC_CONTENT_TYPE	"application/grpc"

/* Istio's certificate service (proto/ca.proto). */
#define GRPC_CA_SERVICE		"istio.v1.auth.IstioCertificateService"
#define GRPC_CA_PATH		"/" GRPC_CA_SERVICE "/CreateCertificate"

/* The 5-byte prefix of an uncompressed message of LEN bytes into HDR.
 * -EMSGSIZE when LEN does not fit 32 bits. */
int grpc_frame_hdr(uint8_t hdr[GRPC_FRAME_HDR], size_t len);

/*
 * One length-prefixed message being received: DATA bytes go in as they
 * come, in any pieces. Holds at most MAX bytes of message; a unary call
 * carries exactly one message, so bytes after it are an error too.
 */
struct grpc_msg {
	uint8_t *buf;		/* the message, once whole (malloc'ed) */
	size_t len;		/* bytes of it received */
	size_t max;
	uint32_t want;		/* its length, from the prefix */
	uint8_t hdr[GRPC_FRAME_HDR];
	uint8_t hdr_len;
	uint8_t whole;		/* every byte of it is in buf */
	int err;		/* the first error fed: every later feed
				 * returns it */
	/* Optional, set after grpc_msg_init: asked for the message's
	 * bytes before they are allocated (a budget shared by many
	 * messages); non-zero refuses it (-ENOBUFS). */
	int (*reserve)(void *arg, size_t n);
	void *reserve_arg;
};

void grpc_msg_init(struct grpc_msg *m, size_t max);
/* Feeds LEN bytes. 0: fine (more may come); -EPROTONOSUPPORT: the
 * message is compressed; -EMSGSIZE: its length is over the maximum;
 * -EPROTO: bytes after the message; -ENOBUFS: reserve() said no;
 * -ENOMEM. After an error the message
 * is refused: nothing more is stored. */
int grpc_msg_feed(struct grpc_msg *m, const uint8_t *data, size_t len);
/* At end of stream: 0 when exactly one whole message arrived, -ENODATA
 * when none, -EPROTO when it was cut short. */
int grpc_msg_done(const struct grpc_msg *m);
/* The status a feed or done error maps to (INTERNAL, RESOURCE_EXHAUSTED,
 * INVALID_ARGUMENT ...) with a fixed text for grpc-message. */
enum grpc_status grpc_msg_status(int err, const char **text);
/* Frees the buffer, wiping it first (a CSR is no secret, but a
 * client's message may be). */
void grpc_msg_free(struct grpc_msg *m);

/* A request's headers, as a server receives them. */
struct grpc_req {
	uint8_t post, path_ok, ctype_ok, te_ok, dup;
	uint8_t bad_auth;	/* authorization not "Bearer <token>" or too long */
	char path[128];		/* :path, cut to fit (for logs: no secret) */
	char token[GRPC_MAX_TOKEN + 1];	/* the bearer token, "" when none */
	struct grpc_msg msg;
};

void grpc_req_init(struct grpc_req *r, size_t max_msg);
/* One header (pseudo-headers included); names are lower case as HTTP/2
 * requires (nghttp2 has checked that). Only the fields gRPC defines are
 * looked at; a second :method, :path, content-type or authorization
 * marks the request bad. */
void grpc_req_header(struct grpc_req *r, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen);
/* After the last header: GRPC_OK, or why the request cannot be served
 * with a line in WHY: UNIMPLEMENTED for another :path than PATH,
 * INTERNAL for a request that is not gRPC (method, content-type, te).
 * A missing or malformed token is not checked here (see token). */
enum grpc_status grpc_req_check(const struct grpc_req *r, const char *path,
				char *why, size_t whylen);
/* Wipes the token, frees the message. */
void grpc_req_free(struct grpc_req *r);

/* A response's headers and trailers, as a client receives them. */
struct grpc_resp {
	int http_status;	/* :status, 0 until seen */
	int grpc_status;	/* -1 until seen */
	uint8_t ctype_ok;
	char message[256];	/* grpc-message, decoded, cut to fit */
	struct grpc_msg msg;
};

void grpc_resp_init(struct grpc_resp *p, size_t max_msg);
/* One header or trailer field. */
void grpc_resp_header(struct grpc_resp *p, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen);
/* After the stream closed: the call's status (UNKNOWN when the server
 * sent none, INTERNAL for a non-200 :status or a non-gRPC content-type,
 * or the message framing's error) and its message into MSG. On GRPC_OK
 * the response message is in p->msg.buf / p->msg.len. */
enum grpc_status grpc_resp_status(const struct grpc_resp *p, char *msg, size_t msglen);
void grpc_resp_free(struct grpc_resp *p);

/* grpc-message's percent-encoding: bytes outside 0x20..0x7e and '%'
 * become %XX. Writes a NUL-terminated text into OUT (cut at a whole
 * escape when it does not fit); returns its length. */
size_t grpc_pct_encode(const char *in, char *out, size_t outlen);
/* The reverse, NUL-terminated; a malformed escape is kept as it is
 * (as gRPC's decoders do). Returns the length. */
size_t grpc_pct_decode(const uint8_t *in, size_t inlen, char *out, size_t outlen);

#endif /* SKM_GRPC_H */
