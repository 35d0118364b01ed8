/*
 * config.c: loads the main configuration (docs/spec.md "Main config") strictly.
 *
 * The generic loader (path stack, positions, error list, front end, table
 * walker) is jload.c; this file holds baton's tables and the checks between
 * keys. The file is read whole (CONFIG_MAX_BYTES), scanned by jsonpos for nesting
 * depth and repeated member names, parsed by jansson with
 * JSON_REJECT_DUPLICATES, and walked against one table per object: each row
 * names a key, its type, its range or choices, its default and where it is
 * stored. Anything the tables do not name is an error, and so is every
 * cross-reference that does not hold. Every error carries file:line:column,
 * found by asking jsonpos where the JSON path of the offending key or value
 * lies in the text; errors are reported all at once (up to
 * CONFIG_MAX_ERRORS), sorted by position.
 *
 * Keys: the tables below ("tables"), one row per key with its type, its
 * range or choices and its default, each written there once; README's "Main
 * configuration" table documents them and tests/unit/test_config.c holds it
 * to these tables.
 *
 * Other rules: plain http (jwks_uri, discovery issuer, Google endpoints) goes
 * to a loopback host only, and for an issuer only with allow_http; an
 * upstream with identity "google" over plain http must be loopback (the ID
 * token would otherwise travel in clear); an upstream with identity "none"
 * takes no audience or token_header; token_use "access" needs audience_claim
 * "client_id" and "id" needs "aud" (Cognito's shapes); google keys that only
 * one credential source reads are refused with the others; admin_listen may
 * not take listen's port on the same or a wildcard address. Paths (jwks_file,
 * service_account_key, local_key, policies, audit.path, signing_key) resolve
 * against the config file's directory; config never opens them (the module
 * that reads each reports its own failure), so `baton check` can validate a
 * config whose secrets are mounted only at run time.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "http1.h"
#include "jload.h"
#include "jsonpos.h"
#include "log.h"
#include "path.h"
#include "util.h"

#define MAX_ISSUERS 64
#define MAX_UPSTREAMS 1024
#define MAX_PROXIES 256
#define MAX_LIST 64 /* audiences, record_headers */
#define MAX_TOKEN_TYPES 16
#define MAX_NAME 64

_Static_assert(CONFIG_MAX_ERRORS == JLOAD_MAX_ERRORS, "the config reports what jload caps");

/* ------------------------------------------------------------------ */
/* small validators                                                    */

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_NAME)
        return false;
    for (size_t k = 0; k < n; k++) {
        char ch = s[k];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9');
        if (!alnum && (k == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
}

static int parse_port(const char *s, size_t n)
{
    int port = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -1;
        port = port * 10 + (s[k] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/*
 * A host: "[v6]" literal, a dotted IPv4 literal, or a DNS name (letters,
 * digits, '-', '.'). On success *host is owned, lowercased, without brackets.
 */
static int parse_host(const char *s, size_t n, char **host, const char **why)
{
    char tmp[256];
    if (n == 0) {
        *why = "empty host";
        return -1;
    }
    if (s[0] == '[') {
        struct in6_addr a6;
        if (n < 3 || s[n - 1] != ']' || n - 2 >= sizeof(tmp)) {
            *why = "bad IPv6 literal";
            return -1;
        }
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1) {
            *why = "bad IPv6 literal";
            return -1;
        }
        *host = xstrdup(tmp);
        lower(*host);
        return 0;
    }
    if (n > 253) {
        *why = "host name longer than 253 bytes";
        return -1;
    }
    bool numeric = true;
    for (size_t k = 0; k < n; k++) {
        char ch = s[k];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
        if (!ok) {
            *why = "host may hold only letters, digits, '-' and '.' (IPv6 in brackets)";
            return -1;
        }
        if (!(ch >= '0' && ch <= '9') && ch != '.')
            numeric = false;
    }
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '-' || strstr(s, "..")) {
        *why = "malformed host name";
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (numeric) {
        struct in_addr a4;
        if (inet_pton(AF_INET, tmp, &a4) != 1) {
            *why = "bad IPv4 address";
            return -1;
        }
    }
    *host = xstrdup(tmp);
    lower(*host);
    return 0;
}

static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(host, "localhost"))
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

/* "host:port" / "[v6]:port" (port required unless `port_optional`). */
static int parse_hostport(const char *s, bool port_optional, char **host, int *port,
                          const char **why)
{
    const char *colon;
    size_t n = strlen(s);
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb) {
            *why = "bad IPv6 literal";
            return -1;
        }
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (!colon && rb[1] != '\0') {
            *why = "expected ':' after the IPv6 literal";
            return -1;
        }
    } else {
        colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            *why = "IPv6 addresses need brackets: [addr]:port";
            return -1;
        }
    }
    if (!colon && !port_optional) {
        *why = "expected host:port";
        return -1;
    }
    *port = 0;
    if (colon && (*port = parse_port(colon + 1, strlen(colon + 1))) < 0) {
        *why = "port must be 1..65535";
        return -1;
    }
    return parse_host(s, colon ? (size_t)(colon - s) : n, host, why);
}

struct url {
    bool tls;
    char *host; /* owned */
    int port;
    char *path; /* owned: "" or "/a/b", no trailing slash */
};

static void url_free(struct url *u)
{
    free(u->host);
    free(u->path);
    u->host = u->path = NULL;
}

static bool path_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("-._~!$&'()*+,;=:@/", ch);
}

/*
 * http(s)://host[:port][/path][?query]: no userinfo, no fragment, a query
 * only with `allow_query`, path bytes from RFC 3986 pchar with valid %XX.
 * `strict_path` also refuses empty and dot segments (an upstream's base path
 * is prepended to canonical paths, so it must itself be canonical).
 */
static int url_parse(const char *s, bool allow_query, bool strict_path, struct url *u,
                     const char **why)
{
    const char *p, *auth_end, *path_end;
    memset(u, 0, sizeof(*u));
    if (!ascii_casecmp_n(s, strlen(s) < 8 ? strlen(s) : 8, "https://", 8)) {
        u->tls = true;
        p = s + 8;
    } else if (!ascii_casecmp_n(s, strlen(s) < 7 ? strlen(s) : 7, "http://", 7)) {
        p = s + 7;
    } else {
        *why = "must start with https:// or http://";
        return -1;
    }
    auth_end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(auth_end - p))) {
        *why = "user information (user@) is not allowed";
        return -1;
    }
    {
        char *auth = xstrndup(p, (size_t)(auth_end - p));
        int port;
        int rc = parse_hostport(auth, true, &u->host, &port, why);
        free(auth);
        if (rc < 0)
            return -1;
        u->port = port ? port : (u->tls ? 443 : 80);
    }
    path_end = auth_end + strcspn(auth_end, "?#");
    for (const char *q = auth_end; q < path_end; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '%') {
            if (!(q[1] && strchr("0123456789abcdefABCDEF", q[1]) && q[2] &&
                  strchr("0123456789abcdefABCDEF", q[2]))) {
                *why = "invalid percent-encoding in the path";
                goto fail;
            }
            q += 2;
            continue;
        }
        if (!path_char(ch)) {
            *why = "path holds a character that must be percent-encoded";
            goto fail;
        }
    }
    {
        size_t n = (size_t)(path_end - auth_end);
        if (n && auth_end[n - 1] == '/') /* one trailing slash is dropped */
            n--;
        u->path = xstrndup(auth_end, n);
    }
    if (strict_path) {
        /* every segment of the base path non-empty and not "." or ".." */
        const char *q = u->path;
        while (*q) {
            const char *e;
            q++; /* the '/' */
            e = q + strcspn(q, "/");
            if (e == q || (e - q == 1 && q[0] == '.') ||
                (e - q == 2 && q[0] == '.' && q[1] == '.')) {
                *why = "path has an empty, \".\" or \"..\" segment";
                goto fail;
            }
            q = e;
        }
    }
    if (*path_end == '#') {
        *why = "a fragment (#) is not allowed";
        goto fail;
    }
    if (*path_end == '?') {
        if (!allow_query) {
            *why = "a query (?) is not allowed";
            goto fail;
        }
        for (const char *q = path_end + 1; *q; q++)
            if (*q == '#' || (!path_char((unsigned char)*q) && *q != '?' && *q != '%')) {
                *why = "query holds a character that must be percent-encoded";
                goto fail;
            }
    }
    return 0;
fail:
    url_free(u);
    return -1;
}

