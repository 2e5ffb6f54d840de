// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* gRPC message framing, request and response headers (grpc.h). */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "grpc.h"

static const char *const status_names[GRPC_STATUS_COUNT] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *grpc_status_name(int code)
{
	if (code < 0 || code >= GRPC_STATUS_COUNT)
		return "UNKNOWN";
	return status_names[code];
}

int grpc_frame_hdr(uint8_t hdr[GRPC_FRAME_HDR], size_t len)
{
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	hdr[0] = 0;
	hdr[1] = (uint8_t)(len >> 24);
	hdr[2] = (uint8_t)(len >> 16);
	hdr[3] = (uint8_t)(len >> 8);
	hdr[4] = (uint8_t)len;
	return 0;
}

/* --- messages ---------------------------------------------------------- */

void grpc_msg_init(struct grpc_msg *m, size_t max)
{
	memset(m, 0, sizeof(*m));
	m->max = max;
}

static int msg_feed(struct grpc_msg *m, const uint8_t *data, size_t len)
{
	while (len) {
		size_t take;

		if (m->whole)
			return -EPROTO;
		if (m->hdr_len < GRPC_FRAME_HDR) {
			take = GRPC_FRAME_HDR - m->hdr_len;
			if (take > len)
				take = len;
			memcpy(m->hdr + m->hdr_len, data, take);
			m->hdr_len += take;
			data += take;
			len -= take;
			if (m->hdr_len < GRPC_FRAME_HDR)
				return 0;
			if (m->hdr[0] != 0)
				return -EPROTONOSUPPORT;
			m->want = (uint32_t)m->hdr[1] << 24 | (uint32_t)m->hdr[2] << 16 |
				  (uint32_t)m->hdr[3] << 8 | m->hdr[4];
			if (m->want > m->max)
				return -EMSGSIZE;
			if (m->reserve && m->reserve(m->reserve_arg, (size_t)m->want + 1))
				return -ENOBUFS;
			/* one more byte so an empty message has a buffer too */
			m->buf = malloc((size_t)m->want + 1);
			if (!m->buf)
				return -ENOMEM;
			if (!m->want)
				m->whole = 1;
			continue;
		}
		take = m->want - m->len;
		if (take > len)
			take = len;
		memcpy(m->buf + m->len, data, take);
		m->len += take;
		data += take;
		len -= take;
		if (m->len == m->want)
			m->whole = 1;
	}
	return 0;
}

int grpc_msg_feed(struct grpc_msg *m, const uint8_t *data, size_t len)
{
	if (!m->err)
		m->err = msg_feed(m, data, len);
	return m->err;
}

int grpc_msg_done(const struct grpc_msg *m)
{
	if (m->err)
		return m->err;
	if (m->whole)
		return 0;
	return m->hdr_len ? -EPROTO : -ENODATA;
}

enum grpc_status grpc_msg_status(int err, const char **text)
{
	switch (err) {
	case 0:
		*text = "";
		return GRPC_OK;
	case -EPROTONOSUPPORT:
		*text = "compressed message, but no grpc-encoding was agreed";
		return GRPC_INTERNAL;
	case -EMSGSIZE:
		*text = "message larger than the maximum";
		return GRPC_RESOURCE_EXHAUSTED;
	case -ENOMEM:
		*text = "out of memory";
		return GRPC_RESOURCE_EXHAUSTED;
	case -ENOBUFS:
		*text = "server busy: too many request bytes held, try again later";
		return GRPC_RESOURCE_EXHAUSTED;
	case -ENODATA:
		*text = "no request message";
		return GRPC_INVALID_ARGUMENT;
	case -EPROTO:
		*text = "message cut short, or more than one message";
		return GRPC_INVALID_ARGUMENT;
	default:
		*text = "bad message";
		return GRPC_INTERNAL;
	}
}

void grpc_msg_free(struct grpc_msg *m)
{
	if (m->buf)
		OPENSSL_cleanse(m->buf, m->len);
	free(m->buf);
	m->buf = NULL;
	m->len = 0;
}

/* --- requests ---------------------------------------------------------- */

static int is(const uint8_t *s, size_t n, const char *lit)
{
	size_t l = strlen(lit);

	return n == l && !memcmp(s, lit, l);
}

/* application/grpc, application/grpc+proto or application/grpc;params */
static int ctype_grpc(const uint8_t *v, size_t n)
{
	size_t l = strlen(GRPC_CONTENT_TYPE);

	if (n < l || memcmp(v, GRPC_CONTENT_TYPE, l))
		return 0;
	return n == l || is(v + l, n - l, "+proto") || v[l] == ';';
}

void grpc_req_init(struct grpc_req *r, size_t max_msg)
{
	memset(r, 0, offsetof(struct grpc_req, msg));
	grpc_msg_init(&r->msg, max_msg);
}

