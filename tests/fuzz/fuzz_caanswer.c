// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: meshd's reading of a CA's answer (ca_response_decode), the
 * message a remote CA, or anyone in its place, sends back. Checked: a
 * refusal says why; an accepted answer has a leaf and a chain, each a
 * whole certificate that encodes again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "fuzz.h"
#include "caclient.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	STACK_OF(X509) *chain = NULL;
	X509 *leaf = NULL;
	char why[256] = "";
	int rc = ca_response_decode(data, size, &leaf, &chain, why, sizeof(why));

	if (rc) {
		if (leaf || chain || !why[0])
			abort();
		return 0;
	}
	if (!leaf || !chain || i2d_X509(leaf, NULL) <= 0)
		abort();
	for (int i = 0; i < sk_X509_num(chain); i++)
		if (i2d_X509(sk_X509_value(chain, i), NULL) <= 0)
			abort();
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return 0;
}