/* The scheme://host[:port] origin (port only when not the scheme's default). */
static char *url_origin(const struct url *u)
{
    bool v6 = strchr(u->host, ':') != NULL;
    bool dflt = u->port == (u->tls ? 443 : 80);
    char port[16] = "";
    if (!dflt)
        snprintf(port, sizeof(port), ":%d", u->port);
    return xasprintf("%s://%s%s%s%s", u->tls ? "https" : "http", v6 ? "[" : "", u->host,
                     v6 ? "]" : "", port);
}

/*
 * A URL baton fetches from: https, or plain http to a loopback host when
 * `http_ok` (an issuer's allow_http; always for Google's test endpoints).
 * Reports at the current path.
 */
static int check_fetch_url(struct jload *c, const char *s, bool http_ok, const char *http_hint)
{
    struct url u;
    const char *why = NULL;
    int rc = -1;
    if (url_parse(s, true, false, &u, &why) < 0) {
        jload_err(c, "not a valid URL: %s", why);
        return -1;
    }
    if (!u.tls && !http_ok)
        jload_err(c, "plain http is refused here%s", http_hint);
    else if (!u.tls && !is_loopback(u.host))
        jload_err(c, "plain http is only allowed to a loopback host (127.0.0.0/8, ::1, localhost)");
    else
        rc = 0;
    url_free(&u);
    return rc;
}

/* ------------------------------------------------------------------ */
/* item checks                                                         */

static int check_name(struct jload *c, const char *s)
{
    if (valid_name(s))
        return 0;
    jload_err(c,
              "a name is 1..%d letters, digits, '.', '_' or '-', starting with a letter or digit",
              MAX_NAME);
    return -1;
}

static int check_google_url(struct jload *c, const char *s)
{
    return check_fetch_url(c, s, true, "");
}

/* health_path: a path a request can spell exactly (canonical, no query),
 * so the probe's target is compared byte for byte. */
static int check_health_path(struct jload *c, const char *s)
{
    struct path_result pr;
    size_t n = strlen(s);
    if (n > 0 && n <= 256 && s[0] == '/' && path_canonicalize(s, n, 256, &pr) == REASON_ALLOWED &&
        !pr.query)
        return 0;
    jload_err(c,
              "health_path must be a canonical absolute path of at most 256 bytes, without a query "
              "(\"/healthz\")");
    return -1;
}

static int check_metadata_host(struct jload *c, const char *s)
{
    char *host = NULL;
    int port;
    const char *why;
    int rc = parse_hostport(s, true, &host, &port, &why);
    free(host);
    if (rc < 0)
        jload_err(c, "expected host[:port]: %s", why);
    return rc;
}

static int check_algorithm(struct jload *c, const char *s)
{
    char q[420];
    if (jws_alg_from_name(s) >= 0)
        return 0;
    jload_quote(q, sizeof(q), s);
    if (!strcmp(s, "none") || (s[0] == 'H' && s[1] == 'S'))
        jload_err(
            c, "%s is refused: only asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted", q);
    else
        jload_err(
            c,
            "unknown algorithm %s (known: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA)",
            q);
    return -1;
}

bool config_header_is_secret(const char *name, size_t len)
{
    static const char *const words[] = {
        "auth",     "token",  "secret",     "key",       "cookie",    "session",
        "password", "passwd", "credential", "signature", "assertion", "jwt",
        "bearer",   "csrf",   "xsrf",       "oidc",      "private"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t w = strlen(words[i]);
        for (size_t j = 0; j + w <= len; j++)
            if (!ascii_casecmp_n(name + j, w, words[i], w))
                return true;
    }
    return false;
}

static int check_record_header(struct jload *c, const char *s)
{
    char q[420];
    jload_quote(q, sizeof(q), s);
    if (!http1_token(s, strlen(s)) || strlen(s) > 128) {
        jload_err(c, "%s is not a header name", q);
        return -1;
    }
    if (config_header_is_secret(s, strlen(s))) {
        jload_err(c, "%s may carry credentials and is never recorded", q);
        return -1;
    }
    return 0;
}

/* The assertion's header: a token, and none that framing, hop-by-hop hygiene
 * or baton itself already decide (baton would send two values or strip its own). */
static int check_assertion_header(struct jload *c, const char *s)
{
    static const char *const taken[] = {"host",
                                        "content-length",
                                        "expect",
                                        "authorization",
                                        "x-serverless-authorization",
                                        "x-request-id",
                                        "traceparent",
                                        "forwarded",
                                        "x-forwarded-for",
                                        "x-forwarded-proto",
                                        "x-forwarded-host",
                                        "cookie"};
    size_t n = strlen(s);
    char q[420];
    jload_quote(q, sizeof(q), s);
    if (!http1_token(s, strlen(s)) || n > 128) {
        jload_err(c, "%s is not a header name", q);
        return -1;
    }
    if (http1_header_is_hop_by_hop(s, n)) {
        jload_err(c,
                  "%s is a hop-by-hop header: a proxy between baton and the upstream would drop it",
                  q);
        return -1;
    }
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        if (!ascii_casecmp_n(s, n, taken[i], strlen(taken[i]))) {
            jload_err(c, "%s is a framing, routing or identity header baton sets itself", q);
            return -1;
        }
    return 0;
}

static int check_assertion_issuer(struct jload *c, const char *s)
{
    size_t n = strlen(s);
    if ((n > 8 && !ascii_casecmp_n(s, 8, "https://", 8)) ||
        (n > 7 && !ascii_casecmp_n(s, 7, "http://", 7))) {
        for (size_t i = 0; i < n; i++)
            if (s[i] == ' ') {
                jload_err(c, "the issuer is a URL without spaces");
                return -1;
            }
        return 0;
    }
    jload_err(c,
              "the issuer is an http(s) URL naming this gateway (\"https://gateway.example.com\")");
    return -1;
}

/* ------------------------------------------------------------------ */
/* tables                                                              */

static const struct jload_choice audience_claims[] = {{"aud", 0}, {"client_id", 0}, {NULL, 0}};
static const struct jload_choice token_uses[] = {{"access", 0}, {"id", 0}, {NULL, 0}};
static const struct jload_choice token_headers[] = {
    {"authorization", 0}, {"x-serverless-authorization", 0}, {NULL, 0}};
static const struct jload_choice identities[] = {
    {"google", IDENTITY_GOOGLE}, {"none", IDENTITY_NONE}, {NULL, 0}};
static const struct jload_choice fsyncs[] = {{"always", FSYNC_ALWAYS},
                                             {"batch", FSYNC_BATCH},
                                             {"none", FSYNC_NONE},
                                             {"group", FSYNC_GROUP},
                                             {NULL, 0}};
static const struct jload_choice on_failures[] = {
    {"deny", ON_FAILURE_DENY}, {"allow", ON_FAILURE_ALLOW}, {NULL, 0}};

_Static_assert(sizeof(enum cfg_identity) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum cfg_fsync) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum cfg_on_failure) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(size_t) == sizeof(uint64_t), "size_t members are stored as uint64_t");

static const struct jload_choice redis_failures[] = {
    {"local", REDIS_FAIL_LOCAL}, {"deny", REDIS_FAIL_DENY}, {"allow", REDIS_FAIL_ALLOW}, {NULL, 0}};
_Static_assert(sizeof(enum cfg_redis_failure) == sizeof(int), "enums are stored as int");

static const struct jload_field limits_fields[] = {
    JL_INT("max_header_bytes", struct cfg_limits, max_header_bytes, 1024, 1048576, 16384),
    JL_INT("max_uri_bytes", struct cfg_limits, max_uri_bytes, 256, 65536, 8192),
    JL_INT("max_body_bytes", struct cfg_limits, max_body_bytes, 0, 1LL << 40, 33554432),
    JL_INT("header_timeout_ms", struct cfg_limits, header_timeout_ms, 100, 600000, 10000),
    JL_INT("idle_timeout_ms", struct cfg_limits, idle_timeout_ms, 100, 3600000, 60000),
    JL_INT("max_connections", struct cfg_limits, max_connections, 1, 1000000, 10000),
    JL_INT("body_timeout_ms", struct cfg_limits, body_timeout_ms, 100, 3600000, 60000),
    {0},
};

static int parse_algorithms(struct jload *c, const json_t *v, void *obj);
static int parse_discovery(struct jload *c, const json_t *v, void *obj);

