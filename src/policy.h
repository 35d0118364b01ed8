/*
 * policy.h: step policies (docs/spec.md "Step policy"): load, route, authorize.
 *
 * Every `*.json` file of the config's policy directory is one workflow step:
 * which route it owns, which callers may call it, which methods and paths, and
 * which headers must be present. Files are loaded as strictly as the main
 * config (unknown keys, wrong types, out-of-range values, duplicate keys,
 * names of issuers or upstreams the config does not define, bad patterns: all
 * errors, each at file:line:column) and compiled once into immutable
 * structures, so that the request path only compares bytes: it never parses,
 * allocates or locks. A set is replaced whole on reload.
 *
 * Routing (policy_route): the request's host and canonical path select at most
 * one policy. An exact host (compared ASCII case-insensitively; the caller
 * strips the port) is tried before "*"; within a host, the longest matching
 * path_prefix wins. A prefix matches on segment boundaries: "/billing" matches
 * "/billing", "/billing/" and "/billing/x" but not "/billingx"; "/billing/"
 * matches "/billing/" and "/billing/x" but not "/billing". Two policies with
 * the same host and path_prefix are a load error naming both files.
 *
 * Authorization (policy_authorize), default deny at every level, in order:
 *   1. callers: some entry whose "issuer" is the issuer that verified the
 *      token and whose "claims" pattern matches the token's claims
 *      (else NO_CALLER_MATCH), and, when the entry lists "scopes" (extension),
 *      each of them is in the token's space-separated `scope` claim or in its
 *      `scp` claim (an array of strings, or a space-separated string) (else
 *      SCOPE_MISSING, when some entry matched everything but its scopes).
 *      The first entry that matches wins.
 *   2. allow: some rule whose "methods" contains the method (exact, upper
 *      case) and one of whose "paths" matches the canonical path (else
 *      NO_RULE_MATCH).
 *   3. require_headers: every named header is present exactly once (a header
 *      sent twice never matches) with a value matching its glob (else
 *      HEADER_MISMATCH).
 * Claims patterns: an object matches an object claim whose members match each
 * of its members (other members of the claim are ignored); a string matches a
 * string claim exactly, or as a glob when it contains "*" (any run of
 * characters, including none, ":" and "/"; there is no escape); an integer,
 * real or boolean matches a claim of the same JSON type and value; an array
 * matches when any of its elements does. A pattern on an absent claim, or on a
 * claim of another JSON type (an array claim against a string pattern, "5"
 * against 5), never matches. A `null` pattern, an empty object or empty array
 * is a load error.
 * Path patterns: segments separated by "/"; a segment "*" matches exactly one
 * non-empty segment, a segment "**" matches zero or more segments (so the
 * pattern "/billing/" "**" (written as one string) matches "/billing",
 * "/billing/" and "/billing/a/b", as Spring's AntPathMatcher does); any other
 * segment matches itself byte for byte. "*" inside a segment ("/run-*") is a
 * load error. Literal parts obey path.h's rules (a pattern that could never
 * match a canonical path is a load error).
 * dry_run: policy_authorize still returns the deny reason; the caller (server,
 * explain) turns a deny of a dry_run policy into the decision would_deny.
 *
 * Signed URLs (signurl.h; extension): a callers entry {"signed_url": true}
 * accepts any valid link for this step; {"signed_url": {"minted_by":
 * {"issuer": NAME, "claims": {...}}}} accepts links minted through the sign
 * endpoint by a caller of that issuer (the link's minter id names it). A
 * token never matches a signed_url entry and a link never matches a token
 * entry; allow rules and required headers apply to both alike. "sign":
 * [{"callers": [...token callers...], "methods": [...], "paths": [...allow
 * patterns...], "max_ttl_s": 1..604800}] says who may mint links for this
 * step (policy_sign_check); minted_by's claims are matched then, at mint time.
 *
 * Lifetime: a set borrows the config it was loaded against (upstream and
 * issuer pointers): free the set before the config.
 */
#ifndef BATON_POLICY_H
#define BATON_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "diag.h"
#include "reason.h"

struct policy_set;
struct policy;

