/*
 * reason.h: every outcome of a request, as one typed enum with a stable
 * machine-readable code and the HTTP status it maps to.
 *
 * This is the one place where an outcome becomes a status (haproxy's
 * `enum jwt_vrfy_status` is the model). The codes are part of the audit
 * contract: reviewers and alerting rules match on them, so a code, once
 * shipped, is never renamed; new outcomes get new codes.
 */
#ifndef BATON_REASON_H
#define BATON_REASON_H

enum decision {
    DECISION_ALLOW,
    DECISION_DENY,
    DECISION_WOULD_DENY, /* dry_run: a deny recorded, the request goes on */
    DECISION_ERROR,      /* baton or the upstream failed, not the caller */
};

#define REASONS(X)                                                                     \
    /* allowed */                                                                      \
    X(ALLOWED, "allowed", 200)                                                         \
    /* guard (step 1): framing and limits */                                           \
    X(BAD_REQUEST, "bad_request", 400)                                                 \
    X(BAD_FRAMING, "bad_framing", 400)                                                 \
    X(BAD_HEADER, "bad_header", 400)                                                   \
    X(BAD_HOST, "bad_host", 400)                                                       \
    X(DUPLICATE_AUTHORIZATION, "duplicate_authorization", 400)                         \
    X(HEADERS_TOO_LARGE, "headers_too_large", 431)                                     \
    X(URI_TOO_LONG, "uri_too_long", 414)                                               \
    X(BODY_TOO_LARGE, "body_too_large", 413)                                           \
    X(HEADER_TIMEOUT, "header_timeout", 408)                                           \
    X(METHOD_NOT_IMPLEMENTED, "method_not_implemented", 501)                           \
    X(VERSION_NOT_SUPPORTED, "version_not_supported", 505)                             \
    X(BAD_TARGET, "bad_target", 400) /* http1: CTL, SP, '#', non-ASCII, form */        \
    /* route (step 2): canonical path, then route table */                             \
    X(PATH_NOT_ORIGIN_FORM, "path_not_origin_form", 400)                               \
    X(PATH_ENCODED_SLASH, "path_encoded_slash", 400)                                   \
    X(PATH_ENCODED_BACKSLASH, "path_encoded_backslash", 400)                           \
    X(PATH_ENCODED_DOT, "path_encoded_dot", 400)                                       \
    X(PATH_DOT_SEGMENT, "path_dot_segment", 400)                                       \
    X(PATH_EMPTY_SEGMENT, "path_empty_segment", 400)                                   \
    X(PATH_BACKSLASH, "path_backslash", 400)                                           \
    X(PATH_CONTROL, "path_control_byte", 400)                                          \
    X(PATH_NON_ASCII, "path_non_ascii", 400)                                           \
    X(PATH_BAD_PERCENT, "path_bad_percent", 400)                                       \
    X(PATH_SEMICOLON, "path_semicolon", 400)                                           \
    X(PATH_FRAGMENT, "path_fragment", 400)                                             \
    X(PATH_BAD_CHAR, "path_bad_char", 400)                                             \
    X(PATH_BAD_QUERY, "path_bad_query", 400)                                           \
    X(PATH_NONCANONICAL_ESCAPE, "path_noncanonical_escape", 400)                       \
    X(PATH_TOO_LONG, "path_too_long", 414)                                             \
    X(NO_ROUTE, "no_route", 404)                                                       \
    /* authenticate (step 3): 401 to the caller, the code to the audit */              \
    X(TOKEN_MISSING, "token_missing", 401)                                             \
    X(TOKEN_MALFORMED, "token_malformed", 401)                                         \
    X(TOKEN_TOO_LARGE, "token_too_large", 401)                                         \
    X(TOKEN_BAD_ENCODING, "token_bad_encoding", 401)                                   \
    X(TOKEN_BAD_JSON, "token_bad_json", 401)                                           \
    X(ALG_NONE, "alg_none", 401)                                                       \
    X(ALG_NOT_ALLOWED, "alg_not_allowed", 401)                                         \
    X(ALG_KEY_MISMATCH, "alg_key_mismatch", 401)                                       \
    X(CRIT_UNSUPPORTED, "crit_unsupported", 401)                                       \
    X(EMBEDDED_KEY, "embedded_key_rejected", 401)                                      \
    X(ISSUER_MISSING, "issuer_missing", 401)                                           \
    X(UNKNOWN_ISSUER, "unknown_issuer", 401)                                           \
    X(KID_MISSING, "kid_missing", 401)                                                 \
    X(UNKNOWN_KID, "unknown_kid", 401)                                                 \
    X(KEYS_UNAVAILABLE, "keys_unavailable", 503) /* ours: retryable */                 \
    X(BAD_SIGNATURE, "bad_signature", 401)                                             \
    X(EXP_MISSING, "exp_missing", 401)                                                 \
    X(EXPIRED, "expired", 401)                                                         \
    X(NOT_YET_VALID, "not_yet_valid", 401)                                             \
    X(IAT_IN_FUTURE, "iat_in_future", 401)                                             \
    X(BAD_CLAIM_TYPE, "bad_claim_type", 401)                                           \
    X(AUDIENCE_MISMATCH, "audience_mismatch", 401)                                     \
    X(TYP_NOT_ALLOWED, "typ_not_allowed", 401)                                         \
    X(TOKEN_USE_MISMATCH, "token_use_mismatch", 401)                                   \
    /* authorize (step 4) */                                                           \
    X(NO_CALLER_MATCH, "no_caller_match", 403)                                         \
    X(NO_RULE_MATCH, "no_rule_match", 403)                                             \
    X(HEADER_MISMATCH, "header_mismatch", 403)                                         \
    X(SCOPE_MISSING, "scope_missing", 403)                                             \
    X(RATE_LIMITED, "rate_limited", 429)                                               \
    /* mint (step 5) and audit */                                                      \
    X(IDENTITY_UNAVAILABLE, "identity_unavailable", 503)                               \
    X(IDENTITY_PERMISSION_DENIED, "identity_permission_denied", 503)                   \
    X(IDENTITY_UNKNOWN_ACCOUNT, "identity_unknown_account", 503)                       \
    X(AUDIT_UNAVAILABLE, "audit_unavailable", 503)                                     \
    X(OVERLOADED, "overloaded", 503)                                                   \
    /* forward (step 6) */                                                             \
    X(UPSTREAM_ERROR, "upstream_error", 502)                                           \
    X(UPSTREAM_TIMEOUT, "upstream_timeout", 504)                                       \
    X(CLIENT_CLOSED, "client_closed", 499)                                             \
    X(DRAIN_ABORTED, "drain_aborted", 503) /* in flight at the drain deadline */       \
    X(INTERNAL, "internal_error", 500)                                                 \
    X(BODY_TIMEOUT, "body_timeout", 408) /* the request body missed its deadline */    \
    /* signed URLs (step 3, authenticate): 401 to the caller, the code to the audit */ \
    X(URL_EXPIRED, "url_expired", 401)                                                 \
    X(URL_BAD_SIGNATURE, "url_bad_signature", 401)                                     \
    X(URL_UNKNOWN_KEY, "url_unknown_key", 401)                                         \
    X(URL_SCOPE_MISMATCH, "url_scope_mismatch", 401)                                   \
    X(URL_USED, "url_used", 401)                                                       \
    /* shared limits (authorize, step 4) */                                            \
    X(RATE_UNAVAILABLE, "rate_unavailable", 429) /* global rate, Redis down, deny */   \
    X(TOO_MANY_IN_FLIGHT, "too_many_in_flight", 429)                                   \
    /* caller assertion (step 6): signing failed, nothing forwarded */                 \
    X(ASSERTION_UNAVAILABLE, "assertion_unavailable", 503)                             \
    /* forward (step 6): the upstream's name has no address yet */                     \
    X(UPSTREAM_UNRESOLVED, "upstream_unresolved", 502)

enum reason {
#define REASON_ENUM(name, code, status) REASON_##name,
    REASONS(REASON_ENUM)
#undef REASON_ENUM
        REASON__COUNT
};

/* The stable code ("no_route") and the HTTP status (404) of a reason. */
const char *reason_code(enum reason r);
int reason_status(enum reason r);
/* The reason whose code is `code`, or -1. */
int reason_from_code(const char *code);
const char *decision_name(enum decision d);

/*
 * The Retry-After (seconds) baton sends with `r`, or 0 for none. Non-zero
 * exactly for the failures that are ours (an outage, keys or a token not yet
 * obtained, the audit log, overload, a drain) and for the rate limit (whose
 * value the token bucket computes): a caller's retry can succeed there, and a
 * 401 or 403 would make it give up (docs/spec.md "One request, in order").
 */
unsigned reason_retry_after_s(enum reason r);

#endif