static const struct jload_field issuer_fields[] = {
    JL_STR("name", struct cfg_issuer, name, NULL, check_name, JL_REQUIRED),
    JL_STR("issuer", struct cfg_issuer, issuer, NULL, NULL, JL_REQUIRED),
    JL_CUSTOM("discovery", parse_discovery, 0), /* sets nothing: issuer_post picks the key source */
    JL_STR("jwks_uri", struct cfg_issuer, jwks_uri, NULL, NULL, 0),
    JL_PATH("jwks_file", struct cfg_issuer, jwks_file, NULL, 0),
    JL_LIST("audiences", struct cfg_issuer, audiences, n_audiences, MAX_LIST, NULL,
            JL_REQUIRED | JL_NONEMPTY),
    JL_STRCHOICE("audience_claim", struct cfg_issuer, audience_claim, audience_claims, "aud", 0),
    JL_CUSTOM("algorithms", parse_algorithms, 0),
    JL_LIST("token_types", struct cfg_issuer, token_types, n_token_types, MAX_TOKEN_TYPES, NULL,
            JL_NOCASE),
    JL_INT("leeway_s", struct cfg_issuer, leeway_s, 0, 600, 60),
    JL_STRCHOICE("token_use", struct cfg_issuer, token_use, token_uses, NULL, 0),
    JL_BOOL("allow_missing_kid", struct cfg_issuer, allow_missing_kid, 0),
    JL_BOOL("allow_http", struct cfg_issuer, allow_http, 0),
    JL_INT("refresh_min_s", struct cfg_issuer, refresh_min_s, 1, 86400, 60),
    JL_INT("refresh_max_s", struct cfg_issuer, refresh_max_s, 1, 604800, 3600),
    JL_INT("fetch_timeout_ms", struct cfg_issuer, fetch_timeout_ms, 100, 60000, 5000),
    JL_INT("max_token_bytes", struct cfg_issuer, max_token_bytes, 512, 1048576, 16384),
    {0},
};

static int parse_credentials(struct jload *c, const json_t *v, void *obj);

static const struct jload_field google_fields[] = {
    JL_CUSTOM("credentials", parse_credentials, 0),
    JL_STR("metadata_host", struct cfg_google, metadata_host, NULL, check_metadata_host, 0),
    JL_STR("token_uri", struct cfg_google, token_uri, NULL, check_google_url, 0),
    JL_STR("iamcredentials_url", struct cfg_google, iamcredentials_url,
           "https://iamcredentials.googleapis.com", check_google_url, 0),
    JL_PATH("local_key", struct cfg_google, local_key, NULL, 0),
    JL_STR("local_issuer", struct cfg_google, local_issuer, "https://baton.local", NULL, 0),
    JL_INT("token_lifetime_s", struct cfg_google, token_lifetime_s, 60, 43200, 3600),
    JL_INT("timeout_ms", struct cfg_google, timeout_ms, 100, 60000, 5000),
    {0},
};

static const struct jload_field sa_key_fields[] = {
    JL_PATH("service_account_key", struct cfg_google, service_account_key, NULL, JL_REQUIRED),
    {0},
};

static int parse_caller_assertion(struct jload *c, const json_t *v, void *obj);

static const struct jload_field upstream_fields[] = {
    JL_STR("name", struct cfg_upstream, name, NULL, check_name, JL_REQUIRED),
    JL_STR("url", struct cfg_upstream, url, NULL, NULL, JL_REQUIRED),
    JL_STR("audience", struct cfg_upstream, audience, NULL, NULL, 0),
    JL_STRCHOICE("token_header", struct cfg_upstream, token_header, token_headers, "authorization",
                 JL_NOCASE),
    JL_CHOICE("identity", struct cfg_upstream, identity, identities, IDENTITY_GOOGLE),
    JL_INT("timeout_ms", struct cfg_upstream, timeout_ms, 1, 3600000, 60000),
    JL_CUSTOM("caller_assertion", parse_caller_assertion, 0),
    JL_INT("resolve_interval_s", struct cfg_upstream, resolve_interval_s, 1, 3600, 30),
    {0},
};

static int parse_rotate_bytes(struct jload *c, const json_t *v, void *obj);
static int parse_witness(struct jload *c, const json_t *v, void *obj);
static int check_witness_bucket(struct jload *c, const char *s);

static const struct jload_field witness_fields[] = {
    JL_PATH("dir", struct cfg_audit, witness_dir, NULL, 0),
    JL_STR("bucket", struct cfg_audit, witness_bucket, NULL, check_witness_bucket, 0),
    JL_STR("storage_url", struct cfg_audit, witness_storage_url, NULL, check_google_url, 0),
    {0},
};

static const struct jload_field audit_fields[] = {
    JL_PATH("path", struct cfg_audit, path, "-", JL_STDOUT),
    JL_CHOICE("fsync", struct cfg_audit, fsync, fsyncs, FSYNC_BATCH),
    JL_CHOICE("on_failure", struct cfg_audit, on_failure, on_failures, ON_FAILURE_DENY),
    JL_PATH("signing_key", struct cfg_audit, signing_key, NULL, 0),
    JL_LIST("record_headers", struct cfg_audit, record_headers, n_record_headers,
            CONFIG_MAX_RECORD_HEADERS, check_record_header, JL_NOCASE),
    JL_CUSTOM("rotate_bytes", parse_rotate_bytes, 0),
    JL_INT("batch_ms", struct cfg_audit, batch_ms, 1, 1000, 10),
    JL_INT("checkpoint_records", struct cfg_audit, checkpoint_records, 1, 10000000, 1000),
    JL_INT("checkpoint_interval_s", struct cfg_audit, checkpoint_interval_s, 1, 86400, 60),
    JL_INT("queue_records", struct cfg_audit, queue_records, 16, 16777216, 65536),
    JL_CUSTOM("witness", parse_witness, 0),
    {0},
};

static const struct jload_field redis_fields[] = {
    JL_STR("url", struct cfg_redis, url, NULL, NULL, JL_REQUIRED),
    JL_PATH("password_file", struct cfg_redis, password_file, NULL, 0),
    JL_INT("timeout_ms", struct cfg_redis, timeout_ms, 1, 10000, 50),
    JL_CHOICE("on_failure", struct cfg_redis, on_failure, redis_failures, REDIS_FAIL_LOCAL),
    {0},
};

static int parse_listen(struct jload *c, const json_t *v, void *obj);
static int parse_admin_listen(struct jload *c, const json_t *v, void *obj);
static int parse_trusted_proxies(struct jload *c, const json_t *v, void *obj);
static int parse_limits(struct jload *c, const json_t *v, void *obj);
static int parse_issuers(struct jload *c, const json_t *v, void *obj);
static int parse_google(struct jload *c, const json_t *v, void *obj);
static int parse_upstreams(struct jload *c, const json_t *v, void *obj);
static int parse_audit(struct jload *c, const json_t *v, void *obj);
static int parse_url_signing(struct jload *c, const json_t *v, void *obj);
static int parse_redis(struct jload *c, const json_t *v, void *obj);
static int parse_assertion(struct jload *c, const json_t *v, void *obj);

static const struct jload_field assertion_fields[] = {
    JL_STR("issuer", struct cfg_assertion, issuer, NULL, check_assertion_issuer, JL_REQUIRED),
    JL_PATH("signing_key", struct cfg_assertion, signing_key, NULL, 0),
    JL_INT("lifetime_s", struct cfg_assertion, lifetime_s, 30, 3600, 300),
    JL_STR("header", struct cfg_assertion, header, "x-baton-assertion", check_assertion_header, 0),
    JL_LIST("previous_keys", struct cfg_assertion, previous_keys, n_previous_keys,
            CONFIG_MAX_PREVIOUS_KEYS, NULL, 0),
    {0},
};
static int parse_tracing(struct jload *c, const json_t *v, void *obj);

static const struct jload_field root_fields[] = {
    JL_CUSTOM("listen", parse_listen, 0),
    JL_CUSTOM("admin_listen", parse_admin_listen, 0),
    JL_INT("workers", struct baton_config, workers, 0, 256, 0),
    JL_CUSTOM("trusted_proxies", parse_trusted_proxies, 0),
    JL_CUSTOM("limits", parse_limits, 0),
    JL_CUSTOM("issuers", parse_issuers, JL_REQUIRED),
    JL_CUSTOM("google", parse_google, 0),
    JL_CUSTOM("upstreams", parse_upstreams, JL_REQUIRED),
    JL_PATH("policies", struct baton_config, policies, "policies", 0),
    JL_CUSTOM("audit", parse_audit, 0),
    JL_INT("drain_timeout_ms", struct baton_config, drain_ms, 0, 600000, 8000),
    JL_BOOL("access_log", struct baton_config, access_log, 0),
    JL_INT("ready_timeout_ms", struct baton_config, ready_timeout_ms, 0, 600000, 30000),
    JL_STR("health_path", struct baton_config, health_path, NULL, check_health_path, 0),
    JL_CUSTOM("url_signing", parse_url_signing, 0),
    JL_CUSTOM("redis", parse_redis, 0),
    JL_CUSTOM("assertion", parse_assertion, 0),
    JL_CUSTOM("tracing", parse_tracing, 0),
    {0},
};

