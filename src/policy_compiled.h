/*
 * policy_compiled.h: the compiled form of a step policy, private to
 * policy_load.c (which builds it) and policy_match.c (which reads it on the
 * request path and for explain). Nothing else includes it.
 */
#ifndef BATON_POLICY_COMPILED_H
#define BATON_POLICY_COMPILED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "policy.h"

/* ---------------------------------------------------------------- compiled */

enum pat_type { PT_STR, PT_GLOB, PT_INT, PT_REAL, PT_BOOL, PT_OBJ, PT_ANY };

struct pat_member;

/* One claims pattern value. */
struct pat {
    enum pat_type type;
    int line, col; /* of this value in the policy file */
    union {
        struct {
            char *s; /* owned */
            size_t len;
        } str; /* PT_STR, PT_GLOB */
        json_int_t i;
        double d;
        bool b;
        struct {
            struct pat_member *m; /* owned */
            size_t n;
        } obj;
        struct {
            struct pat *v; /* owned */
            size_t n;
        } any;
    } u;
};

struct pat_member {
    char *key; /* owned */
    struct pat value;
};

struct caller {
    char *issuer;      /* owned config issuer name */
    struct pat claims; /* PT_OBJ */
    char **scopes;     /* owned */
    size_t n_scopes;
    int line, col;
    int scopes_line, scopes_col;
    /* signed URLs: SIGNED_NONE (a token caller, the fields above), else an
     * entry {"signed_url": true | {"minted_by": {"issuer", "claims"}}} */
    int signed_url;
    char *minted_issuer;      /* owned; SIGNED_MINTED_BY */
    struct pat minted_claims; /* PT_OBJ; SIGNED_MINTED_BY */
};

enum { SIGNED_NONE, SIGNED_ANY, SIGNED_MINTED_BY };

enum seg_kind { SEG_LIT, SEG_STAR, SEG_DSTAR };

struct seg {
    enum seg_kind kind;
    const char *s; /* slice of the owning path_pat's text */
    size_t len;
};

struct path_pat {
    char *text;       /* owned */
    struct seg *segs; /* owned */
    size_t n;
};

struct rule {
    char **methods; /* owned */
    size_t n_methods;
    struct path_pat *paths; /* owned */
    size_t n_paths;
    int line, col;
};

struct req_header {
    char *name; /* owned, as written */
    char *glob; /* owned */
    size_t glob_len;
    int line, col;
};

struct policy {
    char *file; /* owned */
    char hash[65];
    char *step;
    char *description; /* owned, "" when absent */
    bool dry_run;
    char *host; /* owned, lower case, or "*" */
    size_t host_len;
    bool host_any;
    char *prefix; /* owned */
    size_t prefix_len;
    const struct cfg_upstream *upstream; /* borrowed from the config */
    char *service_account;               /* owned or NULL */
    struct policy_limits limits;
    struct caller *callers;
    size_t n_callers;
    struct rule *rules;
    size_t n_rules;
    struct req_header *headers;
    size_t n_headers;
    /* positions for cross-file errors */
    int step_line, step_col, route_line, route_col;
    struct sign_grant *grants; /* "sign" (signed URLs this step lets callers mint) */
    size_t n_grants;
};

struct route_slot {
    uint64_t hash;
    const struct policy *p; /* NULL: empty slot */
};

struct policy_set {
    struct policy **v; /* owned, route precedence order */
    size_t n;
    struct route_slot *table; /* owned, power-of-two size */
    size_t mask;
    size_t max_prefix; /* longest path_prefix, bytes */
    bool has_exact;    /* some policy names an exact host */
};

/* One "sign" entry: who may mint links for which methods and paths. */
struct sign_grant {
    struct caller *callers; /* owned; token callers only */
    size_t n_callers;
    struct rule rule; /* methods and paths, as an allow rule */
    unsigned max_ttl_s;
    int line, col;
};

/* policy_match.c: the route table's hash of (lower-case host, prefix). */
uint64_t policy_route_hash(const char *host, size_t hn, const char *prefix, size_t pn);

#endif
