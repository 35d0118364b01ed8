/*
 * assertion.h: the signed caller assertion baton sends its upstreams
 * (README "Caller assertion"): who called, from which workflow execution,
 * under which policy, as an ES256 compact JWS in one header, verifiable by the
 * application against baton's JWKS (/.well-known/baton/jwks.json).
 *
 * Peers: IAP's x-goog-iap-jwt-assertion, Pomerium's X-Pomerium-Jwt-Assertion,
 * Envoy's forward_payload_header. Like IAP (ES256, kid, a published key set)
 * and unlike Envoy (which forwards the caller's own payload unsigned).
 *
 * The header is {"alg":"ES256","kid":<RFC 7638 thumbprint>,"typ":
 * ASSERTION_TYP}; the claims are assertion_claims'. Nothing request-specific
 * (request id, path, method) is in it, so one signature serves every request
 * of one (caller token, step, matched require_headers values): a per-worker
 * cache keeps the ready header line until shortly before `exp`, and a hit is
 * a hash and a compare. Signing (a miss) is OpenSSL EVP on a key parsed once;
 * this is the only module that touches signature APIs for assertions.
 *
 * Threads: a signer is immutable once built and shared by every worker (an
 * EVP_PKEY is safe to sign with concurrently); a cache belongs to one worker.
 */
#ifndef BATON_ASSERTION_H
#define BATON_ASSERTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"

struct authn_result;

#define ASSERTION_TYP "baton-assertion+jwt" /* RFC 8725 3.11 explicit typing */
#define ASSERTION_MAX_BYTES 8192            /* a signed header value larger than this is refused */
#define ASSERTION_MAX_HEADERS 32            /* require_headers values carried, in policy order */
#define ASSERTION_JWKS_MAX_AGE_S 300        /* Cache-Control max-age of the JWKS */
#define ASSERTION_CACHE_SLOTS 1024          /* per worker, direct-mapped */

/* The signing key (EC P-256) with its kid and the published key set. */
struct assertion_signer;

/*
 * Builds the signer of `cfg` (enabled): loads signing_key (a regular file of
 * mode 0600 or stricter, an unencrypted EC P-256 PEM private key) or, without
 * one, reuses `prev`'s generated key when `prev` (may be NULL) has one, else
 * generates a key; loads every previous_keys PEM (EC P-256 public keys, or
 * private keys of which only the public half is kept). Off the request path.
 * Returns an owned signer, or NULL with a message naming the file in err.
 */
struct assertion_signer *assertion_signer_new(const struct cfg_assertion *cfg,
                                              const struct assertion_signer *prev, char *err,
                                              size_t errlen);
void assertion_signer_free(struct assertion_signer *s);
/* Borrowed, valid while s lives. */
const char *assertion_signer_kid(const struct assertion_signer *s);
/* {"keys":[current, previous...]} (borrowed, valid while s lives; *len set when non-NULL). */
const char *assertion_signer_jwks(const struct assertion_signer *s, size_t *len);

/* What one assertion is about. Everything borrowed for the call. */
struct assertion_input {
    const struct cfg_assertion *cfg;
    const char *audience;              /* the upstream's audience */
    const struct authn_result *caller; /* a verified caller (REASON_ALLOWED) */
    bool cognito;     /* the issuer's audience_claim is client_id: sub = client_id */
    const char *step; /* the policy's own string: the cache knows a step by its address */
    const char *policy_file;
    const char *policy_sha256;
    bool dry_run;                     /* the step's mode is dry_run */
    const char *const *header_names;  /* require_headers that matched: names as in the policy */
    const char *const *header_values; /* and their values (not NUL-terminated) */
    const size_t *header_lens;
    size_t n_headers;      /* at most ASSERTION_MAX_HEADERS */
    const char *audit_log; /* the audit chain's log id, or NULL */
    int64_t now_s;
};

/*
 * The claims object (owned): iss, aud, iat, exp = min(iat + lifetime_s, the
 * caller token's exp), sub, caller {iss, sub, client_id, aws_account, jti,
 * token_sha256} (members the token lacks are left out), step, policy {file,
 * sha256}, headers {name: value} (bytes that are not UTF-8 are read as
 * Latin-1, as RFC 9110 obs-text), dry_run, audit_log. NULL only when the
 * caller has no verified claims.
 */
json_t *assertion_claims(const struct assertion_input *in);

/*
 * Signs `claims` (borrowed): an owned compact JWS, or NULL with err (a key
 * that cannot sign, or a result over ASSERTION_MAX_BYTES).
 */
char *assertion_sign(const struct assertion_signer *s, const json_t *claims, char *err,
                     size_t errlen);

/* A per-worker cache of ready header lines. Owned; one per worker thread. */
struct assertion_cache;
struct assertion_cache *assertion_cache_new(void);
void assertion_cache_free(struct assertion_cache *c);

struct assertion_cache_stats {
    uint64_t hits, misses, signed_, failures;
};
void assertion_cache_stats(const struct assertion_cache *c, struct assertion_cache_stats *out);

/*
 * The header line "<cfg->header>: <jws>\r\n" for `in`: from the cache when
 * the entry for (caller token fingerprint, step, header values) is still
 * more than the refresh margin away from its exp, else built, signed and
 * stored. Returns the line (borrowed, valid until the next call on `c`) with
 * *len, or NULL with err when signing failed (the request must then not be
 * forwarded).
 */
const char *assertion_cache_line(struct assertion_cache *c, const struct assertion_signer *s,
                                 const struct assertion_input *in, size_t *len, char *err,
                                 size_t errlen);

/* Seconds before exp at which a cached assertion is signed again:
 * lifetime_s / 10, clamped to 5..60. */
unsigned assertion_refresh_margin_s(unsigned lifetime_s);

#endif