/* ------------------------------------------------------------------ */
/* custom parsers                                                      */

static int parse_addr(struct jload *c, const json_t *v, struct cfg_addr *a, bool allow_empty,
                      bool *enabled)
{
    const char *s = jload_want_string(c, v), *why;
    char *host = NULL;
    int port;
    if (!s)
        return -1;
    if (!*s && allow_empty) {
        *enabled = false;
        return 0;
    }
    if (parse_hostport(s, false, &host, &port, &why) < 0) {
        jload_err(c, "expected host:port (an IPv6 address in brackets): %s", why);
        return -1;
    }
    free(a->host);
    a->host = host;
    a->port = port;
    if (enabled)
        *enabled = true;
    return 0;
}

static int parse_listen(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    return parse_addr(c, v, &cfg->listen, false, NULL);
}

static int parse_admin_listen(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    return parse_addr(c, v, &cfg->admin_listen, true, &cfg->admin_enabled);
}

static int parse_cidr(const char *s, struct cfg_cidr *out, const char **why)
{
    char tmp[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    int bits = -1;

    memset(out, 0, sizeof(*out));
    if (n == 0 || n >= sizeof(tmp)) {
        *why = "expected an address or address/prefix";
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, out->addr) == 1) {
        out->family = AF_INET;
    } else if (inet_pton(AF_INET6, tmp, out->addr) == 1) {
        out->family = AF_INET6;
    } else {
        *why = "not an IPv4 or IPv6 address";
        return -1;
    }
    int maxbits = out->family == AF_INET ? 32 : 128;
    if (slash) {
        const char *b = slash + 1;
        size_t bn = strlen(b);
        bits = 0;
        if (bn == 0 || bn > 3 || (bn > 1 && b[0] == '0')) {
            *why = "bad prefix length";
            return -1;
        }
        for (size_t k = 0; k < bn; k++) {
            if (b[k] < '0' || b[k] > '9') {
                *why = "bad prefix length";
                return -1;
            }
            bits = bits * 10 + (b[k] - '0');
        }
        if (bits > maxbits) {
            *why = out->family == AF_INET ? "IPv4 prefix length is 0..32"
                                          : "IPv6 prefix length is 0..128";
            return -1;
        }
    } else {
        bits = maxbits;
    }
    out->bits = bits;
    for (int k = 0; k < maxbits / 8; k++) {
        int keep = bits - 8 * k;
        unsigned char mask = keep >= 8 ? 0xFF : keep <= 0 ? 0 : (unsigned char)(0xFF << (8 - keep));
        if (out->addr[k] & (unsigned char)~mask) {
            *why = "address has bits set beyond the prefix length";
            return -1;
        }
    }
    /* ::ffff:a.b.c.d/n (n >= 96) is the IPv4 network a.b.c.d/(n-96) */
    if (out->family == AF_INET6 && bits >= 96 &&
        IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)out->addr)) {
        unsigned char v4[4];
        memcpy(v4, out->addr + 12, 4);
        memset(out->addr, 0, sizeof(out->addr));
        memcpy(out->addr, v4, 4);
        out->family = AF_INET;
        out->bits = bits - 96;
    }
    return 0;
}

static int parse_trusted_proxies(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    size_t n;
    int rc = 0;
    if (!json_is_array(v)) {
        jload_err(c, "expected an array of CIDRs, got %s", jload_type_words(v));
        return -1;
    }
    n = json_array_size(v);
    if (n > MAX_PROXIES) {
        jload_err(c, "at most %d entries, got %zu", MAX_PROXIES, n);
        return -1;
    }
    free(cfg->trusted_proxies);
    cfg->trusted_proxies = xcalloc(n ? n : 1, sizeof(*cfg->trusted_proxies));
    cfg->n_trusted_proxies = 0;
    for (size_t k = 0; k < n; k++) {
        const char *s, *why;
        jload_push_idx(c, k);
        if ((s = jload_want_string(c, json_array_get(v, k)))) {
            if (parse_cidr(s, &cfg->trusted_proxies[cfg->n_trusted_proxies], &why) == 0)
                cfg->n_trusted_proxies++;
            else {
                jload_err(c, "bad CIDR: %s", why);
                rc = -1;
            }
        } else {
            rc = -1;
        }
        jload_pop(c);
    }
    return rc;
}

static int parse_limits(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct jload_seen s;
    return jload_object(c, v, limits_fields, &cfg->limits, &s) < 0 || s.valid != s.present ? -1 : 0;
}

static int parse_algorithms(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_issuer *iss = obj;
    unsigned mask = 0;
    int rc = 0;
    if (!json_is_array(v)) {
        jload_err(c, "expected an array of algorithm names, got %s", jload_type_words(v));
        return -1;
    }
    if (json_array_size(v) == 0) {
        jload_err(c, "needs at least one algorithm");
        return -1;
    }
    if (json_array_size(v) > JWS_ALG__COUNT) {
        jload_err(c, "at most %d entries", JWS_ALG__COUNT);
        return -1;
    }
    for (size_t k = 0; k < json_array_size(v); k++) {
        const char *s;
        int a;
        jload_push_idx(c, k);
        if (!(s = jload_want_string(c, json_array_get(v, k))) || check_algorithm(c, s) < 0) {
            rc = -1;
        } else if (mask & (1u << (a = jws_alg_from_name(s)))) {
            jload_err(c, "\"%s\" is listed twice", s);
            rc = -1;
        } else {
            mask |= 1u << a;
        }
        jload_pop(c);
    }
    if (rc == 0)
        iss->algorithms = mask;
    return rc;
}

/* credentials: "metadata" | "local" | {"service_account_key": PATH} */
static int parse_credentials(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_google *g = obj;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char q[420];
        if (!strcmp(s, "metadata")) {
            g->source = GOOGLE_METADATA;
            return 0;
        }
        if (!strcmp(s, "local")) {
            g->source = GOOGLE_LOCAL;
            return 0;
        }
        jload_quote(q, sizeof(q), s);
        jload_err(c, "%s is not one of \"metadata\", \"local\" or {\"service_account_key\": PATH}",
                  q);
        return -1;
    }
    if (json_is_object(v)) {
        struct jload_seen s;
        if (jload_object(c, v, sa_key_fields, g, &s) < 0 ||
            !jload_parsed(sa_key_fields, &s, "service_account_key"))
            return -1;
        g->source = GOOGLE_SA_KEY;
        return 0;
    }
    jload_err(c, "expected \"metadata\", \"local\" or {\"service_account_key\": PATH}, got %s",
              jload_type_words(v));
    return -1;
}

static int parse_rotate_bytes(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_audit *a = obj;
    json_int_t x;
    if (!json_is_integer(v)) {
        jload_err(c, "expected an integer, got %s", jload_type_words(v));
        return -1;
    }
    x = json_integer_value(v);
    if (x != 0 && (x < 4096 || x > (1LL << 40))) {
        jload_err(c, "%lld is out of range: 0 (never) or 4096..%lld", (long long)x, 1LL << 40);
        return -1;
    }
    a->rotate_bytes = (uint64_t)x;
    return 0;
}

/* "gs://BUCKET[/PREFIX]": Cloud Storage's bucket name rules (3..63 of
 * [a-z0-9._-], starting and ending with a letter or digit; dotted names up to
 * 222) and an object prefix of [A-Za-z0-9._/-] (no "..", at most 512 bytes). */
