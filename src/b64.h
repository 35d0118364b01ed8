/*
 * b64.h: strict base64url (RFC 4648 section 5) for JWS.
 *
 * A token must have exactly one accepted spelling, so that its SHA-256
 * fingerprint (audit record, verified-token cache key) is stable and no two
 * different byte strings verify as the same token. The decoder therefore
 * refuses padding ('='), every byte outside [A-Za-z0-9_-], an impossible length
 * (len % 4 == 1), and non-canonical trailing bits (the unused low bits of the
 * last character must be zero). libjwt 1.10.2's decoder skips junk and accepts
 * padding; this one does neither.
 */
#ifndef BATON_B64_H
#define BATON_B64_H

#include <stddef.h>

/* Upper bound of the decoded size of `len` input characters. */
static inline size_t b64url_decoded_max(size_t len)
{
    return len / 4 * 3 + 2;
}

/* Exact encoded size (without NUL) of `len` bytes. */
static inline size_t b64url_encoded_len(size_t len)
{
    return len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

/*
 * Decodes `len` characters of `in` into `out` (caller-owned, at least
 * b64url_decoded_max(len) bytes). Returns 0 and sets *outlen, or -1 when the
 * input is not the canonical unpadded base64url spelling of some byte string
 * (out's contents are then unspecified). An empty input decodes to zero bytes.
 */
int b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);

/*
 * Encodes `len` bytes into `out` (caller-owned, at least
 * b64url_encoded_len(len) + 1 bytes), unpadded, NUL-terminated. Returns the
 * number of characters written (without the NUL).
 */
size_t b64url_encode(const unsigned char *in, size_t len, char *out);

#endif
