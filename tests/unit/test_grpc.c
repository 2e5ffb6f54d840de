// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * gRPC framing and headers (grpc.c): a message fed in every split comes
 * out whole; compressed, oversize, cut-short and trailing bytes are each
 * refused with their status; request headers are checked field by field;
 * grpc-message survives percent-encoding; and Istio's request message
 * built with protobuf-c goes through the framing unchanged.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ca.pb-c.h"
#include "grpc.h"
#include "unit.h"

static void hdr(struct grpc_req *r, const char *n, const char *v)
{
	grpc_req_header(r, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v));
}

static void rhdr(struct grpc_resp *p, const char *n, const char *v)
{
	grpc_resp_header(p, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v));
}

static void test_msg_any_split(void **state)
{
	uint8_t wire[GRPC_FRAME_HDR + 300];
	size_t split;

	(void)state;
	assert_int_equal(grpc_frame_hdr(wire, 300), 0);
	for (size_t i = 0; i < 300; i++)
		wire[GRPC_FRAME_HDR + i] = (uint8_t)(i * 7);
	for (split = 0; split <= sizeof(wire); split++) {
		struct grpc_msg m;

		grpc_msg_init(&m, 1000);
		assert_int_equal(grpc_msg_feed(&m, wire, split), 0);
		if (split < sizeof(wire))
			assert_int_equal(grpc_msg_done(&m), split ? -EPROTO : -ENODATA);
		assert_int_equal(grpc_msg_feed(&m, wire + split, sizeof(wire) - split), 0);
		assert_int_equal(grpc_msg_done(&m), 0);
		assert_int_equal(m.len, 300);
		assert_memory_equal(m.buf, wire + GRPC_FRAME_HDR, 300);
		/* a second message on a unary call */
		assert_int_equal(grpc_msg_feed(&m, wire, 1), -EPROTO);
		grpc_msg_free(&m);
	}
}

static void test_msg_refusals(void **state)
{
	uint8_t h[GRPC_FRAME_HDR];
	const char *text;
	struct grpc_msg m;

	(void)state;
	/* compressed: INTERNAL */
	grpc_msg_init(&m, 100);
	memcpy(h, "\x01\x00\x00\x00\x01", 5);
	assert_int_equal(grpc_msg_feed(&m, h, 5), -EPROTONOSUPPORT);
	assert_int_equal(grpc_msg_status(-EPROTONOSUPPORT, &text), GRPC_INTERNAL);
	assert_null(m.buf);
	grpc_msg_free(&m);

	/* over the maximum: refused from the prefix, nothing allocated */
	grpc_msg_init(&m, GRPC_MAX_MSG);
	assert_int_equal(grpc_frame_hdr(h, 10U << 20), 0);
	assert_int_equal(grpc_msg_feed(&m, h, 5), -EMSGSIZE);
	assert_null(m.buf);
	assert_int_equal(grpc_msg_status(-EMSGSIZE, &text), GRPC_RESOURCE_EXHAUSTED);
	grpc_msg_free(&m);

	/* exactly the maximum is fine */
	grpc_msg_init(&m, 16);
	assert_int_equal(grpc_frame_hdr(h, 16), 0);
	assert_int_equal(grpc_msg_feed(&m, h, 5), 0);
	assert_non_null(m.buf);
	grpc_msg_free(&m);

	/* an empty message is one message */
	grpc_msg_init(&m, 16);
	assert_int_equal(grpc_frame_hdr(h, 0), 0);
	assert_int_equal(grpc_msg_feed(&m, h, 5), 0);
	assert_int_equal(grpc_msg_done(&m), 0);
	assert_int_equal(grpc_msg_status(grpc_msg_done(&m), &text), GRPC_OK);
	grpc_msg_free(&m);

	assert_int_equal(grpc_msg_status(-ENODATA, &text), GRPC_INVALID_ARGUMENT);
	assert_int_equal(grpc_msg_status(-EPROTO, &text), GRPC_INVALID_ARGUMENT);
	assert_int_equal(grpc_frame_hdr(h, (size_t)UINT32_MAX + 1), -EMSGSIZE);
}

static void good_req(struct grpc_req *r)
{
	grpc_req_init(r, GRPC_MAX_MSG);
	hdr(r, ":method", "POST");
	hdr(r, ":scheme", "https");
	hdr(r, ":path", GRPC_CA_PATH);
	hdr(r, "content-type", "application/grpc");
	hdr(r, "te", "trailers");
}