static int check_witness_bucket(struct jload *c, const char *s)
{
    const char *b, *slash;
    size_t n;

    if (strncmp(s, "gs://", 5) != 0) {
        jload_err(c, "expected \"gs://BUCKET/PREFIX\"");
        return -1;
    }
    b = s + 5;
    slash = strchr(b, '/');
    n = slash ? (size_t)(slash - b) : strlen(b);
    if (n < 3 || n > (memchr(b, '.', n) ? 222u : 63u) ||
        strspn(b, "abcdefghijklmnopqrstuvwxyz0123456789._-") < n || !isalnum((unsigned char)b[0]) ||
        !isalnum((unsigned char)b[n - 1])) {
        jload_err(c,
                  "\"%.*s\" is not a Cloud Storage bucket name (3..63 of a-z 0-9 . _ -, "
                  "beginning and ending with a letter or digit)",
                  (int)(n > 100 ? 100 : n), b);
        return -1;
    }
    if (slash &&
        (strlen(slash) > 513 ||
         strspn(slash, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-") !=
             strlen(slash) ||
         strstr(slash, "..") || strstr(slash, "//"))) {
        jload_err(
            c, "the object prefix may hold only A-Z a-z 0-9 . _ - and single slashes, no \"..\", "
               "at most 512 bytes");
        return -1;
    }
    return 0;
}

/* witness: {"dir": PATH} | {"bucket": "gs://BUCKET/PREFIX"[, "storage_url": URL]} */
static int parse_witness(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_audit *a = obj;
    struct jload_seen s;
    struct stat st;

    if (!json_is_object(v)) {
        jload_err(c, "expected {\"dir\": PATH} or {\"bucket\": \"gs://BUCKET/PREFIX\"}, got %s",
                  jload_type_words(v));
        return -1;
    }
    if (jload_object(c, v, witness_fields, a, &s) < 0)
        return -1;
    for (int k = 0; witness_fields[k].key; k++)
        if (jload_has(witness_fields, &s, witness_fields[k].key) &&
            !jload_parsed(witness_fields, &s, witness_fields[k].key))
            return -1; /* reported */
    if (jload_has(witness_fields, &s, "dir") == jload_has(witness_fields, &s, "bucket")) {
        jload_err(c, "needs exactly one of \"dir\" and \"bucket\"");
        return -1;
    }
    if (jload_has(witness_fields, &s, "storage_url") && !jload_has(witness_fields, &s, "bucket")) {
        jload_err_at(c, "storage_url", true, "\"storage_url\" applies only with \"bucket\"");
        return -1;
    }
    if (a->witness_dir) {
        if (stat(a->witness_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            jload_err_at(c, "dir", false, "%s is not an existing directory", a->witness_dir);
            return -1;
        }
        return 0;
    }
    {
        char *b = a->witness_bucket + 5, *slash = strchr(b, '/');
        const char *p = slash ? slash : "";
        size_t n;
        while (*p == '/')
            p++;
        n = strlen(p);
        while (n && p[n - 1] == '/')
            n--;
        a->witness_prefix = xstrndup(p, n);
        if (slash)
            *slash = '\0';
        memmove(a->witness_bucket, b, strlen(b) + 1);
    }
    if (!a->witness_storage_url)
        a->witness_storage_url = xstrdup("https://storage.googleapis.com");
    return 0;
}

static int parse_discovery(struct jload *c, const json_t *v, void *obj)
{
    (void)obj;
    if (json_is_boolean(v))
        return 0;
    jload_err(c, "expected true or false, got %s", jload_type_words(v));
    return -1;
}

static void issuer_defaults(struct cfg_issuer *iss, const char *dir)
{
    jload_defaults(issuer_fields, iss, dir);
    iss->algorithms = 1u << JWS_RS256 | 1u << JWS_ES256;
}

/* Cross-key rules of one issuer (`v` is its object). */
static void issuer_post(struct jload *c, const json_t *v, struct cfg_issuer *iss,
                        const struct jload_seen *s)
{
    const struct jload_field *t = issuer_fields;
    bool discovery = json_is_true(json_object_get(v, "discovery"));
    bool disc_bad = jload_has(t, s, "discovery") && !jload_parsed(t, s, "discovery");
    const char *given[3], *key;
    const json_t *val;
    int n = 0;
    /* the key sources given, in document order (a non-boolean discovery,
     * already reported, counts for neither side) */
    json_object_foreach((json_t *)v, key, val) {
        if ((!strcmp(key, "discovery") && discovery && !disc_bad) || !strcmp(key, "jwks_uri") ||
            !strcmp(key, "jwks_file"))
            given[n++] = !strcmp(key, "discovery")  ? "discovery"
                         : !strcmp(key, "jwks_uri") ? "jwks_uri"
                                                    : "jwks_file";
    }
    if (n == 0 && !disc_bad)
        jload_err(c, "needs a key source: \"discovery\": true, \"jwks_uri\" or \"jwks_file\"%s",
                  jload_has(t, s, "discovery") ? " (discovery is false)" : "");
    for (int k = 1; k < n; k++)
        jload_err_at(
            c, given[k], true,
            "only one of discovery, jwks_uri and jwks_file may be given, and \"%s\" already is",
            given[0]);
    if (n == 1) {
        if (!strcmp(given[0], "discovery"))
            iss->key_source = KEYS_DISCOVERY;
        else if (!strcmp(given[0], "jwks_uri"))
            iss->key_source = KEYS_JWKS_URI;
        else
            iss->key_source = KEYS_JWKS_FILE;
    }
    const char *hint = " (set \"allow_http\": true, for a loopback test issuer)";
    if (jload_parsed(t, s, "jwks_uri")) {
        jload_push_key(c, "jwks_uri");
        check_fetch_url(c, iss->jwks_uri, iss->allow_http, hint);
        jload_pop(c);
    }
    if (discovery && jload_parsed(t, s, "discovery") && jload_parsed(t, s, "issuer")) {
        struct url u;
        const char *why;
        jload_push_key(c, "issuer");
        if (url_parse(iss->issuer, false, false, &u, &why) < 0) {
            jload_err(c, "with discovery, the issuer must be an https URL: %s", why);
        } else {
            url_free(&u);
            check_fetch_url(c, iss->issuer, iss->allow_http, hint);
        }
        jload_pop(c);
    }
    /* Cognito puts the app client in `aud` of ID tokens and in `client_id` of
     * access tokens (which have no aud): the other pairing never matches */
    if (jload_parsed(t, s, "token_use") &&
        !(jload_has(t, s, "audience_claim") && !jload_parsed(t, s, "audience_claim"))) {
        bool access = !strcmp(iss->token_use, "access"),
             by_aud = !strcmp(iss->audience_claim, "aud");
        if (access == by_aud)
            jload_err_at(c, "token_use", false,
                         "%s tokens carry the app client in \"%s\": set \"audience_claim\": \"%s\"",
                         access ? "access" : "ID", access ? "client_id" : "aud",
                         access ? "client_id" : "aud");
    }
    if (jload_parsed(t, s, "refresh_max_s") && jload_parsed(t, s, "refresh_min_s") &&
        iss->refresh_max_s < iss->refresh_min_s)
        jload_err_at(c, "refresh_max_s", false, "%u is below refresh_min_s (%u)",
                     iss->refresh_max_s, iss->refresh_min_s);
    else if (!jload_has(t, s, "refresh_max_s") && iss->refresh_max_s < iss->refresh_min_s)
        iss->refresh_max_s = iss->refresh_min_s;
    if (!jload_has(t, s, "token_types")) {
        iss->token_types = xcalloc(2, sizeof(char *));
        iss->token_types[0] = xstrdup("JWT");
        iss->token_types[1] = xstrdup("at+jwt");
        iss->n_token_types = 2;
    }
}

static void free_issuer(struct cfg_issuer *iss)
{
    free(iss->name);
    free(iss->issuer);
    free(iss->jwks_uri);
    free(iss->jwks_file);
    for (size_t k = 0; k < iss->n_audiences; k++)
        free(iss->audiences[k]);
    free(iss->audiences);
    free(iss->audience_claim);
    for (size_t k = 0; k < iss->n_token_types; k++)
        free(iss->token_types[k]);
    free(iss->token_types);
    free(iss->token_use);
}

static int parse_issuers(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    size_t n;
    int rc = 0;

    if (!json_is_array(v)) {
        jload_err(c, "expected an array of issuers, got %s", jload_type_words(v));
        return -1;
    }
    n = json_array_size(v);
    if (n == 0 || n > MAX_ISSUERS) {
        jload_err(c, "needs 1..%d issuers, got %zu", MAX_ISSUERS, n);
        return -1;
    }
    cfg->issuers = xcalloc(n, sizeof(*cfg->issuers));
    cfg->n_issuers = n;
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(v, k);
        struct cfg_issuer *iss = &cfg->issuers[k];
        struct jload_seen s;
        jload_push_idx(c, k);
        issuer_defaults(iss, c->dir);
        if (jload_object(c, e, issuer_fields, iss, &s) < 0) {
            rc = -1;
        } else {
            issuer_post(c, e, iss, &s);
            /* names and iss values are unique */
            for (size_t j = 0; j < k; j++) {
                const struct cfg_issuer *o = &cfg->issuers[j];
                if (jload_parsed(issuer_fields, &s, "name") && o->name &&
                    !strcmp(o->name, iss->name))
                    jload_err_at(c, "name", false,
                                 "issuer name \"%s\" is already used by issuers[%zu]", iss->name,
                                 j);
                if (jload_parsed(issuer_fields, &s, "issuer") && o->issuer &&
                    !strcmp(o->issuer, iss->issuer))
                    jload_err_at(c, "issuer", false,
                                 "this issuer is already configured as issuers[%zu]%s%s%s", j,
                                 o->name ? " (\"" : "", o->name ? o->name : "",
                                 o->name ? "\")" : "");
            }
        }
        jload_pop(c);
    }
    return rc;
}

static int parse_google(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct cfg_google *g = &cfg->google;
    const struct jload_field *t = google_fields;
    struct jload_seen s;

    if (jload_object(c, v, t, g, &s) < 0)
        return -1;
    if (!jload_parsed(t, &s, "credentials") && jload_has(t, &s, "credentials"))
        return -1; /* reported; which keys fit is unknown */
    static const struct {
        const char *key;
        enum cfg_google_source only;
        const char *what;
    } only[] = {
        {"metadata_host", GOOGLE_METADATA, "\"metadata\""},
        {"token_uri", GOOGLE_SA_KEY, "{\"service_account_key\": PATH}"},
        {"local_key", GOOGLE_LOCAL, "\"local\""},
        {"local_issuer", GOOGLE_LOCAL, "\"local\""},
        {"token_lifetime_s", GOOGLE_LOCAL, "\"local\""},
    };
    for (size_t k = 0; k < sizeof(only) / sizeof(only[0]); k++)
        if (jload_has(t, &s, only[k].key) && g->source != only[k].only)
            jload_err_at(c, only[k].key, true, "\"%s\" applies only with \"credentials\": %s",
                         only[k].key, only[k].what);
    return 0;
}

static void upstream_post(struct jload *c, struct cfg_upstream *up, const struct jload_seen *s)
{
    const struct jload_field *t = upstream_fields;
    struct url u;
    const char *why;

    if (!jload_parsed(t, s, "url"))
        return;
    jload_push_key(c, "url");
    if (url_parse(up->url, false, true, &u, &why) < 0) {
        jload_err(c, "expected http(s)://host[:port][/path]: %s", why);
        jload_pop(c);
        return;
    }
    /* (an identity that did not parse is already reported: no guess on it) */
    if (!u.tls && up->identity == IDENTITY_GOOGLE && !is_loopback(u.host) &&
        !(jload_has(t, s, "identity") && !jload_parsed(t, s, "identity")))
        jload_err(c, "plain http to a non-loopback host would send the Google ID token in clear: "
                     "use https, a loopback sidecar, or \"identity\": \"none\"");
    jload_pop(c);
    up->tls = u.tls;
    up->port = u.port;
    up->host = u.host;
    up->base_path = u.path;
    u.host = u.path = NULL;
    if (!jload_has(t, s, "audience"))
        up->audience = url_origin(&(struct url){up->tls, up->host, up->port, NULL});
    /* no token is minted for identity "none": its token settings would be ignored */
    if (jload_parsed(t, s, "identity") && up->identity == IDENTITY_NONE)
        for (int k = 0; k < 2; k++) {
            const char *key = k ? "token_header" : "audience";
            if (jload_has(t, s, key))
                jload_err_at(c, key, true,
                             "\"%s\" has no effect with \"identity\": \"none\" (no token is sent)",
                             key);
        }
}

static void free_upstream(struct cfg_upstream *up)
{
    free(up->name);
    free(up->url);
    free(up->audience);
    free(up->token_header);
    free(up->host);
    free(up->base_path);
}

static int parse_upstreams(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    size_t n;
    int rc = 0;

    if (!json_is_array(v)) {
        jload_err(c, "expected an array of upstreams, got %s", jload_type_words(v));
        return -1;
    }
    n = json_array_size(v);
    if (n == 0 || n > MAX_UPSTREAMS) {
        jload_err(c, "needs 1..%d upstreams, got %zu", MAX_UPSTREAMS, n);
        return -1;
    }
    cfg->upstreams = xcalloc(n, sizeof(*cfg->upstreams));
    cfg->n_upstreams = n;
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(v, k);
        struct cfg_upstream *up = &cfg->upstreams[k];
        struct jload_seen s;
        jload_push_idx(c, k);
        jload_defaults(upstream_fields, up, c->dir);
        if (jload_object(c, e, upstream_fields, up, &s) < 0) {
            rc = -1;
        } else {
            upstream_post(c, up, &s);
            for (size_t j = 0; j < k && jload_parsed(upstream_fields, &s, "name"); j++)
                if (cfg->upstreams[j].name && !strcmp(cfg->upstreams[j].name, up->name)) {
                    jload_err_at(c, "name", false,
                                 "upstream name \"%s\" is already used by upstreams[%zu]", up->name,
                                 j);
                    break;
                }
        }
        jload_pop(c);
    }
    return rc;
}

