/*
 * jws.h: JWS compact serialization, parsed strictly and verified with OpenSSL.
 *
 * This is the only module that touches OpenSSL's signature APIs for
 * verification (libjwt verifies nothing in baton: docs/design.md lists why).
 *
 * Keys: a JWK Set document becomes an immutable, atomically refcounted
 * `struct jws_keyset`. Every usable key is parsed into an EVP_PKEY once, at
 * load; the algorithm each key may verify is pinned then, from its kty, crv and
 * the JWK's own `alg` when present. Unusable keys (use "enc", key_ops without
 * "verify", unknown kty/crv, RSA under 2048 bits or e != 65537, EC point not on
 * the curve, duplicate kid, ...) are skipped and counted, never fatal.
 *
 * Tokens: `jws_parse` splits and decodes a compact JWS (strict base64url, size
 * cap before any decoding, JSON read by jws_json.c: jansson's grammar with
 * duplicate keys rejected and a nesting cap, in one pass), and refuses headers baton does not understand (alg none in any case,
 * HS*, unknown alg, any `crit`, `b64` other than true, embedded or remote keys
 * jku/x5u/jwk/x5c). `jws_verify` checks the signature against one key. Claim
 * checks (iss, exp, aud, typ ...) are authn.c's.
 *
 * Choices, and why:
 * - jku, x5u, jwk, x5c in a token header fail with REASON_EMBEDDED_KEY rather
 *   than being ignored: no legitimate issuer baton trusts needs them, and a
 *   token carrying one is an attack or a misconfiguration worth seeing in the
 *   audit record. x5t / x5t#S256 (thumbprints, not keys) are ignored.
 * - RSA keys must have e = 65537 (every issuer uses it; it also rules out the
 *   e = 3 forgeries against lax PKCS#1 parsers) and 2048..8192 bits. A leading
 *   zero octet in n is tolerated (RFC 7518 forbids it; some issuers emit it).
 * - A signature must have exactly the key's length (modulus bytes; 2 x field
 *   bytes for ECDSA; 64 for Ed25519): one accepted spelling per signature.
 * - PKCS#1 v1.5 DigestInfo without the NULL parameter (Wycheproof
 *   "acceptable", MissingNull) is rejected: OpenSSL compares the encoding it
 *   builds byte for byte.
 * - Kids are unique within a key set: a later key with a kid already seen is
 *   skipped, so a lookup can never pick between two keys.
 */
#ifndef BATON_JWS_H
#define BATON_JWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "reason.h"

#define JWS_KEYSET_MAX_BYTES (512u * 1024u) /* a JWK Set document larger than this is refused */
#define JWS_KEYSET_MAX_KEYS 100             /* a document with more keys is refused */
#define JWS_KID_MAX 256                     /* longer kids: key skipped / token cannot match */
#define JWS_DEFAULT_MAX_TOKEN_BYTES 16384u
#define JWS_JSON_MAX_DEPTH 16 /* nesting of arrays/objects in header and payload */
#define JWS_SIG_MAX 1024      /* RSA-8192; nothing baton loads has a longer signature */
#define JWS_RSA_MIN_BITS 2048
#define JWS_RSA_MAX_BITS 8192

struct jws_key;    /* opaque: EVP_PKEY, kid, kty/crv, pinned algorithms */
struct jws_keyset; /* opaque, immutable, atomic refcount */

/*
 * Parses a JWK Set document ({"keys": [...]}) of `len` bytes. Returns an owned
 * keyset (refcount 1; release with jws_keyset_unref), or NULL with a message
 * in `err` (caller-owned, errlen bytes) when the document itself is unusable:
 * too large, not JSON, duplicate member names, no "keys" array, more than
 * JWS_KEYSET_MAX_KEYS entries. A document whose keys are all unusable is not
 * an error here: it returns a keyset with count 0 (the caller decides).
 */
struct jws_keyset *jws_keyset_parse(const char *json, size_t len, char *err, size_t errlen);
/* Adds a reference; returns `ks`. Thread-safe. */
struct jws_keyset *jws_keyset_ref(struct jws_keyset *ks);
/* Drops a reference; frees on the last one. NULL is a no-op. Thread-safe. */
void jws_keyset_unref(struct jws_keyset *ks);
/* Number of usable keys, and of keys skipped at load. */
size_t jws_keyset_count(const struct jws_keyset *ks);
size_t jws_keyset_skipped(const struct jws_keyset *ks);
/* Why the first skipped key was skipped ("" when none was); borrowed, valid
 * while ks lives. Never contains key material. */
const char *jws_keyset_note(const struct jws_keyset *ks);
/* The i-th usable key (i < count), borrowed, valid while ks lives. */
const struct jws_key *jws_keyset_key(const struct jws_keyset *ks, size_t i);
/* The key whose kid is exactly these `len` bytes, or NULL. Borrowed, valid
 * while ks lives. Kids are unique within a keyset (later duplicates skipped). */
const struct jws_key *jws_keyset_find(const struct jws_keyset *ks, const char *kid, size_t len);