/* Caps on what a policy file may hold. */
#define POLICY_MAX_FILE_BYTES (1u << 20)
#define POLICY_MAX_DEPTH 32     /* JSON nesting of a policy file */
#define POLICY_MAX_PREFIX 512   /* bytes of route.path_prefix */
#define POLICY_MAX_PATTERN 1024 /* bytes of one glob or path pattern */
#define POLICY_MAX_ENTRIES 1024 /* callers, allow rules, methods, paths, headers, scopes each */
#define POLICY_MAX_RATE 1000000 /* limits.rate_per_s */

/* limits.rate_scope: one bucket per baton instance, or one for the step
 * across every baton sharing the config's Redis (README "Shared limits"). */
enum policy_rate_scope { POLICY_RATE_INSTANCE, POLICY_RATE_GLOBAL };

/* The step's limits; 0 = unset (the config's or upstream's value applies).
 * Ranges and defaults: policy_load.c's limits_fields, written once. */
struct policy_limits {
    uint64_t max_body_bytes;
    unsigned timeout_ms;
    double rate_per_s;                 /* any number > 0 and <= 1000000 (0.0002: one per 5000 s);
                                0: no rate limit */
    unsigned burst;                    /* unset: rate_per_s rounded up (at least 1) */
    enum policy_rate_scope rate_scope; /* "global" needs rate_per_s and redis */
    unsigned max_in_flight;            /* requests at once per instance; 0: no cap */
};

/* One source for policy_set_build: a file name (for messages) and its bytes. */
struct policy_source {
    const char *file; /* borrowed */
    const char *text; /* borrowed; need not be NUL-terminated */
    size_t len;
};

/*
 * Loads every `*.json` (not starting with ".") of cfg->policies, in name
 * order. Returns an owned set, or NULL with every error of every file added to
 * `d` (an unreadable directory, no policy at all, a file over
 * POLICY_MAX_FILE_BYTES included). `cfg` is borrowed and must outlive the set.
 */
struct policy_set *policy_set_load(const struct baton_config *cfg, struct diags *d);

/* The same from sources in memory (tests, fuzzing). Zero sources give an empty
 * set (everything is no_route). Sources are copied; nothing is kept borrowed
 * but `cfg`. */
struct policy_set *policy_set_build(const struct baton_config *cfg, const struct policy_source *src,
                                    size_t n, struct diags *d);
void policy_set_free(struct policy_set *set);

/* Policies in route precedence order: exact hosts (by name, longest prefix
 * first), then "*" (longest prefix first). Borrowed, valid while the set is. */
size_t policy_set_count(const struct policy_set *set);
const struct policy *policy_set_at(const struct policy_set *set, size_t i);

/*
 * The policy routing (host, canonical path), or NULL: no route. `host` is the
 * request's host without port (may be NULL/0: only "*" routes apply).
 * Allocation-free; thread-safe on a shared set.
 */
const struct policy *policy_route(const struct policy_set *set, const char *host, size_t host_len,
                                  const char *path, size_t path_len);

struct policy_input {
    const char *method; /* NUL-terminated, as received */
    const char *path;   /* canonical path (path_canonicalize), no query */
    size_t path_len;
    const char *issuer_name; /* config name of the issuer that verified the token */
    const json_t *claims;    /* the verified claims (an object); borrowed */
    /* Looks a header up by name (case-insensitively): returns how many times it
     * is present, and when > 0 sets the first value (borrowed, OWS trimmed). */
    int (*header)(void *ctx, const char *name, const char **value, size_t *len);
    void *header_ctx;
};

#define POLICY_MISS_NAME 160
#define POLICY_MISS_DETAIL 320

/*
 * What explain (and an audit record that wants it) needs to show a decision.
 * Indices are 0-based positions in the policy's arrays; lines and columns
 * point into policy_file(). On allow, caller_* and rule_* name the matched
 * entry and rule. On deny, they name the closest miss where there is one, and
 * miss_* say what differed and how:
 *   miss_kind  "issuer" | "claim" | "scope" | "method" | "path" | "rule" | "header"
 *   miss_name  the claim (e.g. `"https://sts.amazonaws.com/".aws_account`),
 *              the scope, the header name, or "" when not applicable
 *   miss_detail one line, e.g. `expected "123456789012", got "210987654321"`.
 * Header values are never copied into a trace.
 */