static int parse_audit(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct jload_seen s;
    return jload_object(c, v, audit_fields, &cfg->audit, &s);
}

static int check_url_key_id(struct jload *c, const char *s)
{
    size_t n = strlen(s);
    bool okay = n >= 1 && n <= 32;
    for (size_t i = 0; okay && i < n; i++)
        okay = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
               (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-';
    if (okay)
        return 0;
    jload_err(
        c, "a key id is 1..32 letters, digits, '.', '_' or '-' (it travels in the link unescaped)");
    return -1;
}

static const struct jload_field url_key_fields[] = {
    JL_STR("id", struct cfg_url_key, id, NULL, check_url_key_id, JL_REQUIRED),
    JL_PATH("file", struct cfg_url_key, file, NULL, JL_REQUIRED),
    {0},
};

static int parse_url_keys(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_url_signing *us = obj;
    size_t n;
    int rc = 0;

    if (!json_is_array(v)) {
        jload_err(c, "expected an array of keys, got %s", jload_type_words(v));
        return -1;
    }
    n = json_array_size(v);
    if (n == 0 || n > 16) {
        jload_err(c, "needs 1..16 keys (the first signs, all verify), got %zu", n);
        return -1;
    }
    us->keys = xcalloc(n, sizeof(*us->keys));
    us->n_keys = n;
    for (size_t k = 0; k < n; k++) {
        struct cfg_url_key *key = &us->keys[k];
        struct jload_seen s;
        jload_push_idx(c, k);
        jload_defaults(url_key_fields, key, c->dir);
        if (jload_object(c, json_array_get(v, k), url_key_fields, key, &s) < 0)
            rc = -1;
        for (size_t j = 0; j < k && key->id; j++)
            if (us->keys[j].id && !strcmp(us->keys[j].id, key->id)) {
                jload_err_at(c, "id", false, "key id \"%s\" is already used by keys[%zu]", key->id,
                             j);
                rc = -1;
                break;
            }
        jload_pop(c);
    }
    return rc;
}

static const struct jload_field url_signing_fields[] = {
    JL_CUSTOM("keys", parse_url_keys, JL_REQUIRED),
    JL_INT("max_ttl_s", struct cfg_url_signing, max_ttl_s, 1, 604800, 604800),
    JL_INT("leeway_s", struct cfg_url_signing, leeway_s, 0, 60, 0),
    {0},
};

static int parse_url_signing(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct jload_seen s;
    jload_defaults(url_signing_fields, &cfg->url_signing, c->dir);
    cfg->url_signing.enabled = true;
    return jload_object(c, v, url_signing_fields, &cfg->url_signing, &s);
}

/*
 * "redis://HOST[:PORT][/DB]" (HOST an IPv4 or bracketed IPv6 literal: a name
 * would be resolved by hiredis with a blocking getaddrinfo on a worker
 * thread) or "unix:///absolute/path". No user, password or query in the URL:
 * the password lives in password_file, never in the config.
 */
static int parse_redis_url(struct jload *c, struct cfg_redis *r)
{
    const char *s = r->url, *rest, *slash, *why = NULL;
    char *hp = NULL;

    if (!strncmp(s, "unix://", 7)) {
        if (s[7] != '/' || strlen(s + 7) > 100) {
            jload_err_at(c, "url", false,
                         "expected \"unix:///absolute/path\" (at most 100 bytes of path)");
            return -1;
        }
        r->unix_path = xstrdup(s + 7);
        return 0;
    }
    if (strncmp(s, "redis://", 8) != 0) {
        jload_err_at(c, "url", false,
                     "expected \"redis://HOST:PORT/DB\" or \"unix:///path\" "
                     "(\"rediss://\" is not supported: hiredis 0.14 has no TLS)");
        return -1;
    }
    rest = s + 8;
    slash = strchr(rest, '/');
    hp = xstrndup(rest, slash ? (size_t)(slash - rest) : strlen(rest));
    if (strpbrk(hp, "@?#")) {
        jload_err_at(c, "url", false,
                     "no user, password or query in the URL: the password goes in "
                     "\"password_file\"");
        goto fail;
    }
    if (parse_hostport(hp, true, &r->host, &r->port, &why) < 0) {
        jload_err_at(c, "url", false, "expected redis://HOST:PORT/DB: %s", why);
        goto fail;
    }
    if (!r->port)
        r->port = 6379;
    {
        unsigned char buf[16];
        if (inet_pton(AF_INET, r->host, buf) != 1 && inet_pton(AF_INET6, r->host, buf) != 1) {
            jload_err_at(c, "url", false,
                         "the Redis host must be an IP address (Memorystore gives one): "
                         "a name would be resolved on a worker thread");
            goto fail;
        }
    }
    if (slash && slash[1]) {
        char *end;
        long db;
        errno = 0;
        db = strtol(slash + 1, &end, 10);
        if (*end || errno || db < 0 || db > 1023 || !(slash[1] >= '0' && slash[1] <= '9')) {
            jload_err_at(c, "url", false, "the database after \"/\" is a number 0..1023");
            goto fail;
        }
        r->db = (int)db;
    }
    free(hp);
    return 0;
fail:
    free(hp);
    free(r->host);
    r->host = NULL;
    return -1;
}

/* The AUTH password: a file only its owner can read, whose bytes (without a
 * trailing newline) are the password. Read at load, never on a worker. */
static int read_redis_password(struct jload *c, struct cfg_redis *r)
{
    struct stat st;
    char buf[CONFIG_REDIS_PASSWORD_MAX + 2];
    ssize_t n = 0;
    int fd = open(r->password_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), rc = -1;

    if (fd < 0) {
        jload_err_at(c, "password_file", false, "cannot open %s: %s", r->password_file,
                     strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        jload_err_at(c, "password_file", false, "%s is not a regular file", r->password_file);
        goto out;
    }
    if (st.st_mode & 077) {
        jload_err_at(c, "password_file", false,
                     "%s is readable or writable by others (mode %03o): "
                     "chmod 600 it",
                     r->password_file, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0 || n > CONFIG_REDIS_PASSWORD_MAX) {
        jload_err_at(c, "password_file", false, "%s: %s", r->password_file,
                     n < 0 ? strerror(errno) : "longer than 512 bytes");
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (n == 0 || memchr(buf, '\0', (size_t)n)) {
        jload_err_at(c, "password_file", false, "%s holds no password", r->password_file);
        goto out;
    }
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
            jload_err_at(c, "password_file", false, "%s: the password holds a control character",
                         r->password_file);
            goto out;
        }
    r->password = xstrdup(buf);
    rc = 0;
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return rc;
}

static int parse_redis(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct cfg_redis *r = &cfg->redis;
    const struct jload_field *t = redis_fields;
    struct jload_seen s;

    jload_defaults(t, r, c->dir);
    if (jload_object(c, v, t, r, &s) < 0)
        return -1;
    if (jload_parsed(t, &s, "url") && parse_redis_url(c, r) < 0)
        return -1;
    if (jload_parsed(t, &s, "password_file") && read_redis_password(c, r) < 0)
        return -1;
    r->enabled = jload_parsed(t, &s, "url");
    return 0;
}

static int parse_caller_assertion(struct jload *c, const json_t *v, void *obj)
{
    struct cfg_upstream *up = obj;
    if (!json_is_boolean(v)) {
        jload_err(c, "expected true or false, got %s", jload_type_words(v));
        return -1;
    }
    up->caller_assertion = json_is_true(v);
    up->caller_assertion_set = true;
    return 0;
}

static int parse_assertion(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct cfg_assertion *a = &cfg->assertion;
    struct jload_seen s;

    jload_defaults(assertion_fields, a, c->dir);
    if (jload_object(c, v, assertion_fields, a, &s) < 0)
        return -1;
    /* previous keys are files: resolved like every path of the config */
    for (size_t k = 0; k < a->n_previous_keys; k++) {
        char *r = jload_resolve(c->dir, a->previous_keys[k]);
        free(a->previous_keys[k]);
        a->previous_keys[k] = r;
    }
    for (size_t k = 0; a->signing_key && k < a->n_previous_keys; k++)
        if (!strcmp(a->signing_key, a->previous_keys[k])) {
            jload_push_key(c, "previous_keys");
            jload_push_idx(c, k);
            jload_err(c, "the signing key cannot also be a previous key");
            jload_pop(c);
            jload_pop(c);
        }
    a->enabled = true;
    return 0;
}

static const struct jload_field tracing_fields[] = {
    JL_STR("otlp_endpoint", struct cfg_tracing, otlp_endpoint, NULL, check_google_url, JL_REQUIRED),
    JL_INT("max_queue_size", struct cfg_tracing, max_queue_size, 16, 65536, 2048),
    JL_INT("max_export_batch_size", struct cfg_tracing, max_export_batch_size, 1, 8192, 512),
    JL_INT("schedule_delay_ms", struct cfg_tracing, schedule_delay_ms, 10, 60000, 5000),
    JL_INT("export_timeout_ms", struct cfg_tracing, export_timeout_ms, 100, 60000, 10000),
    {0},
};

/* tracing: {"otlp_endpoint": URL, ...} (otlp.h) */
static int parse_tracing(struct jload *c, const json_t *v, void *obj)
{
    struct baton_config *cfg = obj;
    struct jload_seen s;
    int rc;
    jload_defaults(tracing_fields, &cfg->tracing, c->dir);
    cfg->tracing.enabled = true;
    rc = jload_object(c, v, tracing_fields, &cfg->tracing, &s);
    if (rc == 0 && cfg->tracing.max_export_batch_size > cfg->tracing.max_queue_size) {
        jload_err_at(c, "max_export_batch_size", true,
                     "\"max_export_batch_size\" must not exceed \"max_queue_size\"");
        rc = -1;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

static void defaults(struct baton_config *cfg)
{
    const char *mh = getenv("GCE_METADATA_HOST");
    jload_defaults(root_fields, cfg, cfg->dir);
    cfg->listen.host = xstrdup("0.0.0.0");
    cfg->listen.port = 8080;
    cfg->admin_listen.host = xstrdup("127.0.0.1");
    cfg->admin_listen.port = 9090;
    cfg->admin_enabled = true;
    jload_defaults(limits_fields, &cfg->limits, cfg->dir);
    jload_defaults(google_fields, &cfg->google, cfg->dir);
    cfg->google.source = GOOGLE_METADATA;
    cfg->google.metadata_host = xstrdup(mh && *mh ? mh : "metadata.google.internal");
    jload_defaults(audit_fields, &cfg->audit, cfg->dir);
    cfg->audit.rotate_bytes = 0;
}

static bool wildcard(const char *host)
{
    return !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
}

static void root_post(struct jload *c, struct baton_config *cfg, const struct jload_seen *s)
{
    const struct jload_field *t = root_fields;
    /* caller_assertion defaults to whether "assertion" is configured */
    for (size_t k = 0; k < cfg->n_upstreams; k++) {
        struct cfg_upstream *up = &cfg->upstreams[k];
        if (!up->caller_assertion_set) {
            up->caller_assertion = cfg->assertion.enabled;
        } else if (up->caller_assertion && !cfg->assertion.enabled) {
            jload_push_key(c, "upstreams");
            jload_push_idx(c, k);
            jload_err_at(
                c, "caller_assertion", true,
                "\"caller_assertion\" needs the top-level \"assertion\" object (issuer, keys)");
            jload_pop(c);
            jload_pop(c);
        }
    }
    if (cfg->admin_enabled &&
        (jload_parsed(t, s, "admin_listen") || jload_parsed(t, s, "listen")) &&
        cfg->admin_listen.port == cfg->listen.port &&
        (!strcmp(cfg->admin_listen.host, cfg->listen.host) || wildcard(cfg->admin_listen.host) ||
         wildcard(cfg->listen.host))) {
        jload_err_at(c, jload_has(t, s, "admin_listen") ? "admin_listen" : "listen", false,
                     "admin_listen and listen would bind the same port %d", cfg->listen.port);
    }
    /* the bucket witness uploads with baton's own access token */
    if (cfg->audit.witness_bucket && cfg->google.source == GOOGLE_LOCAL)
        jload_err_at(c, "audit", true,
                     "a witness bucket needs Google credentials \"metadata\" or "
                     "{\"service_account_key\": PATH} (\"local\" has no access token)");
}

static char *dir_of(const char *file)
{
    const char *slash = strrchr(file, '/');
    if (!slash)
        return xstrdup(".");
    if (slash == file)
        return xstrdup("/");
    return xstrndup(file, (size_t)(slash - file));
}

struct baton_config *config_load_buffer(const char *text, size_t len, const char *name,
                                        struct diags *d)
{
    struct baton_config *cfg = NULL;
    struct jload c;
    json_t *root = NULL;
    struct jload_seen s;
    size_t first = d->n;

    if (!name)
        name = "-";
    jload_init(&c, name, NULL, NULL, 0, d);
    if (len > CONFIG_MAX_BYTES) {
        diags_add(d, name, 0, 0, "file is larger than %u bytes", CONFIG_MAX_BYTES);
        goto out;
    }
    cfg = xcalloc(1, sizeof(*cfg));
    cfg->file = xstrdup(name);
    cfg->dir = dir_of(name);
    cfg->text = xmalloc(len + 1);
    if (len)
        memcpy(cfg->text, text, len);
    cfg->text[len] = '\0';
    cfg->text_len = len;
    jload_init(&c, name, cfg->dir, cfg->text, len, d);
    if (!(root = jload_parse(&c, CONFIG_MAX_DEPTH)))
        goto out;
    defaults(cfg);
    if (!json_is_object(root)) {
        jload_err(&c, "the configuration must be a JSON object, got %s", jload_type_words(root));
        goto out;
    }
    if (jload_object(&c, root, root_fields, cfg, &s) == 0)
        root_post(&c, cfg, &s);
out:
    jload_finish(&c);
    json_decref(root);
    if (d->n > first) {
        config_free(cfg);
        cfg = NULL;
    }
    return cfg;
}

struct baton_config *config_load(const char *path, struct diags *d)
{
    struct baton_config *cfg = NULL;
    char *text = NULL;
    size_t len = 0;

    if (!path) {
        diags_add(d, "-", 0, 0, "no configuration file named");
        goto out;
    }
    if (read_file_capped(path, CONFIG_MAX_BYTES, &text, &len) < 0) {
        if (errno == EFBIG)
            diags_add(d, path, 0, 0, "file is larger than %u bytes", CONFIG_MAX_BYTES);
        else
            diags_add(d, path, 0, 0, "cannot read: %s", strerror(errno));
        goto out;
    }
    cfg = config_load_buffer(text, len, path, d);
out:
    free(text);
    return cfg;
}

void config_free(struct baton_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->file);
    free(cfg->dir);
    free(cfg->text);
    free(cfg->listen.host);
    free(cfg->admin_listen.host);
    free(cfg->trusted_proxies);
    for (size_t k = 0; k < cfg->n_issuers; k++)
        free_issuer(&cfg->issuers[k]);
    free(cfg->issuers);
    free(cfg->google.service_account_key);
    free(cfg->google.metadata_host);
    free(cfg->google.token_uri);
    free(cfg->google.iamcredentials_url);
    free(cfg->google.local_key);
    free(cfg->google.local_issuer);
    for (size_t k = 0; k < cfg->n_upstreams; k++)
        free_upstream(&cfg->upstreams[k]);
    free(cfg->upstreams);
    free(cfg->policies);
    free(cfg->audit.path);
    free(cfg->audit.signing_key);
    for (size_t k = 0; k < cfg->audit.n_record_headers; k++)
        free(cfg->audit.record_headers[k]);
    free(cfg->audit.record_headers);
    free(cfg->audit.witness_dir);
    free(cfg->audit.witness_bucket);
    free(cfg->audit.witness_prefix);
    free(cfg->audit.witness_storage_url);
    free(cfg->health_path);
    for (size_t k = 0; k < cfg->url_signing.n_keys; k++) {
        free(cfg->url_signing.keys[k].id);
        free(cfg->url_signing.keys[k].file);
    }
    free(cfg->url_signing.keys);
    free(cfg->redis.url);
    free(cfg->redis.host);
    free(cfg->redis.unix_path);
    free(cfg->redis.password_file);
    if (cfg->redis.password) {
        explicit_bzero(cfg->redis.password, strlen(cfg->redis.password));
        free(cfg->redis.password);
    }
    free(cfg->assertion.issuer);
    free(cfg->assertion.signing_key);
    free(cfg->assertion.header);
    for (size_t k = 0; k < cfg->assertion.n_previous_keys; k++)
        free(cfg->assertion.previous_keys[k]);
    free(cfg->assertion.previous_keys);
    free(cfg->tracing.otlp_endpoint);
    free(cfg);
}

void config_diag(const struct baton_config *cfg, struct diags *d, const char *path, bool at_key,
                 const char *fmt, ...)
{
    struct jsonpos pos = {0, 0, 0};
    va_list ap;
    char *msg;

    if (!cfg->text || !path || jsonpos_find(cfg->text, cfg->text_len, path, at_key, &pos) < 0)
        pos.line = pos.col = 0;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    diags_add(d, cfg->file, pos.line, pos.col, "%s", msg);
    free(msg);
}

const char *config_path_choose(const char *flag)
{
    const char *env;
    if (flag)
        return flag;
    env = getenv("BATON_CONFIG");
    if (env && *env)
        return env;
    return CONFIG_DEFAULT_PATH;
}

const struct cfg_issuer *config_issuer(const struct baton_config *cfg, const char *name)
{
    for (size_t k = 0; name && k < cfg->n_issuers; k++)
        if (cfg->issuers[k].name && !strcmp(cfg->issuers[k].name, name))
            return &cfg->issuers[k];
    return NULL;
}

const struct cfg_issuer *config_issuer_by_iss(const struct baton_config *cfg, const char *iss,
                                              size_t len)
{
    for (size_t k = 0; iss && k < cfg->n_issuers; k++) {
        const char *v = cfg->issuers[k].issuer;
        if (v && strlen(v) == len && !memcmp(v, iss, len))
            return &cfg->issuers[k];
    }
    return NULL;
}

const struct cfg_upstream *config_upstream(const struct baton_config *cfg, const char *name)
{
    for (size_t k = 0; name && k < cfg->n_upstreams; k++)
        if (cfg->upstreams[k].name && !strcmp(cfg->upstreams[k].name, name))
            return &cfg->upstreams[k];
    return NULL;
}

static bool prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, net, (size_t)whole) != 0)
        return false;
    if (rest) {
        unsigned char mask = (unsigned char)(0xFF << (8 - rest));
        return (a[whole] & mask) == net[whole];
    }
    return true;
}

bool config_is_trusted_proxy(const struct baton_config *cfg, const struct sockaddr *sa)
{
    unsigned char addr[16];
    int family;

    if (!cfg || !sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        memcpy(addr, &in->sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) { /* a dual-stack socket's IPv4 peer */
            memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
            family = AF_INET;
        } else {
            memcpy(addr, in6->sin6_addr.s6_addr, 16);
            family = AF_INET6;
        }
    } else {
        return false;
    }
    for (size_t k = 0; k < cfg->n_trusted_proxies; k++) {
        const struct cfg_cidr *n = &cfg->trusted_proxies[k];
        if (n->family == family && prefix_match(addr, n->addr, n->bits))
            return true;
    }
    return false;
}

const struct jload_table *config_tables(size_t *n)
{
    static const struct jload_table tables[] = {
        {"", root_fields},
        {"limits.", limits_fields},
        {"issuers[].", issuer_fields},
        {"google.", google_fields},
        {"google.credentials.", sa_key_fields},
        {"upstreams[].", upstream_fields},
        {"audit.", audit_fields},
        {"audit.witness.", witness_fields},
        {"url_signing.", url_signing_fields},
        {"url_signing.keys[].", url_key_fields},
        {"redis.", redis_fields},
        {"assertion.", assertion_fields},
        {"tracing.", tracing_fields},
    };
    *n = sizeof(tables) / sizeof(tables[0]);
    return tables;
}
