// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cryptocost - what moving a GiB costs one core at the least, for
 * bench/tunnel: AES-256-GCM (OpenSSL EVP, the cipher of TLS 1.3's
 * TLS_AES_256_GCM_SHA384) sealing and opening 16 KiB records, and
 * memcpy() of 16 KiB pieces from one 4 MiB buffer to another (larger
 * than this machine's caches per core, as a socket's data is).
 *
 *   cryptocost [--seconds S]     (each of the three, default 0.5)
 *
 * Prints one JSON line of CPU seconds (the thread's own CPU clock) per
 * GiB: {"aes_gcm_seal_s_per_gib":..,"aes_gcm_open_s_per_gib":..,
 * "memcpy_s_per_gib":..}. Exit 1 when OpenSSL refuses (a message says
 * which call).
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORD	(16U << 10)
#define AREA	(4U << 20)
#define GIB	(1024.0 * 1024 * 1024)

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seals (enc) or opens RECORD-byte records from IN to OUT for SECONDS of
 * CPU, one fresh nonce per record as TLS does; CPU seconds per GiB, or -1. */
static double gcm(int enc, unsigned char *in, unsigned char *out, double seconds,
		  unsigned char tag[16])
{
	static const unsigned char key[32] = { 1, 2, 3 };
	unsigned char iv[12] = { 0 };
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	double t0 = cpu_s(), t;
	unsigned long long bytes = 0;
	size_t off = 0;
	int n;

	if (!c || !EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, NULL, enc)) {
		fprintf(stderr, "cryptocost: EVP_CipherInit_ex(aes-256-gcm) failed\n");
		return -1;
	}
	do {
		for (int i = 0; i < 16; i++) {
			iv[0]++;
			if (!EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, enc) ||
			    (!enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag)) ||
			    !EVP_CipherUpdate(c, out + off, &n, in + off, RECORD)) {
				fprintf(stderr, "cryptocost: EVP_CipherUpdate failed\n");
				EVP_CIPHER_CTX_free(c);
				return -1;
			}
			/* opening records sealed under other nonces: the tag
			 * does not match, which costs the same as a match */
			EVP_CipherFinal_ex(c, out + off + n, &n);
			if (enc)
				EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
			bytes += RECORD;
			off = (off + RECORD) % AREA;
		}
		t = cpu_s() - t0;
	} while (t < seconds);
	EVP_CIPHER_CTX_free(c);
	return t / (bytes / GIB);
}

static double copy(unsigned char *in, unsigned char *out, double seconds)
{
	double t0 = cpu_s(), t;
	unsigned long long bytes = 0;
	size_t off = 0;

	do {
		for (int i = 0; i < 64; i++) {
			memcpy(out + off, in + off, RECORD);
			bytes += RECORD;
			off = (off + RECORD) % AREA;
		}
		__asm__ volatile("" : : "r"(out) : "memory");
		t = cpu_s() - t0;
	} while (t < seconds);
	return t / (bytes / GIB);
}

int main(int argc, char **argv)
{
	double seconds = 0.5, seal, open_, cp;
	unsigned char *a = malloc(AREA + 64), *b = malloc(AREA + 64), tag[16] = { 0 };

	if (argc == 3 && !strcmp(argv[1], "--seconds"))
		seconds = atof(argv[2]);
	else if (argc != 1) {
		fprintf(stderr, "usage: cryptocost [--seconds S]\n");
		return 2;
	}
	if (!a || !b || seconds <= 0) {
		fprintf(stderr, "cryptocost: %s\n", seconds <= 0 ? "--seconds > 0" : "out of memory");
		return 2;
	}
	memset(a, 0x5a, AREA + 64);
	memset(b, 0xa5, AREA + 64);
	seal = gcm(1, a, b, seconds, tag);
	open_ = gcm(0, b, a, seconds, tag);
	cp = copy(a, b, seconds);
	if (seal < 0 || open_ < 0)
		return 1;
	printf("{\"aes_gcm_seal_s_per_gib\":%.4f,\"aes_gcm_open_s_per_gib\":%.4f,"
	       "\"memcpy_s_per_gib\":%.4f}\n", seal, open_, cp);
	free(a);
	free(b);
	return 0;
}