static void test_req_headers(void **state)
{
	char why[128];
	struct grpc_req r;

	(void)state;
	good_req(&r);
	hdr(&r, "authorization", "Bearer abc.def.ghi");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_OK);
	assert_string_equal(r.token, "abc.def.ghi");
	assert_false(r.bad_auth);
	grpc_req_free(&r);
	assert_int_equal(r.token[0], 0);

	good_req(&r);
	hdr(&r, "content-type", "application/grpc+proto");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_INTERNAL);
	assert_non_null(strstr(why, "twice"));
	grpc_req_free(&r);

	grpc_req_init(&r, GRPC_MAX_MSG);
	hdr(&r, ":method", "POST");
	hdr(&r, ":path", GRPC_CA_PATH);
	hdr(&r, "content-type", "application/grpc+proto");
	hdr(&r, "te", "trailers");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_OK);
	grpc_req_free(&r);

	good_req(&r);
	hdr(&r, ":method", "GET");
	assert_int_not_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_OK);
	grpc_req_free(&r);

	grpc_req_init(&r, GRPC_MAX_MSG);
	hdr(&r, ":method", "GET");
	hdr(&r, ":path", GRPC_CA_PATH);
	hdr(&r, "content-type", "application/grpc");
	hdr(&r, "te", "trailers");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_INTERNAL);
	assert_non_null(strstr(why, "POST"));
	grpc_req_free(&r);

	grpc_req_init(&r, GRPC_MAX_MSG);
	hdr(&r, ":method", "POST");
	hdr(&r, ":path", GRPC_CA_PATH);
	hdr(&r, "content-type", "application/json");
	hdr(&r, "te", "trailers");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_INTERNAL);
	grpc_req_free(&r);

	grpc_req_init(&r, GRPC_MAX_MSG);
	hdr(&r, ":method", "POST");
	hdr(&r, ":path", GRPC_CA_PATH);
	hdr(&r, "content-type", "application/grpc");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_INTERNAL);
	assert_non_null(strstr(why, "te"));
	grpc_req_free(&r);

	grpc_req_init(&r, GRPC_MAX_MSG);
	hdr(&r, ":method", "POST");
	hdr(&r, ":path", "/istio.v1.auth.IstioCertificateService/Other");
	hdr(&r, "content-type", "application/grpc");
	hdr(&r, "te", "trailers");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)),
			 GRPC_UNIMPLEMENTED);
	grpc_req_free(&r);

	/* tokens: scheme, characters, length, a second one */
	good_req(&r);
	hdr(&r, "authorization", "Basic abc");
	assert_true(r.bad_auth);
	assert_int_equal(r.token[0], 0);
	grpc_req_free(&r);
	good_req(&r);
	hdr(&r, "authorization", "bearer a b");
	assert_true(r.bad_auth);
	grpc_req_free(&r);
	good_req(&r);
	hdr(&r, "authorization", "Bearer x");
	hdr(&r, "authorization", "Bearer y");
	assert_int_equal(grpc_req_check(&r, GRPC_CA_PATH, why, sizeof(why)), GRPC_INTERNAL);
	grpc_req_free(&r);
	{
		char *big = malloc(GRPC_MAX_TOKEN + 16);

		if (!big) {
			fail_msg("out of memory");
			return;
		}
		memcpy(big, "Bearer ", 7);
		memset(big + 7, 'a', GRPC_MAX_TOKEN + 1);
		big[7 + GRPC_MAX_TOKEN + 1] = 0;
		good_req(&r);
		hdr(&r, "authorization", big);
		assert_true(r.bad_auth);
		grpc_req_free(&r);
		big[7 + GRPC_MAX_TOKEN] = 0;
		good_req(&r);
		hdr(&r, "authorization", big);
		assert_false(r.bad_auth);
		assert_int_equal(strlen(r.token), GRPC_MAX_TOKEN);
		grpc_req_free(&r);
		free(big);
	}
}