struct policy_trace {
    enum reason reason;
    int caller_index, caller_line, caller_col; /* -1 / 0 when none */
    int rule_index, rule_line, rule_col;       /* -1 / 0 when none */
    int pattern_index;                         /* path pattern of the rule, -1 */
    int miss_line, miss_col;                   /* the pattern that missed, 0 when none */
    const char *miss_kind;                     /* static string, NULL on allow */
    char miss_name[POLICY_MISS_NAME];
    char miss_detail[POLICY_MISS_DETAIL];
};

/*
 * Decides `in` against policy `p`: REASON_ALLOWED, NO_CALLER_MATCH,
 * SCOPE_MISSING, NO_RULE_MATCH or HEADER_MISMATCH. With `trace` (may be NULL,
 * as on the request path) it also records why. Allocation-free either way;
 * thread-safe on a shared policy.
 */
enum reason policy_authorize(const struct policy *p, const struct policy_input *in,
                             struct policy_trace *trace);

/* Accessors; strings are borrowed, valid while the set is. */
const char *policy_step(const struct policy *p);
const char *policy_description(const struct policy *p); /* "" when absent */
const char *policy_file(const struct policy *p);        /* the path it was loaded from */
const char *policy_hash_hex(const struct policy *p);    /* SHA-256 of the file bytes, 64 hex */
const char *policy_host(const struct policy *p);        /* lower case, or "*" */
const char *policy_path_prefix(const struct policy *p);
const struct cfg_upstream *policy_upstream(const struct policy *p);
const char *policy_service_account(const struct policy *p); /* NULL when absent */
bool policy_dry_run(const struct policy *p);
const struct policy_limits *policy_limits(const struct policy *p);
size_t policy_caller_count(const struct policy *p);
size_t policy_rule_count(const struct policy *p);
/* The issuer name of callers[i], and the text of allow[rule].paths[pattern];
 * NULL when out of range. */
const char *policy_caller_issuer(const struct policy *p, size_t i);
const char *policy_rule_path(const struct policy *p, size_t rule, size_t pattern);
/* The names require_headers reads, i = 0.. until NULL (borrowed from the policy). */
const char *policy_header_name(const struct policy *p, size_t i);

/*
 * May the caller (verified by issuer `issuer_name`, with `claims`) mint a link
 * for `method` on canonical `path` living `ttl_s` seconds? REASON_ALLOWED when
 * some "sign" entry lists the caller, the method and a matching path with
 * max_ttl_s >= ttl_s AND some signed_url callers entry would accept the link
 * (true, or minted_by matching the caller); else NO_CALLER_MATCH (no entry
 * for this caller, or no signed_url entry takes its links), NO_RULE_MATCH
 * (method or path not granted) or BAD_REQUEST (ttl_s over the cap).
 */
/* policy_authorize for a request whose signed URL verified (`in`'s issuer
 * and claims NULL): the callers step looks at signed_url entries only, with
 * the link's baton_minter `minter`. */
enum reason policy_authorize_link(const struct policy *p, const struct policy_input *in,
                                  const char *minter, struct policy_trace *trace);

enum reason policy_sign_check(const struct policy *p, const char *issuer_name, const json_t *claims,
                              const char *method, const char *path, size_t path_len,
                              unsigned ttl_s);
size_t policy_sign_count(const struct policy *p);        /* "sign" entries */
bool policy_accepts_signed_urls(const struct policy *p); /* some signed_url callers entry */
/* require_headers, in file order: how many, and entry i's name as written
 * (NULL out of range). policy_header_matched: whether entry i matches `in`
 * (present exactly once, value matching its glob), with *value / *len set to
 * the value (borrowed from in's header source) when it does. */
size_t policy_header_count(const struct policy *p);
const char *policy_header_name(const struct policy *p, size_t i);
bool policy_header_matched(const struct policy *p, size_t i, const struct policy_input *in,
                           const char **value, size_t *len);

/* Whether s (sn bytes) matches glob p (pn bytes): "*" any run of bytes,
 * including none, every other byte itself (claims and header values). */
bool policy_glob_match(const char *p, size_t pn, const char *s, size_t sn);

/* Every key table of a step policy with the JSON path prefix README's
 * "Policy keys" table gives its keys (jload.h); static. */
struct jload_table;
const struct jload_table *policy_tables(size_t *n);

#endif
