/*
 * google.h: where baton's Google ID tokens come from (`google.credentials`).
 *
 * Each credential source is an `identity_source` (identity_source.h) whose mint
 * callback produces one ID token for (service account or baton's own
 * identity, audience), asynchronously on the background event_base, through
 * http_client only:
 *  - metadata: the metadata server's identity endpoint (format=full), and its
 *    token endpoint for baton's own access token (impersonation);
 *  - service_account_key: an RS256 assertion (mint.h) exchanged at the key
 *    file's token_uri for an id_token, or for an access token (scope
 *    cloud-platform) used to impersonate;
 *  - impersonation, for a step's service_account with either of the two:
 *    IAM Credentials generateIdToken with baton's own access token;
 *  - local: baton signs the ID token itself (mint.h) and publishes the key.
 * Failures carry the fix a platform engineer needs (which IAM binding is
 * missing on which account for which identity), never a token.
 */
#ifndef BATON_GOOGLE_H
#define BATON_GOOGLE_H

#include <stdbool.h>
#include <stddef.h>

#include "identity_source.h"

struct event_base;
struct http_client;
struct cfg_google;

/* Request caps (bytes) and the OAuth scope used for impersonation. */
#define GOOGLE_MAX_TOKEN_BODY 16384 /* metadata identity: the raw JWT */
#define GOOGLE_MAX_JSON_BODY 65536  /* token endpoint, IAM Credentials */
#define GOOGLE_MAX_KEY_FILE 65536
#define GOOGLE_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define GOOGLE_DEFAULT_METADATA_HOST "metadata.google.internal"
#define GOOGLE_DEFAULT_IAM_URL "https://iamcredentials.googleapis.com"
#define GOOGLE_LOCAL_IDENTITY "baton@local"

/*
 * Builds the source of cfg (borrowed for the call; what is kept is copied):
 * loads and checks the service-account key file or the local key now, so a
 * bad file fails at startup. bg and http are borrowed and must outlive the
 * source. Returns 0 and fills *out (whose ctx the identity then owns), or -1
 * with a message in err.
 */
int google_source_new(struct event_base *bg, struct http_client *http, const struct cfg_google *cfg,
                      struct identity_source *out, char *err, size_t errlen);

/*
 * Checks a service-account key file as google_source_new does: a regular
 * file, no group or other permission bits, at most GOOGLE_MAX_KEY_FILE bytes,
 * JSON with type "service_account" and non-empty client_email, private_key
 * (an RSA PEM of at least 2048 bits), private_key_id and token_uri. 0, or -1
 * with the first problem in err (never quoting the key).
 */
int google_sa_key_validate(const char *path, char *err, size_t errlen);

/*
 * baton's own OAuth access token (scope cloud-platform), for the calls baton
 * makes as itself (the audit witness's Cloud Storage uploads). `ctx` is the
 * ctx of a source google_source_new built (not yet handed to an identity).
 * `done` runs once on the source's base, possibly before this returns, with
 * res->token the access token (not a JWT; borrowed for the call) or a failure.
 * The token is cached as for impersonation; "local" credentials fail.
 */
void google_source_access_token(void *ctx, identity_mint_done done, void *arg);
/* Forgets the cached access token (a call using it got 401). */
void google_source_access_token_drop(void *ctx);

/*
 * True when the metadata server is expected to answer: credentials
 * "metadata" and either Cloud Run (K_SERVICE set), $GCE_METADATA_HOST, or a
 * configured google.metadata_host.
 */
bool google_metadata_expected(const struct cfg_google *cfg);
/*
 * The instance id from the metadata server (/computeMetadata/v1/instance/id),
 * fetched synchronously within timeout_ms: for startup only (the audit open
 * record), never the request path. Owned, or NULL with the reason in err.
 */
char *google_metadata_instance_id(const struct cfg_google *cfg, unsigned timeout_ms, char *err,
                                  size_t errlen);

/* Exposed for tests. */

/* application/x-www-form-urlencoded / query encoding of s; owned. */
char *google_form_encode(const char *s);
/* True when s may be placed in an IAM Credentials path as an account email. */
bool google_email_ok(const char *s);
/* The failure kind of an unexpected HTTP status. */
enum identity_failure google_status_failure(int status);
/*
 * The message for a failed generateIdToken: the status, Google's own
 * error.status/error.message from `body` when present, and the fix (the
 * roles/iam.serviceAccountOpenIdTokenCreator binding on `target` for `own`,
 * the gcloud command; or the unknown account). Owned.
 */
char *google_impersonation_detail(int status, const char *body, size_t len, const char *target,
                                  const char *own);

#endif
