/*
 * config.h: the main configuration (docs/spec.md "Main config"), loaded strictly.
 *
 * `config_load` parses the JSON file with jansson (duplicate keys rejected),
 * checks every key against a table of name, type, range and default, and
 * reports every problem as file:line:column into a `struct diags`. The result is
 * immutable once loaded: the server shares it read-only between workers and
 * replaces it whole on SIGHUP. Relative paths are already resolved against the
 * config file's directory.
 *
 * Fields below marked "extension" are not in docs/spec.md's sample; README documents
 * them. Every key docs/spec.md names is here, with the same name. Each key's
 * default and range is written once, in config.c's tables (README's
 * "Main configuration" table is held to them by tests/unit/test_config.c), not
 * in the comments below.
 */
#ifndef BATON_CONFIG_H
#define BATON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diag.h"
#include "jws.h" /* enum jws_alg: cfg_issuer.algorithms */

#define CONFIG_DEFAULT_PATH "/etc/baton/baton.json"

struct cfg_cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order, masked */
    int bits;
};

struct cfg_addr {
    char *host; /* owned; "0.0.0.0", "127.0.0.1", "::" ... */
    int port;
};

struct cfg_limits {
    size_t max_header_bytes;
    size_t max_uri_bytes;
    uint64_t max_body_bytes;
    unsigned header_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned max_connections;
    unsigned body_timeout_ms; /* the whole request body */
};

enum cfg_key_source { KEYS_DISCOVERY, KEYS_JWKS_URI, KEYS_JWKS_FILE };

struct cfg_issuer {
    char *name;   /* local name policies refer to ("aws") */
    char *issuer; /* exact `iss` value */
    enum cfg_key_source key_source;
    char *jwks_uri;  /* KEYS_JWKS_URI, or filled from discovery at run time: NULL here */
    char *jwks_file; /* KEYS_JWKS_FILE, resolved path */
    char **audiences;
    size_t n_audiences;
    char *audience_claim; /* "aud" (default) or "client_id" */
    unsigned algorithms;  /* bitmask of 1u << enum jws_alg; default RS256|ES256 */
    char **token_types;   /* allowed `typ`; absent typ always accepted */
    size_t
        n_token_types; /* key absent: filled with the default ["JWT", "at+jwt"]; [] given: 0, only tokens without typ */
    int leeway_s;
    /* extensions */
    char *token_use;        /* "access" or "id": Cognito `token_use` required; NULL: not checked */
    bool allow_missing_kid; /* default false: a token without kid fails */
    bool allow_http;        /* default false: plain http only to loopback, for tests */
    unsigned refresh_min_s; /* floor of the refresh schedule */
    unsigned refresh_max_s; /* ceiling, at least refresh_min_s */
    unsigned fetch_timeout_ms;
    size_t max_token_bytes;
};

enum cfg_google_source { GOOGLE_METADATA, GOOGLE_SA_KEY, GOOGLE_LOCAL };

struct cfg_google {
    enum cfg_google_source source; /* "credentials": "metadata" | "local", or service_account_key */
    char *service_account_key;     /* resolved path, GOOGLE_SA_KEY */
    /* extensions: endpoints overridable for tests and private endpoints */
    char *metadata_host;      /* default $GCE_METADATA_HOST, then "metadata.google.internal" */
    char *token_uri;          /* overrides the key file's token_uri when set */
    char *iamcredentials_url; /* default "https://iamcredentials.googleapis.com" */
    char *local_key;          /* GOOGLE_LOCAL: PEM private key path; NULL: generated at start */
    char *local_issuer; /* GOOGLE_LOCAL: iss of minted tokens, default "https://baton.local" */
    unsigned token_lifetime_s; /* GOOGLE_LOCAL lifetime */
    unsigned timeout_ms;       /* per call to Google */
};

enum cfg_identity { IDENTITY_GOOGLE, IDENTITY_NONE };

struct cfg_upstream {
    char *name;
    char *url;                  /* as written */
    char *audience;             /* default: the URL's origin */
    char *token_header;         /* "authorization" (default) | "x-serverless-authorization" */
    enum cfg_identity identity; /* default google */
    unsigned timeout_ms;
    /* parsed from url */
    bool tls;
    char *host;      /* owned; lower case, an IPv6 literal without brackets */
    int port;        /* 443 / 80 default */
    char *base_path; /* owned; "" or "/prefix" without trailing slash */
    /* extension: the signed caller assertion (README "Caller assertion") */
    bool caller_assertion; /* effective: "caller_assertion", default true when "assertion" is set */
    bool caller_assertion_set;   /* the key was given */
    unsigned resolve_interval_s; /* address refresh (resolve.h) */
};

