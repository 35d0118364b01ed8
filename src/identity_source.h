/*
 * identity_source.h: the interface between the token cache (identity.h) and
 * the credential sources that mint its tokens (google.h builds the real ones;
 * tests build fakes): one mint's outcome, why a mint failed, and the source's
 * callbacks.
 *
 * It sits below both. identity.c depends on google (identity_new builds the
 * Google source from the config) and google depends only on this header, so
 * a credential source, and the audit witness that asks one for baton's
 * access token, never see the cache.
 */
#ifndef BATON_IDENTITY_SOURCE_H
#define BATON_IDENTITY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

/* Why a mint failed; the metrics label is identity_failure_name() (identity.h). */
enum identity_failure {
    IDENTITY_FAIL_CONNECT, /* endpoint unreachable */
    IDENTITY_FAIL_TIMEOUT, /* no answer within google.timeout_ms */
    IDENTITY_FAIL_TOO_BIG, /* response over its cap */
    IDENTITY_FAIL_TLS,
    IDENTITY_FAIL_HTTP_5XX,
    IDENTITY_FAIL_PERMISSION,  /* 401/403: a missing IAM binding */
    IDENTITY_FAIL_NOT_FOUND,   /* 404: unknown service account */
    IDENTITY_FAIL_HTTP,        /* any other unexpected status */
    IDENTITY_FAIL_MALFORMED,   /* response not as Google answers (JSON, JWT, header) */
    IDENTITY_FAIL_EXPIRED,     /* token already expired or within the margin */
    IDENTITY_FAIL_CREDENTIALS, /* local key / assertion signing failed */
    IDENTITY_FAIL_INTERNAL,
    IDENTITY_FAIL__COUNT
};

/* The outcome of one mint, passed to the done callback (all fields borrowed for the call). */
struct identity_mint_result {
    bool ok;
    const char *token; /* ok: the compact JWT */
    size_t token_len;
    enum identity_failure failure; /* !ok */
    int http_status;               /* 0 when no HTTP answer */
    const char *detail;            /* !ok: human text with the fix, never a token */
};

typedef void (*identity_mint_done)(void *arg, const struct identity_mint_result *res);

struct identity_source {
    void *ctx; /* owned by the identity once passed to identity_new_source */
    /* Mints an ID token on the background thread; `done` runs exactly once,
     * on the background thread, possibly before mint returns. */
    void (*mint)(void *ctx, const char *service_account_or_NULL, const char *audience,
                 identity_mint_done done, void *arg);
    char *(*jwks_json)(void *ctx); /* owned text or NULL; NULL pointer: none */
    void (*free)(void *ctx);
};

#endif