void grpc_req_header(struct grpc_req *r, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen)
{
	static const char bearer[] = "Bearer ";

	if (is(name, nlen, ":method")) {
		r->dup |= r->post;
		r->post = is(value, vlen, "POST");
	} else if (is(name, nlen, ":path")) {
		size_t n = vlen < sizeof(r->path) - 1 ? vlen : sizeof(r->path) - 1;

		r->dup |= r->path[0] != 0;
		memcpy(r->path, value, n);
		r->path[n] = 0;
		r->path_ok = vlen == n;
	} else if (is(name, nlen, "content-type")) {
		r->dup |= r->ctype_ok;
		r->ctype_ok = ctype_grpc(value, vlen);
	} else if (is(name, nlen, "te")) {
		r->te_ok = is(value, vlen, "trailers");
	} else if (is(name, nlen, "authorization")) {
		size_t bl = sizeof(bearer) - 1, i;

		if (r->token[0] || r->bad_auth) {
			r->dup = 1;
			return;
		}
		/* the scheme is case-insensitive (RFC 9110 11.1) */
		if (vlen <= bl || vlen - bl > GRPC_MAX_TOKEN ||
		    strncasecmp((const char *)value, bearer, bl)) {
			r->bad_auth = 1;
			return;
		}
		for (i = bl; i < vlen; i++)
			if (value[i] <= 0x20 || value[i] >= 0x7f) {
				r->bad_auth = 1;
				return;
			}
		memcpy(r->token, value + bl, vlen - bl);
		r->token[vlen - bl] = 0;
	}
}

enum grpc_status grpc_req_check(const struct grpc_req *r, const char *path,
				char *why, size_t whylen)
{
	const char *w = NULL;
	enum grpc_status st = GRPC_INTERNAL;

	if (r->dup)
		w = "a header appears twice";
	else if (!r->post)
		w = ":method is not POST";
	else if (!r->ctype_ok)
		w = "content-type is not application/grpc";
	else if (!r->te_ok)
		w = "te is not trailers";
	else if (!r->path_ok || strcmp(r->path, path)) {
		w = "unknown method: this server serves " GRPC_CA_PATH " only";
		st = GRPC_UNIMPLEMENTED;
	}
	if (!w)
		return GRPC_OK;
	if (whylen) {
		strncpy(why, w, whylen - 1);
		why[whylen - 1] = 0;
	}
	return st;
}

void grpc_req_free(struct grpc_req *r)
{
	OPENSSL_cleanse(r->token, sizeof(r->token));
	grpc_msg_free(&r->msg);
}

/* --- responses --------------------------------------------------------- */

void grpc_resp_init(struct grpc_resp *p, size_t max_msg)
{
	memset(p, 0, offsetof(struct grpc_resp, msg));
	p->grpc_status = -1;
	grpc_msg_init(&p->msg, max_msg);
}

static int parse_int(const uint8_t *v, size_t n, int max)
{
	int x = 0;
	size_t i;

	if (!n || n > 5)
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	return x <= max ? x : -1;
}

void grpc_resp_header(struct grpc_resp *p, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen)
{
	if (is(name, nlen, ":status"))
		p->http_status = parse_int(value, vlen, 999);
	else if (is(name, nlen, "content-type"))
		p->ctype_ok = ctype_grpc(value, vlen);
	else if (is(name, nlen, "grpc-status"))
		/* any number is kept: a code this side does not know is
		 * reported as it is (grpc_status_name says UNKNOWN) */
		p->grpc_status = parse_int(value, vlen, 99999);
	else if (is(name, nlen, "grpc-message"))
		grpc_pct_decode(value, vlen, p->message, sizeof(p->message));
}

enum grpc_status grpc_resp_status(const struct grpc_resp *p, char *msg, size_t msglen)
{
	const char *text = NULL;
	int st;

	if (p->http_status != 200) {
		text = "HTTP status is not 200";
		st = GRPC_INTERNAL;
	} else if (!p->ctype_ok) {
		text = "content-type is not application/grpc";
		st = GRPC_INTERNAL;
	} else if (p->grpc_status < 0) {
		text = "no grpc-status in the trailers";
		st = GRPC_UNKNOWN;
	} else if (p->grpc_status != GRPC_OK) {
		text = p->message;
		st = p->grpc_status;
	} else {
		st = grpc_msg_status(grpc_msg_done(&p->msg), &text);
		if (st == GRPC_OK)
			text = "";
	}
	if (msglen) {
		strncpy(msg, text, msglen - 1);
		msg[msglen - 1] = 0;
	}
	return st;
}

void grpc_resp_free(struct grpc_resp *p)
{
	grpc_msg_free(&p->msg);
}

/* --- grpc-message ------------------------------------------------------ */

size_t grpc_pct_encode(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (!outlen)
		return 0;
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;

		if (c >= 0x20 && c <= 0x7e && c != '%') {
			if (o + 1 >= outlen)
				break;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= outlen)
				break;
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = 0;
	return o;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t grpc_pct_decode(const uint8_t *in, size_t inlen, char *out, size_t outlen)
{
	size_t i, o = 0;

	if (!outlen)
		return 0;
	for (i = 0; i < inlen && o + 1 < outlen; i++) {
		int hi, lo;

		if (in[i] == '%' && i + 2 < inlen &&
		    (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = (char)in[i];
		}
	}
	out[o] = 0;
	return o;
}