static void test_resp(void **state)
{
	char msg[64];
	struct grpc_resp p;
	uint8_t wire[GRPC_FRAME_HDR + 3] = { 0, 0, 0, 0, 3, 'a', 'b', 'c' };

	(void)state;
	grpc_resp_init(&p, 100);
	rhdr(&p, ":status", "200");
	rhdr(&p, "content-type", "application/grpc");
	assert_int_equal(grpc_msg_feed(&p.msg, wire, sizeof(wire)), 0);
	assert_int_equal(grpc_resp_status(&p, msg, sizeof(msg)), GRPC_UNKNOWN);
	rhdr(&p, "grpc-status", "0");
	assert_int_equal(grpc_resp_status(&p, msg, sizeof(msg)), GRPC_OK);
	assert_int_equal(p.msg.len, 3);
	grpc_resp_free(&p);

	grpc_resp_init(&p, 100);
	rhdr(&p, ":status", "200");
	rhdr(&p, "content-type", "application/grpc");
	rhdr(&p, "grpc-status", "7");
	rhdr(&p, "grpc-message", "no pod of ns%2Fsa on node %E2%9C%93");
	assert_int_equal(grpc_resp_status(&p, msg, sizeof(msg)), GRPC_PERMISSION_DENIED);
	assert_string_equal(msg, "no pod of ns/sa on node \xe2\x9c\x93");
	grpc_resp_free(&p);

	grpc_resp_init(&p, 100);
	rhdr(&p, ":status", "503");
	rhdr(&p, "grpc-status", "0");
	assert_int_equal(grpc_resp_status(&p, msg, sizeof(msg)), GRPC_INTERNAL);
	grpc_resp_free(&p);

	assert_string_equal(grpc_status_name(16), "UNAUTHENTICATED");
	assert_string_equal(grpc_status_name(99), "UNKNOWN");
}

static void test_pct(void **state)
{
	char enc[64], dec[64];
	const char *in = "50% off\n\xc3\xa9!";

	(void)state;
	grpc_pct_encode(in, enc, sizeof(enc));
	assert_string_equal(enc, "50%25 off%0A%C3%A9!");
	grpc_pct_decode((const uint8_t *)enc, strlen(enc), dec, sizeof(dec));
	assert_string_equal(dec, in);
	/* a cut never splits an escape */
	assert_int_equal(grpc_pct_encode("%%%", enc, 8), 6);
	assert_string_equal(enc, "%25%25");
	/* malformed escapes stay */
	grpc_pct_decode((const uint8_t *)"a%zz%4", 6, dec, sizeof(dec));
	assert_string_equal(dec, "a%zz%4");
}

static void test_proto_roundtrip(void **state)
{
	Istio__V1__Auth__IstioCertificateRequest req =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT, *back;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *fields[1] = { &fe };
	Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	uint8_t *wire;
	size_t n;
	struct grpc_msg m;

	(void)state;
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = "spiffe://cluster.local/ns/a/sa/b";
	fe.key = "ImpersonatedIdentity";
	fe.value = &v;
	md.n_fields = 1;
	md.fields = fields;
	req.csr = "-----BEGIN CERTIFICATE REQUEST-----";
	req.validity_duration = 3600;
	req.metadata = &md;
	n = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	wire = malloc(GRPC_FRAME_HDR + n);
	assert_non_null(wire);
	assert_int_equal(grpc_frame_hdr(wire, n), 0);
	istio__v1__auth__istio_certificate_request__pack(&req, wire + GRPC_FRAME_HDR);
	grpc_msg_init(&m, GRPC_MAX_MSG);
	assert_int_equal(grpc_msg_feed(&m, wire, GRPC_FRAME_HDR + n), 0);
	assert_int_equal(grpc_msg_done(&m), 0);
	back = istio__v1__auth__istio_certificate_request__unpack(NULL, m.len, m.buf);
	assert_non_null(back);
	assert_string_equal(back->csr, req.csr);
	assert_int_equal(back->validity_duration, 3600);
	assert_non_null(back->metadata);
	assert_int_equal(back->metadata->n_fields, 1);
	assert_string_equal(back->metadata->fields[0]->key, "ImpersonatedIdentity");
	assert_string_equal(back->metadata->fields[0]->value->string_value, v.string_value);
	istio__v1__auth__istio_certificate_request__free_unpacked(back, NULL);
	grpc_msg_free(&m);
	free(wire);
}

int run_grpc_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_msg_any_split),
		cmocka_unit_test(test_msg_refusals),
		cmocka_unit_test(test_req_headers),
		cmocka_unit_test(test_resp),
		cmocka_unit_test(test_pct),
		cmocka_unit_test(test_proto_roundtrip),
	};

	return cmocka_run_group_tests_name("grpc", tests, NULL, NULL);
}