/* The key's kid (NUL-terminated), or NULL when the JWK had none. Borrowed. */
const char *jws_key_kid(const struct jws_key *k);
/* Bitmask (1u << enum jws_alg) of the algorithms this key may verify. */
unsigned jws_key_algs(const struct jws_key *k);

/* JWS algorithms, as bits of a key's or an issuer's accepted set (config.h
 * cfg_issuer.algorithms). */
enum jws_alg {
    JWS_RS256,
    JWS_RS384,
    JWS_RS512,
    JWS_PS256,
    JWS_PS384,
    JWS_PS512,
    JWS_ES256,
    JWS_ES384,
    JWS_ES512,
    JWS_EDDSA,
    JWS_ALG__COUNT
};
/* "RS256" -> JWS_RS256 (exact, case-sensitive as RFC 7518), or -1. */
int jws_alg_from_name(const char *name);
const char *jws_alg_name(enum jws_alg alg);
/* JWS alg name -> enum jws_alg, or -1. Wraps jws_alg_from_name and
 * also accepts "Ed25519" (RFC 9864's fully specified name for EdDSA/Ed25519). */
int jws_alg_lookup(const char *name);

/*
 * A parsed, not yet verified token. Fields are filled by jws_parse and
 * released by jws_token_clear. Start it zeroed (JWS_TOKEN_INIT).
 */
struct jws_token {
    json_t *header;   /* owned reference; JSON object */
    json_t *claims;   /* owned reference; JSON object (the payload) */
    enum jws_alg alg; /* header alg, already known to be one of enum jws_alg */
    const char *kid;  /* borrowed from header, NUL-terminated; NULL when absent */
    size_t kid_len;
    const char *typ;           /* borrowed from header; NULL when absent */
    const char *signing_input; /* borrowed from the caller's token text: "h.p" */
    size_t signing_input_len;
    size_t text_len;    /* the whole compact token "h.p.s" at signing_input */
    bool si_sha256_set; /* si_sha256 holds SHA-256("h.p") (jws_token_sha256) */
    unsigned char si_sha256[32];
    size_t sig_len;
    unsigned char sig[JWS_SIG_MAX];
};
#define JWS_TOKEN_INIT \
    {                  \
        0              \
    }

/*
 * Parses the compact JWS `tok` (`len` bytes, need not be NUL-terminated, must
 * outlive `out` because signing_input points into it). `max_bytes` is the
 * size cap (0: JWS_DEFAULT_MAX_TOKEN_BYTES), checked before any decoding.
 * Returns REASON_ALLOWED and fills `out`, or a reason (TOKEN_TOO_LARGE,
 * TOKEN_MALFORMED, TOKEN_BAD_ENCODING, TOKEN_BAD_JSON, ALG_NONE,
 * ALG_NOT_ALLOWED, CRIT_UNSUPPORTED, EMBEDDED_KEY, BAD_CLAIM_TYPE,
 * BAD_SIGNATURE) with `out` left cleared.
 */
enum reason jws_parse(const char *tok, size_t len, size_t max_bytes, struct jws_token *out);

/*
 * The SHA-256 of the whole compact token `t` was parsed from (its fingerprint)
 * into `out`, in one pass over the bytes. When t's alg signs a SHA-256 digest
 * (RS256, PS256, ES256), the digest of the signing input is a by-product of
 * that pass and is kept in t, so jws_verify hashes nothing again. Thread-safe.
 */
void jws_token_sha256(struct jws_token *t, unsigned char out[32]);

/*
 * Verifies t's signature with key `k`. `allowed` is the issuer's algorithms
 * bitmask. The header alg must be in `allowed` (else ALG_NOT_ALLOWED) and
 * pinned by the key (else ALG_KEY_MISMATCH); then the signature must verify
 * (else BAD_SIGNATURE). Returns REASON_ALLOWED on success. Thread-safe.
 */
enum reason jws_verify(const struct jws_token *t, const struct jws_key *k, unsigned allowed);

/*
 * Verifies a raw signature over `msg` with `k` for `alg`, the primitive under
 * jws_verify (no header, no allow-list): 0 valid, -1 invalid. ECDSA signatures
 * are JWS raw r||s; Wycheproof vectors and benchmarks drive this directly.
 */
int jws_verify_raw(const struct jws_key *k, enum jws_alg alg, const void *msg, size_t msglen,
                   const unsigned char *sig, size_t siglen);

/* Releases what jws_parse filled; leaves `t` zeroed. Safe on a zeroed token. */
void jws_token_clear(struct jws_token *t);

/*
 * True when the JSON text `s` (len bytes) nests arrays/objects deeper than
 * `max_depth`. A pre-scan before jansson reads a key set: jansson's own limit
 * (2048) is far above what a key set needs (tokens are read by jws_json.c,
 * which caps nesting itself). Strings are skipped, so brackets inside them do
 * not count.
 */
bool jws_json_too_deep(const char *s, size_t len, int max_depth);

#endif