/* FSYNC_GROUP: written and fsynced as batch, but each response waits for its
 * record's group fsync, as with always (docs/audit.md "What a crash can lose"). */
enum cfg_fsync { FSYNC_ALWAYS, FSYNC_BATCH, FSYNC_NONE, FSYNC_GROUP };
enum cfg_on_failure { ON_FAILURE_DENY, ON_FAILURE_ALLOW };

struct cfg_audit {
    char *path;                     /* resolved; "-" for stdout */
    enum cfg_fsync fsync;           /* default batch */
    enum cfg_on_failure on_failure; /* default deny */
    char *signing_key;              /* resolved path or NULL: no checkpoints */
    char **record_headers;
    size_t n_record_headers;
    /* extensions */
    uint64_t rotate_bytes; /* 0: never by size */
    unsigned batch_ms;     /* group commit interval */
    unsigned checkpoint_records;
    unsigned checkpoint_interval_s;
    unsigned queue_records;
    /* audit.witness: where the open record and checkpoints are also written,
     * create-only; at most one of dir and bucket (docs/audit.md "Witness") */
    char *witness_dir;         /* resolved path of an existing directory, or NULL */
    char *witness_bucket;      /* bucket name (from "gs://BUCKET/PREFIX"), or NULL */
    char *witness_prefix;      /* object name prefix without slashes at either end, "" */
    char *witness_storage_url; /* "https://storage.googleapis.com" unless overridden */
};

/* url_signing (extension; signurl.h): keys of signed URLs. */
struct cfg_url_key {
    char *id;   /* [A-Za-z0-9._-]{1,32}, unique */
    char *file; /* resolved path of an Ed25519 PEM private key, mode 0600 */
};

struct cfg_url_signing {
    bool enabled;             /* the key is present */
    struct cfg_url_key *keys; /* 1..16; the first signs, all verify */
    size_t n_keys;
    unsigned max_ttl_s; /* no link lives longer */
    unsigned leeway_s;  /* clock skew allowed past a link's expiry */
};

/* Extension: the store of steps whose limits.rate_scope is "global" (README
 * "Shared limits on Redis"). on_failure: what a global step does when Redis
 * cannot answer within timeout_ms. */
enum cfg_redis_failure { REDIS_FAIL_LOCAL, REDIS_FAIL_DENY, REDIS_FAIL_ALLOW };

#define CONFIG_REDIS_PASSWORD_MAX 512 /* bytes of password_file */

struct cfg_redis {
    bool enabled;    /* the "redis" key is present */
    char *url;       /* as written */
    char *host;      /* "redis://": an IP literal (no name is resolved on a worker); else NULL */
    int port;        /* 6379 by default */
    char *unix_path; /* "unix:///path": the socket path; else NULL */
    int db;          /* "/DB" of a redis:// URL, 0 by default */
    char *password_file; /* resolved path, or NULL: no AUTH */
    char *password;      /* its bytes without a trailing newline, owned; NULL: no AUTH */
    unsigned timeout_ms; /* the longest a request waits on Redis */
    enum cfg_redis_failure on_failure; /* "local" (default), "deny" or "allow" */
};

/* Extension: the caller assertion baton signs for upstreams (README "Caller
 * assertion"). `enabled` when the "assertion" object is present. */
struct cfg_assertion {
    bool enabled;
    char *issuer;      /* required: the assertion's `iss` */
    char *signing_key; /* resolved path of an EC P-256 PEM private key; NULL: generated at start */
    unsigned lifetime_s;
    char *header; /* "x-baton-assertion"; never hop-by-hop, framing or one baton sets */
    char *
        *previous_keys; /* resolved paths of EC P-256 public PEMs: published, never used to sign */
    size_t n_previous_keys;
};
#define CONFIG_MAX_PREVIOUS_KEYS 8

/* tracing (extension; otlp.h): span export as OTLP/HTTP JSON. The bounds
 * follow the OpenTelemetry batch span processor's (OTEL_BSP_*). */
struct cfg_tracing {
    bool enabled;                   /* the key is present */
    char *otlp_endpoint;            /* required: http(s) base URL; spans go to {it}/v1/traces */
    unsigned max_queue_size;        /* requests whose spans wait */
    unsigned max_export_batch_size; /* requests per POST, <= max_queue_size */
    unsigned schedule_delay_ms;     /* longest a span waits for a batch */
    unsigned export_timeout_ms;     /* one POST */
};

