#ifndef BATON_REDACT_H
#define BATON_REDACT_H
/*
 * redact.h: what baton never writes down whole. The audit record and the
 * access log share these tests, so a value one of them hides the other
 * never shows.
 */
#include <stdbool.h>
#include <stddef.h>

/*
 * True when a value carries a credential whatever its name: an HTTP
 * authentication scheme ("Bearer ...", "Basic ...", ...), anything shaped like
 * a JWS/JWT ("eyJ" base64url then '.'), a Google OAuth access token
 * ("ya29."), a GitHub token ("ghp_", "gho_", "ghu_", "ghs_", "ghr_",
 * "github_pat_") or an AWS access key id ("AKIA"/"ASIA" and 16 more).
 */
bool redact_is_credential(const char *v, size_t n);

/*
 * A query string (without '?') with the value of every parameter whose
 * (form-decoded) name looks secret, or whose value is a credential by
 * redact_is_credential, replaced by "[redacted]". Returns a NUL-terminated
 * copy (owned by the caller: free it) and its length in *len.
 */
char *redact_query(const char *q, size_t n, size_t *len);

#endif
