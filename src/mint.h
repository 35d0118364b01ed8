/*
 * mint.h: the JWTs baton itself signs, and the keys it signs them with.
 *
 * Two kinds, both RS256 and built with libjwt (the one place baton uses it:
 * docs/design.md found libjwt unsound for verifying but fine for signing):
 *  - the service-account assertion exchanged at Google's OAuth token endpoint
 *    (RFC 7523 JWT bearer grant) for an ID token (`target_audience`) or an
 *    access token (`scope`);
 *  - the ID tokens of `local` credentials, verifiable by anyone holding the
 *    public JWK set (mint_key_jwks_json), served at /.well-known/jwks.json.
 * Signing happens on the background thread only, a few times an hour, so
 * libjwt re-parsing the PEM on every call costs nothing that matters.
 */
#ifndef BATON_MINT_H
#define BATON_MINT_H

#include <stddef.h>
#include <stdint.h>

/* An RSA private key (>= 2048 bits), immutable once built. */
struct mint_key;

/*
 * Parses a PEM private key (PKCS#8 or PKCS#1, RSA only). `kid` is copied; NULL
 * uses the RFC 7638 thumbprint of the public key. Returns an owned key, or
 * NULL with a message in err (never quoting key material).
 */
struct mint_key *mint_key_from_pem(const char *pem, size_t len, const char *kid, char *err,
                                   size_t errlen);
/* Generates a fresh 2048-bit RSA key whose kid is its thumbprint. */
struct mint_key *mint_key_generate(char *err, size_t errlen);
void mint_key_free(struct mint_key *k);
/* Borrowed, valid while k lives. */
const char *mint_key_kid(const struct mint_key *k);
/* Owned JSON text {"keys":[{"kty":"RSA","kid","use":"sig","alg":"RS256","n","e"}]}. */
char *mint_key_jwks_json(const struct mint_key *k);

/*
 * Service-account assertion: header {alg RS256, typ JWT, kid}, claims
 * {iss: client_email, aud: token_uri, iat, exp: iat + 3600} plus
 * target_audience (ID token) or scope (access token): exactly one of the two
 * must be non-NULL. Returns an owned compact JWT or NULL with err.
 */
char *mint_sa_assertion(const struct mint_key *k, const char *client_email, const char *token_uri,
                        const char *target_audience, const char *scope, int64_t iat, char *err,
                        size_t errlen);

/*
 * A local ID token: header {alg RS256, typ JWT, kid}, claims {iss, aud, sub,
 * email, email_verified: true, iat, exp}. Returns an owned compact JWT or NULL.
 */
char *mint_local_id_token(const struct mint_key *k, const char *iss, const char *aud,
                          const char *email, int64_t iat, int64_t exp, char *err, size_t errlen);

#endif