struct baton_config {
    char *file; /* path as given, owned */
    char *dir;  /* its directory, owned: base of relative paths */
    char *text; /* file bytes, owned: kept for positions of late errors */
    size_t text_len;
    struct cfg_addr listen;       /* "0.0.0.0:8080"; $PORT overrides the port */
    struct cfg_addr admin_listen; /* "127.0.0.1:9090" */
    bool admin_enabled;           /* false when admin_listen is "" */
    int workers;                  /* 0: one per CPU */
    struct cfg_cidr *trusted_proxies;
    size_t n_trusted_proxies;
    struct cfg_limits limits;
    struct cfg_issuer *issuers;
    size_t n_issuers;
    struct cfg_google google;
    struct cfg_upstream *upstreams;
    size_t n_upstreams;
    char *policies; /* resolved directory, default "<dir>/policies" */
    struct cfg_audit audit;
    /* extensions */
    unsigned drain_ms;         /* "drain_timeout_ms" */
    bool access_log;           /* "access_log" (server), default false: one INFO line per request
                          (httpRequest, trace) on stderr; off by default because a log
                          line per request costs more than the rest of a cache-hit request */
    unsigned ready_timeout_ms; /* "ready_timeout_ms": the serving
                                  port stays closed until ready or this long after start */
    char *health_path;         /* "health_path", NULL: none; else GET answers like /readyz
                                  on the serving port */
    struct cfg_url_signing url_signing; /* "url_signing" (ext.): signed URLs */
    struct cfg_redis redis;             /* "redis", optional */
    struct cfg_assertion assertion;     /* "assertion" */
    struct cfg_tracing tracing;         /* "tracing" (ext.): OTLP span export */
};

/*
 * Loads `path`. Returns an owned config, or NULL with every error added to `d`.
 * Warnings do not exist: what is wrong is an error.
 */
struct baton_config *config_load(const char *path, struct diags *d);
/*
 * The same from bytes already in memory (`text`, `len` bytes, borrowed and
 * copied; no NUL needed). `name` is the file name errors carry and whose
 * directory relative paths resolve against. config_load reads the file
 * (at most CONFIG_MAX_BYTES) and calls this.
 */
struct baton_config *config_load_buffer(const char *text, size_t len, const char *name,
                                        struct diags *d);
void config_free(struct baton_config *cfg);

/* Added by config: caps of config_load (README documents them). */
#define CONFIG_MAX_BYTES (1u << 20) /* file size */
#define CONFIG_MAX_DEPTH 16         /* JSON nesting of containers */
#define CONFIG_MAX_ERRORS 100       /* errors reported before giving up */

/*
 * Added by config: for errors found after loading (a JWKS file that does not
 * parse, say), adds a diagnostic positioned at `path` in cfg's file, a JSON
 * pointer without the leading slash as in jsonpos.h ("issuers/0/jwks_file");
 * `at_key` points at the member name instead of its value. Line 0 when the
 * path is not in the file (a default).
 */
void config_diag(const struct baton_config *cfg, struct diags *d, const char *path, bool at_key,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * The one rule for which request headers an audit record may carry: a name
 * that suggests a credential (it contains auth, token, secret, key, cookie,
 * session, password, passwd, credential, signature, assertion, jwt, bearer,
 * csrf, xsrf, oidc or private, in any case: Authorization, Cookie, X-Api-Key,
 * X-Amz-Security-Token, ...) is refused in audit.record_headers at load, and
 * never recorded by the audit module.
 */
bool config_header_is_secret(const char *name, size_t len);
#define CONFIG_MAX_RECORD_HEADERS 32 /* audit.record_headers: keeps a record under its line cap */

/* Which file to load: `-c` wins, then $BATON_CONFIG, then CONFIG_DEFAULT_PATH. */
const char *config_path_choose(const char *flag);

/* Lookups by name; NULL when absent. Borrowed, valid while cfg lives. */
const struct cfg_issuer *config_issuer(const struct baton_config *cfg, const char *name);
const struct cfg_issuer *config_issuer_by_iss(const struct baton_config *cfg, const char *iss,
                                              size_t len);
const struct cfg_upstream *config_upstream(const struct baton_config *cfg, const char *name);

/* True when the address (AF_INET/AF_INET6 sockaddr) is within trusted_proxies. */
struct sockaddr;
bool config_is_trusted_proxy(const struct baton_config *cfg, const struct sockaddr *sa);

/* Added by config: every key table with the JSON path prefix README's
 * "Main configuration" table gives its keys (jload.h); static. The test that
 * holds README's table to the code reads them. */
struct jload_table;
const struct jload_table *config_tables(size_t *n);

#endif
