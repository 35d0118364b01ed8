/*
 * Unit tests of config.c: every key's type and range (both boundaries),
 * defaults, unknown and duplicate keys at every level, every cross-reference
 * rule, exact file:line:column of errors, path resolution, CIDR matching, URL
 * parsing, the sample conf/baton.json, and a file with many errors at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"
#include "util.h"
#include "tap.h"
#include "readme_tables.h"

#define FILE_NAME "/etc/baton/baton.json"

static struct baton_config *load(const char *text, struct diags *d)
{
    return config_load_buffer(text, strlen(text), FILE_NAME, d);
}

/* All diagnostics as "line:col: msg\n" lines (owned). */
static char *render(const struct diags *d)
{
    char *out = xstrdup("");
    for (size_t k = 0; k < d->n; k++) {
        char *next = xasprintf("%s%d:%d: %s\n", out, d->v[k].line, d->v[k].col, d->v[k].msg);
        free(out);
        out = next;
    }
    return out;
}

/*
 * Loads text expecting it to fail with an error whose message contains
 * `want` at line:col (line 0: any position). Prints what it got otherwise.
 */
static void fails(const char *text, int line, int col, const char *want, const char *name)
{
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = load(text, &d);
    bool hit = false;
    for (size_t k = 0; k < d.n; k++)
        if (strstr(d.v[k].msg, want) && (line == 0 || (d.v[k].line == line && d.v[k].col == col)))
            hit = true;
    if (!ok(cfg == NULL && hit, "%s", name)) {
        char *all = render(&d);
        tap_diag("  want %d:%d \"%s\"; got:\n%s", line, col, want, all);
        free(all);
    }
    config_free(cfg);
    diags_free(&d);
}

/* Loads text expecting success; returns the config (caller frees) or NULL. */
static struct baton_config *loads(const char *text, const char *name)
{
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = load(text, &d);
    if (!ok(cfg != NULL && d.n == 0, "%s", name)) {
        char *all = render(&d);
        tap_diag("  errors:\n%s", all);
        free(all);
    }
    diags_free(&d);
    return cfg;
}

/*
 * A valid config with one member added to one section. Line layout (fixed,
 * so positions in tests are known):
 *   1 {
 *   2 "issuers": [{"name": "aws", "issuer": "https://iss.example", KS"audiences": ["https://gw.example"]ISS}],
 *   3 "upstreams": [{"name": "billing", "url": "https://billing.example"UP}],
 *   4 "limits": {LIM},
 *   5 "google": {GOO},
 *   6 "audit": {AUD}ROOT
 *   7 }
 * KS is the key source, "jwks_file": "keys/aws.json", unless the section is
 * "issuer_nokeys".
 */
static char *with(const char *section, const char *member)
{
    const char *ks = "\"jwks_file\": \"keys/aws.json\", ";
    const char *iss = "", *up = "", *lim = "", *goo = "", *aud = "", *root = "";
    char *pre = xasprintf(", %s", member);
    if (!strcmp(section, "issuer"))
        iss = pre;
    else if (!strcmp(section, "issuer_nokeys"))
        iss = pre, ks = "";
    else if (!strcmp(section, "upstream"))
        up = pre;
    else if (!strcmp(section, "limits"))
        lim = member;
    else if (!strcmp(section, "google"))
        goo = member;
    else if (!strcmp(section, "google_local"))
        goo = xasprintf("\"credentials\": \"local\", %s", member);
    else if (!strcmp(section, "audit"))
        aud = member;
    else if (!strcmp(section, "root"))
        root = pre;
    char *text = xasprintf(
        "{\n"
        "\"issuers\": [{\"name\": \"aws\", \"issuer\": \"https://iss.example\", %s"
        "\"audiences\": [\"https://gw.example\"]%s}],\n"
        "\"upstreams\": [{\"name\": \"billing\", \"url\": \"https://billing.example\"%s}],\n"
        "\"limits\": {%s},\n"
        "\"google\": {%s},\n"
        "\"audit\": {%s}%s\n"
        "}\n",
        ks, iss, up, lim, goo, aud, root);
    if (!strcmp(section, "google_local"))
        free((char *)goo);
    free(pre);
    return text;
}

static void fails_with(const char *section, const char *member, const char *want, const char *name)
{
    char *t = with(section, member);
    fails(t, 0, 0, want, name);
    free(t);
}

static struct baton_config *loads_with(const char *section, const char *member, const char *name)
{
    char *t = with(section, member);
    struct baton_config *cfg = loads(t, name);
    free(t);
    return cfg;
}

static const char *MINIMAL =
    "{\"issuers\": [{\"name\": \"aws\", \"issuer\": \"https://iss.example\", "
    "\"discovery\": true, \"audiences\": [\"x\"]}],"
    " \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u.example\"}]}";

static void test_defaults(void)
{
    struct baton_config *cfg = loads(MINIMAL, "a minimal config (one issuer, one upstream) loads");
    if (!cfg)
        return;
    is_str(cfg->listen.host, "0.0.0.0", "listen host defaults to 0.0.0.0");
    is_int(cfg->listen.port, 8080, "listen port defaults to 8080");
    is_str(cfg->admin_listen.host, "127.0.0.1", "admin_listen host defaults to 127.0.0.1");
    is_int(cfg->admin_listen.port, 9090, "admin_listen port defaults to 9090");
    ok(cfg->admin_enabled, "the admin listener is enabled by default");
    is_int(cfg->workers, 0, "workers defaults to 0 (one per CPU)");
    is_int(cfg->n_trusted_proxies, 0, "no trusted proxies by default");
    is_int(cfg->limits.max_header_bytes, 16384, "limits.max_header_bytes default");
    is_int(cfg->limits.max_uri_bytes, 8192, "limits.max_uri_bytes default");
    is_int(cfg->limits.max_body_bytes, 33554432, "limits.max_body_bytes default");
    is_int(cfg->limits.header_timeout_ms, 10000, "limits.header_timeout_ms default");
    is_int(cfg->limits.idle_timeout_ms, 60000, "limits.idle_timeout_ms default");
    is_int(cfg->limits.max_connections, 10000, "limits.max_connections default");
    const struct cfg_issuer *i = &cfg->issuers[0];
    is_int(i->key_source, KEYS_DISCOVERY, "discovery: true selects KEYS_DISCOVERY");
    ok(i->jwks_uri == NULL && i->jwks_file == NULL, "discovery leaves jwks_uri and jwks_file NULL");
    is_str(i->audience_claim, "aud", "audience_claim defaults to aud");
    is_int(i->algorithms, 1u << JWS_RS256 | 1u << JWS_ES256,
           "algorithms default to RS256 and ES256");
    ok(i->n_token_types == 2 && !strcmp(i->token_types[0], "JWT") &&
           !strcmp(i->token_types[1], "at+jwt"),
       "token_types default to JWT and at+jwt");
    is_int(i->leeway_s, 60, "leeway_s defaults to 60");
    ok(i->token_use == NULL, "token_use is not checked by default");
    ok(!i->allow_missing_kid && !i->allow_http,
       "allow_missing_kid and allow_http default to false");
    is_int(i->refresh_min_s, 60, "refresh_min_s default");
    is_int(i->refresh_max_s, 3600, "refresh_max_s default");
    is_int(i->fetch_timeout_ms, 5000, "fetch_timeout_ms default");
    is_int(i->max_token_bytes, 16384, "max_token_bytes default");
    is_int(cfg->google.source, GOOGLE_METADATA, "google credentials default to metadata");
    const char *mh = getenv("GCE_METADATA_HOST");
    is_str(cfg->google.metadata_host, mh && *mh ? mh : "metadata.google.internal",
           "metadata_host defaults to $GCE_METADATA_HOST, then metadata.google.internal");
    is_str(cfg->google.iamcredentials_url, "https://iamcredentials.googleapis.com",
           "iamcredentials_url default");
    is_str(cfg->google.local_issuer, "https://baton.local", "local_issuer default");
    ok(cfg->google.token_uri == NULL && cfg->google.local_key == NULL &&
           cfg->google.service_account_key == NULL,
       "token_uri, local_key and service_account_key are unset by default");
    is_int(cfg->google.token_lifetime_s, 3600, "token_lifetime_s default");
    is_int(cfg->google.timeout_ms, 5000, "google timeout_ms default");
    const struct cfg_upstream *u = &cfg->upstreams[0];
    is_str(u->audience, "https://u.example", "upstream audience defaults to the URL's origin");
    is_str(u->token_header, "authorization", "token_header defaults to authorization");
    is_int(u->identity, IDENTITY_GOOGLE, "identity defaults to google");
    is_int(u->timeout_ms, 60000, "upstream timeout_ms default");
    is_str(cfg->policies, "/etc/baton/policies", "policies defaults to <config dir>/policies");
    is_str(cfg->audit.path, "-", "audit path defaults to - (stdout)");
    is_int(cfg->audit.fsync, FSYNC_BATCH, "audit fsync defaults to batch");
    is_int(cfg->audit.on_failure, ON_FAILURE_DENY, "audit on_failure defaults to deny");
    ok(cfg->audit.signing_key == NULL && cfg->audit.n_record_headers == 0,
       "no signing key and no recorded headers by default");
    is_int(cfg->audit.rotate_bytes, 0, "rotate_bytes defaults to 0 (never)");
    is_int(cfg->audit.batch_ms, 10, "batch_ms default");
    is_int(cfg->audit.checkpoint_records, 1000, "checkpoint_records default");
    is_int(cfg->audit.checkpoint_interval_s, 60, "checkpoint_interval_s default");
    is_int(cfg->audit.queue_records, 65536, "queue_records default");
    is_int(cfg->drain_ms, 8000, "drain_timeout_ms defaults to 8000");
    ok(!cfg->access_log, "access_log defaults to false");
    is_int(cfg->ready_timeout_ms, 30000,
           "ready_timeout_ms defaults to 30000 (inside Cloud Run's 240 s probe)");
    ok(!cfg->health_path, "health_path defaults to none");
    is_str(cfg->file, FILE_NAME, "the config keeps its file name");
    is_str(cfg->dir, "/etc/baton", "and its directory");
    ok(cfg->text && cfg->text_len == strlen(MINIMAL) && !strcmp(cfg->text, MINIMAL),
       "and its text");
    config_free(cfg);
}

/* Integer keys: both boundaries accepted, one past each refused, wrong types refused. */
static const struct {
    const char *section, *key;
    long long min, max;
} ranges[] = {
    {"root", "workers", 0, 256},
    {"root", "drain_timeout_ms", 0, 600000},
    {"limits", "max_header_bytes", 1024, 1048576},
    {"limits", "max_uri_bytes", 256, 65536},
    {"limits", "max_body_bytes", 0, 1LL << 40},
    {"limits", "header_timeout_ms", 100, 600000},
    {"limits", "idle_timeout_ms", 100, 3600000},
    {"limits", "max_connections", 1, 1000000},
    {"issuer", "leeway_s", 0, 600},
    {"issuer", "refresh_min_s", 1, 86400},
    {"issuer", "fetch_timeout_ms", 100, 60000},
    {"issuer", "max_token_bytes", 512, 1048576},
    {"google_local", "token_lifetime_s", 60, 43200},
    {"google", "timeout_ms", 100, 60000},
    {"upstream", "timeout_ms", 1, 3600000},
    {"audit", "batch_ms", 1, 1000},
    {"audit", "checkpoint_records", 1, 10000000},
    {"audit", "checkpoint_interval_s", 1, 86400},
    {"audit", "queue_records", 16, 16777216},
    {"root", "ready_timeout_ms", 0, 600000},
};

static void test_ranges(void)
{
    for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++) {
        const char *s = ranges[k].section, *key = ranges[k].key;
        char m[128], name[160], want[128];
        long long lo = ranges[k].min, hi = ranges[k].max;
        struct baton_config *cfg;

        snprintf(m, sizeof(m), "\"%s\": %lld", key, lo);
        snprintf(name, sizeof(name), "%s.%s accepts its minimum %lld", s, key, lo);
        config_free(loads_with(s, m, name));
        snprintf(m, sizeof(m), "\"%s\": %lld", key, hi);
        snprintf(name, sizeof(name), "%s.%s accepts its maximum %lld", s, key, hi);
        config_free(loads_with(s, m, name));
        snprintf(m, sizeof(m), "\"%s\": %lld", key, lo - 1);
        snprintf(want, sizeof(want), "%lld is out of range %lld..%lld", lo - 1, lo, hi);
        snprintf(name, sizeof(name), "%s.%s refuses %lld", s, key, lo - 1);
        fails_with(s, m, want, name);
        snprintf(m, sizeof(m), "\"%s\": %lld", key, hi + 1);
        snprintf(want, sizeof(want), "%lld is out of range", hi + 1);
        snprintf(name, sizeof(name), "%s.%s refuses %lld", s, key, hi + 1);
        fails_with(s, m, want, name);
        snprintf(m, sizeof(m), "\"%s\": \"%lld\"", key, lo);
        snprintf(name, sizeof(name), "%s.%s refuses a string", s, key);
        fails_with(s, m, "expected an integer, got a string", name);
        snprintf(m, sizeof(m), "\"%s\": %lld.5", key, lo);
        snprintf(name, sizeof(name), "%s.%s refuses a non-integer number", s, key);
        fails_with(s, m, "expected an integer, got a non-integer number", name);
        (void)cfg;
    }
    struct baton_config *cfg = loads_with("limits", "\"max_body_bytes\": 1099511627776",
                                          "max_body_bytes of 2^40 loads");
    if (cfg)
        ok(cfg->limits.max_body_bytes == (uint64_t)1 << 40, "max_body_bytes keeps all 41 bits");
    config_free(cfg);
    fails_with("root", "\"workers\": 99999999999999999999", "too big integer",
               "an integer beyond 64 bits is a JSON error");
    fails_with("root", "\"workers\": null", "expected an integer, got null",
               "null is not an integer");
}

static void test_types(void)
{
    fails_with("root", "\"listen\": 8080", "expected a string, got an integer",
               "listen must be a string");
    fails_with("root", "\"trusted_proxies\": \"10.0.0.0/8\"", "expected an array of CIDRs",
               "trusted_proxies must be an array");
    fails_with("root", "\"trusted_proxies\": [8]", "expected a string, got an integer",
               "trusted_proxies entries must be strings");
    fails_with("root", "\"limits\": []", "expected an object, got an array",
               "limits must be an object");
    fails_with("root", "\"policies\": false", "expected a string, got a boolean",
               "policies must be a string");
    fails_with("root", "\"policies\": \"\"", "must not be empty", "policies must not be empty");
    fails_with("issuer", "\"discovery\": \"yes\"", "expected true or false, got a string",
               "discovery must be a boolean");
    fails_with("issuer", "\"allow_missing_kid\": 1", "expected true or false",
               "allow_missing_kid must be a boolean");
    fails_with("issuer", "\"allow_http\": null", "expected true or false, got null",
               "allow_http must be a boolean");
    fails_with("issuer", "\"token_types\": \"JWT\"", "expected an array of strings",
               "token_types must be an array");
    fails_with("issuer", "\"token_types\": [\"JWT\", 1]", "expected a string, got an integer",
               "token_types entries must be strings");
    fails_with("issuer", "\"algorithms\": \"RS256\"", "expected an array of algorithm names",
               "algorithms must be an array");
    fails_with("issuer", "\"audience_claim\": \"sub\"",
               "\"sub\" is not one of \"aud\" or \"client_id\"",
               "audience_claim other than aud/client_id is refused");
    fails_with("issuer", "\"token_use\": \"refresh\"",
               "\"refresh\" is not one of \"access\" or \"id\"",
               "token_use other than access/id is refused");
    fails_with("upstream", "\"token_header\": \"x-auth\"", "is not one of \"authorization\" or",
               "token_header other than the two is refused");
    fails_with("upstream", "\"identity\": \"both\"",
               "\"both\" is not one of \"google\" or \"none\"",
               "identity other than google/none is refused");
    fails_with("audit", "\"fsync\": \"sometimes\"",
               "is not one of \"always\", \"batch\", \"none\" or \"group\"",
               "fsync other than always/batch/none/group is refused");
    fails_with("audit", "\"on_failure\": \"ignore\"", "is not one of \"deny\" or \"allow\"",
               "on_failure other than deny/allow is refused");
    fails_with("audit", "\"record_headers\": {}", "expected an array of strings, got an object",
               "record_headers must be an array");
    fails_with("audit", "\"rotate_bytes\": 100", "out of range: 0 (never) or 4096..",
               "rotate_bytes between 1 and 4095 is refused");
    fails_with("audit", "\"rotate_bytes\": \"1G\"", "expected an integer",
               "rotate_bytes must be an integer");
    fails_with("google", "\"credentials\": \"env\"",
               "\"env\" is not one of \"metadata\", \"local\"",
               "credentials other than metadata/local/object is refused");
    fails_with("google", "\"credentials\": 1",
               "expected \"metadata\", \"local\" or {\"service_account_key\"",
               "credentials must be a string or an object");
    fails_with("google", "\"credentials\": {}", "missing required key \"service_account_key\"",
               "the credentials object needs service_account_key");
    fails_with("root", "\"google\": \"metadata\"", "expected an object, got a string",
               "google must be an object");
    fails_with("root", "\"audit\": \"-\"", "expected an object, got a string",
               "audit must be an object");
    fails_with("issuer", "\"leeway_s\": true", "expected an integer, got a boolean",
               "leeway_s must be an integer");
    fails_with("upstream", "\"audience\": \"\"", "must not be empty",
               "an empty audience is refused");
    fails_with("upstream", "\"audience\": \"a\\u0001b\"", "control character",
               "a control character in a string is refused");

    struct baton_config *cfg = loads_with("issuer", "\"token_types\": []",
                                          "token_types: [] is allowed");
    if (cfg)
        is_int(cfg->issuers[0].n_token_types, 0, "token_types: [] means only tokens without typ");
    config_free(cfg);
    cfg = loads_with("upstream", "\"token_header\": \"X-Serverless-Authorization\"",
                     "token_header is matched without regard to case");
    if (cfg)
        is_str(cfg->upstreams[0].token_header, "x-serverless-authorization",
               "and stored in lower case");
    config_free(cfg);
    cfg = loads_with("audit", "\"rotate_bytes\": 4096", "rotate_bytes 4096 loads");
    config_free(cfg);
}

static void test_unknown_keys(void)
{
    /* the key itself is pointed at; line 2..6 per `with` */
    fails("{\"lisen\": \"0.0.0.0:1\", "
          "\"issuers\": [], \"upstreams\": []}",
          1, 2, "unknown key \"lisen\" (did you mean \"listen\"?)",
          "unknown top-level key, with a suggestion, at 1:2");
    fails_with("limits", "\"max_header\": 1", "limits: unknown key \"max_header\"",
               "unknown key in limits");
    fails_with("issuer", "\"audience\": \"x\"",
               "issuers[0]: unknown key \"audience\" (did you mean \"audiences\"?)",
               "unknown key in an issuer");
    fails_with("upstream", "\"urls\": \"x\"",
               "upstreams[0]: unknown key \"urls\" (did you mean \"url\"?)",
               "unknown key in an upstream");
    fails_with("google", "\"project\": \"p\"", "google: unknown key \"project\"",
               "unknown key in google");
    fails_with("google", "\"credentials\": {\"service_account_key\": \"k.json\", \"x\": 1}",
               "google.credentials: unknown key \"x\"", "unknown key in the credentials object");
    fails_with("audit", "\"sign_key\": \"k\"", "audit: unknown key \"sign_key\"",
               "unknown key in audit");
    char *t = with("limits", "\"zzz\": 1");
    fails(t, 4, 12, "unknown key \"zzz\"", "unknown key position is its opening quote (4:12)");
    free(t);
    fails_with("root", "\"we\\u0001ird\": 1", "unknown key \"we\\u0001ird\"",
               "an unknown key is quoted with control bytes escaped");
    fails("{\"issuers\": 1,\n \"\": 2}", 2, 2, "unknown key \"\"",
          "an unknown empty key at the top level is pointed at");
    fails("{\"limits\": {\"a/b~\": 1}}", 1, 13, "limits: unknown key \"a/b~\"",
          "an unknown key holding / and ~ is pointed at");
}

static void test_duplicates(void)
{
    const char *t =
        "{\n"
        "  \"workers\": 1,\n"
        "  \"workers\": 2,\n"
        "  \"issuers\": [{\"name\": \"a\", \"name\": \"b\", \"issuer\": \"https://i\", \"discovery\": true,\n"
        "                \"audiences\": [\"x\"]}],\n"
        "  \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}],\n"
        "  \"limits\": {\"max_uri_bytes\": 1}\n"
        "}\n";
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = load(t, &d);
    char *all = render(&d);
    ok(cfg == NULL, "a file with duplicate keys does not load");
    ok(strstr(all, "3:3: duplicate key \"workers\" (first at line 2, column 3)") != NULL,
       "a repeated top-level key is reported at the repeat, naming the first");
    ok(strstr(all, "4:29: duplicate key \"name\" (first at line 4, column 16)") != NULL,
       "a repeated key inside an issuer is reported too");
    ok(strstr(all, "7:31: limits.max_uri_bytes: 1 is out of range") != NULL,
       "the other errors of the file are still reported");
    is_int(d.n, 3, "exactly those three errors");
    if (d.n != 3)
        tap_diag("%s", all);
    free(all);
    diags_free(&d);
}

static void test_key_sources(void)
{
    fails_with("issuer_nokeys", "\"leeway_s\": 1",
               "issuers[0]: needs a key source: \"discovery\": true, \"jwks_uri\" or \"jwks_file\"",
               "an issuer without a key source is refused");
    fails_with("issuer_nokeys", "\"discovery\": false", "(discovery is false)",
               "discovery: false alone is no key source");
    fails_with(
        "issuer", "\"discovery\": true",
        "issuers[0].discovery: only one of discovery, jwks_uri and jwks_file may be given, and \"jwks_file\" already is",
        "discovery with jwks_file is refused");
    fails_with("issuer", "\"jwks_uri\": \"https://k.example/jwks\"",
               "only one of discovery, jwks_uri and jwks_file",
               "jwks_uri with jwks_file is refused");
    char *t = with("issuer", "\"jwks_uri\": \"https://k.example/jwks\"");
    fails(t, 2, 129, "only one of",
          "the later key source in the file is pointed at by its name (2:129)");
    free(t);
    struct baton_config *cfg = loads_with("issuer", "\"discovery\": false",
                                          "discovery: false beside jwks_file loads");
    if (cfg) {
        is_int(cfg->issuers[0].key_source, KEYS_JWKS_FILE, "jwks_file selects KEYS_JWKS_FILE");
        is_str(cfg->issuers[0].jwks_file, "/etc/baton/keys/aws.json",
               "jwks_file resolves against the config dir");
    }
    config_free(cfg);
    cfg = loads_with("issuer_nokeys", "\"jwks_uri\": \"https://k.example/jwks?v=1\"",
                     "jwks_uri alone loads");
    if (cfg) {
        is_int(cfg->issuers[0].key_source, KEYS_JWKS_URI, "jwks_uri selects KEYS_JWKS_URI");
        is_str(cfg->issuers[0].jwks_uri, "https://k.example/jwks?v=1", "jwks_uri kept as written");
    }
    config_free(cfg);
    fails_with("issuer_nokeys", "\"jwks_uri\": \"http://k.example/jwks\"",
               "plain http is refused here", "http jwks_uri without allow_http is refused");
    fails_with("issuer_nokeys", "\"jwks_uri\": \"http://k.example/jwks\", \"allow_http\": true",
               "plain http is only allowed to a loopback host",
               "http jwks_uri to a non-loopback host is refused");
    config_free(loads_with(
        "issuer_nokeys", "\"allow_http\": true, \"jwks_uri\": \"http://127.0.0.1:8181/jwks\"",
        "http jwks_uri to loopback with allow_http loads (whatever the key order)"));
    fails_with("issuer_nokeys", "\"jwks_uri\": \"ftp://k.example/jwks\"",
               "must start with https:// or http://", "a jwks_uri that is not http(s) is refused");
    fails_with("issuer_nokeys", "\"jwks_uri\": \"https://k.example/jwks#frag\"", "fragment",
               "a jwks_uri with a fragment is refused");
    const char *bad_iss =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"arn:aws:iss\", \"discovery\": true, "
        "\"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(bad_iss, 1, 38, "with discovery, the issuer must be an https URL",
          "discovery needs an issuer URL (error at the issuer value 1:38)");
    const char *http_iss =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"http://127.0.0.1:9\", \"discovery\": true, "
        "\"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(http_iss, 0, 0, "plain http is refused here",
          "discovery from an http issuer needs allow_http");
    const char *nonurl_iss =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"urn:example:iss\", \"jwks_file\": \"k\", "
        "\"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    config_free(loads(nonurl_iss, "a non-URL issuer is fine with a jwks_file"));
}

static void test_issuer_rules(void)
{
    fails_with("issuer", "\"algorithms\": [\"RS256\", \"XS999\"]",
               "issuers[0].algorithms[1]: unknown algorithm \"XS999\"",
               "an unknown algorithm name is refused at its element");
    fails_with("issuer", "\"algorithms\": [\"HS256\"]", "\"HS256\" is refused: only asymmetric",
               "HS256 is refused (algorithm confusion)");
    fails_with("issuer", "\"algorithms\": [\"none\"]", "\"none\" is refused",
               "alg none is refused");
    fails_with("issuer", "\"algorithms\": [\"rs256\"]", "unknown algorithm \"rs256\"",
               "algorithm names are case-sensitive");
    fails_with("issuer", "\"algorithms\": [\"ES384\", \"ES384\"]", "\"ES384\" is listed twice",
               "a repeated algorithm is refused");
    fails_with("issuer", "\"algorithms\": []", "needs at least one algorithm",
               "an empty algorithm list is refused");
    struct baton_config *cfg = loads_with("issuer", "\"algorithms\": [\"PS512\", \"EdDSA\"]",
                                          "PS512 and EdDSA load");
    if (cfg)
        is_int(cfg->issuers[0].algorithms, 1u << JWS_PS512 | 1u << JWS_EDDSA,
               "algorithms become a bitmask");
    config_free(cfg);
    fails_with("issuer", "\"refresh_min_s\": 600, \"refresh_max_s\": 300",
               "300 is below refresh_min_s (600)", "refresh_max_s below refresh_min_s is refused");
    cfg = loads_with("issuer", "\"refresh_min_s\": 7200",
                     "refresh_min_s above the default maximum loads");
    if (cfg)
        is_int(cfg->issuers[0].refresh_max_s, 7200,
               "an absent refresh_max_s is raised to refresh_min_s");
    config_free(cfg);
    cfg = loads_with("issuer", "\"refresh_max_s\": 604800", "refresh_max_s at its maximum loads");
    config_free(cfg);
    fails_with("issuer", "\"refresh_max_s\": 604801", "out of range",
               "refresh_max_s above 604800 is refused");
    const char *no_aud =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true}],"
        " \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(no_aud, 1, 14, "issuers[0]: missing required key \"audiences\"",
          "audiences is required, reported at the issuer object (1:14)");
    const char *empty_aud =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
        " \"audiences\": []}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(empty_aud, 1, 83, "needs at least one entry",
          "an empty audience list is refused at the array");
    const char *dup_aud =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
        " \"audiences\": [\"x\", \"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(dup_aud, 1, 89, "\"x\" is listed twice", "a repeated audience is refused at the repeat");
    fails_with(
        "issuer", "\"token_use\": \"access\"",
        "issuers[0].token_use: access tokens carry the app client in \"client_id\"",
        "token_use access with audience_claim aud is refused (Cognito access tokens have no aud)");
    fails_with("issuer", "\"token_use\": \"id\", \"audience_claim\": \"client_id\"",
               "ID tokens carry the app client in \"aud\"",
               "token_use id with audience_claim client_id is refused");
    config_free(loads_with("issuer", "\"audience_claim\": \"client_id\", \"token_use\": \"access\"",
                           "token_use access with audience_claim client_id loads"));
    config_free(
        loads_with("issuer", "\"token_use\": \"id\"", "token_use id with the default aud loads"));
    fails_with("issuer", "\"token_types\": [\"JWT\", \"jwt\"]", "\"jwt\" is listed twice",
               "token types repeat without regard to case");
    const char *bad_name =
        "{\"issuers\": [{\"name\": \"a b\", \"issuer\": \"https://i\", \"discovery\": true,"
        " \"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(bad_name, 1, 23, "a name is 1..64 letters", "an issuer name with a space is refused");
    const char *missing = "{\"issuers\": [{\"audiences\": [\"x\"], \"discovery\": true}],"
                          " \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(missing, 1, 14, "missing required key \"name\"", "issuer name is required");
    fails(missing, 1, 14, "missing required key \"issuer\"", "issuer value is required");
    const char *not_obj =
        "{\"issuers\": [\"aws\"], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(not_obj, 1, 14, "issuers[0]: expected an object, got a string",
          "an issuer must be an object");
    const char *dups =
        "{\"issuers\": [\n"
        " {\"name\": \"aws\", \"issuer\": \"https://a\", \"discovery\": true, \"audiences\": [\"x\"]},\n"
        " {\"name\": \"aws\", \"issuer\": \"https://a\", \"discovery\": true, \"audiences\": [\"x\"]}],\n"
        " \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}";
    fails(dups, 3, 11, "issuer name \"aws\" is already used by issuers[0]",
          "duplicate issuer names (at 3:11)");
    fails(dups, 3, 28, "this issuer is already configured as issuers[0] (\"aws\")",
          "duplicate issuer values (at 3:28)");
    fails("{\"issuers\": [], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}", 1, 13,
          "needs 1..64 issuers, got 0", "an empty issuer list is refused");
    fails("{\"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}]}", 1, 1,
          "missing required key \"issuers\"", "issuers is required (at the root object 1:1)");
}

static void test_upstreams(void)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"ftp://u.example", "must start with https:// or http://"},
        {"https://", "empty host"},
        {"https://:443", "empty host"},
        {"https://user@u.example", "user information"},
        {"https://u.example?x=1", "a query (?) is not allowed"},
        {"https://u.example/#f", "a fragment"},
        {"https://u.example:0", "port must be 1..65535"},
        {"https://u.example:65536", "port must be 1..65535"},
        {"https://u.example:", "port must be 1..65535"},
        {"https://u.example//a", "empty, \\\".\\\" or \\\"..\\\" segment"},
        {"https://u.example/a/../b", "segment"},
        {"https://u.example/a/./b", "segment"},
        {"https://u.example/a b", "must be percent-encoded"},
        {"https://u.example/a%2", "invalid percent-encoding"},
        {"https://[::1", "bad IPv6 literal"},
        {"https://[zz]:80", "bad IPv6 literal"},
        {"https://u_x.example", "host may hold only"},
        {"https://999.1.1.1", "bad IPv4 address"},
        {"https://u..example", "malformed host name"},
        {"http://u.example", "would send the Google ID token in clear"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        char *t = xasprintf(
            "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
            " \"audiences\": [\"x\"]}],\n \"upstreams\": [{\"name\": \"u\", \"url\": \"%s\"}]}",
            bad[k].url);
        char name[160];
        snprintf(name, sizeof(name), "upstream url %s is refused at the url value (2:37)",
                 bad[k].url);
        fails(t, 2, 37, strstr(bad[k].why, "\\\"") ? "segment" : bad[k].why, name);
        free(t);
    }
    static const struct {
        const char *member, *url;
        bool tls;
        const char *host;
        int port;
        const char *base, *audience;
    } good[] = {
        {"", "https://b.example", true, "b.example", 443, "", "https://b.example"},
        {"", "https://B.Example:443/", true, "b.example", 443, "", "https://b.example"},
        {"", "https://b.example:8443/api/v1/", true, "b.example", 8443, "/api/v1",
         "https://b.example:8443"},
        {"", "http://127.0.0.1:8081", false, "127.0.0.1", 8081, "", "http://127.0.0.1:8081"},
        {"", "HTTP://localhost/x%2Fy", false, "localhost", 80, "/x%2Fy", "http://localhost"},
        {"", "https://[::1]:8443/p", true, "::1", 8443, "/p", "https://[::1]:8443"},
        {", \"identity\": \"none\"", "http://10.0.0.5:8080", false, "10.0.0.5", 8080, "",
         "http://10.0.0.5:8080"},
        {", \"audience\": \"custom-aud\"", "https://b.example", true, "b.example", 443, "",
         "custom-aud"},
    };
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
        char *t = xasprintf(
            "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
            " \"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"%s\"%s}]}",
            good[k].url, good[k].member);
        char name[200];
        snprintf(name, sizeof(name), "upstream url %s%s loads", good[k].url, good[k].member);
        struct baton_config *cfg = loads(t, name);
        if (cfg) {
            const struct cfg_upstream *u = &cfg->upstreams[0];
            ok(u->tls == good[k].tls && !strcmp(u->host, good[k].host) && u->port == good[k].port &&
                   !strcmp(u->base_path, good[k].base) && !strcmp(u->url, good[k].url),
               "%s parses to tls=%d host=%s port=%d base_path=\"%s\" (got %d %s %d \"%s\")",
               good[k].url, good[k].tls, good[k].host, good[k].port, good[k].base, u->tls, u->host,
               u->port, u->base_path);
            is_str(u->audience, good[k].audience, "audience of %s%s", good[k].url, good[k].member);
        }
        config_free(cfg);
        free(t);
    }
    fails_with(
        "upstream", "\"identity\": \"none\", \"token_header\": \"authorization\"",
        "upstreams[0].token_header: \"token_header\" has no effect with \"identity\": \"none\"",
        "token_header with identity none is refused");
    fails_with("upstream", "\"audience\": \"a\", \"identity\": \"none\"",
               "\"audience\" has no effect", "audience with identity none is refused");
    {
        const char *t =
            "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
            " \"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"http://10.1.1.1\","
            " \"identity\": \"None\"}]}";
        struct diags d = DIAGS_INIT;
        struct baton_config *cfg = load(t, &d);
        ok(cfg == NULL && d.n == 1 && strstr(d.v[0].msg, "\"None\" is not one of"),
           "a misspelt identity is one error, not also a guess about plain http");
        diags_free(&d);
    }
    const char *dups =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
        " \"audiences\": [\"x\"]}],\n \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"},\n"
        " {\"name\": \"u\", \"url\": \"https://v\"}]}";
    fails(dups, 3, 11, "upstream name \"u\" is already used by upstreams[0]",
          "duplicate upstream names (3:11)");
    fails("{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
          " \"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\"}]}",
          1, 106, "upstreams[0]: missing required key \"url\"", "upstream url is required");
    fails("{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
          " \"audiences\": [\"x\"]}], \"upstreams\": {}}",
          1, 105, "expected an array of upstreams, got an object", "upstreams must be an array");
    fails("{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"discovery\": true,"
          " \"audiences\": [\"x\"]}]}",
          1, 1, "missing required key \"upstreams\"", "upstreams is required");
}

static void test_google(void)
{
    struct baton_config *cfg = loads_with(
        "google",
        "\"credentials\": {\"service_account_key\": \"secrets/sa.json\"}, "
        "\"token_uri\": \"http://127.0.0.1:8182/token\"",
        "a service-account key with a loopback token_uri loads");
    if (cfg) {
        is_int(cfg->google.source, GOOGLE_SA_KEY, "the credentials object selects GOOGLE_SA_KEY");
        is_str(cfg->google.service_account_key, "/etc/baton/secrets/sa.json",
               "service_account_key resolves against the config dir");
        is_str(cfg->google.token_uri, "http://127.0.0.1:8182/token", "token_uri kept");
    }
    config_free(cfg);
    cfg = loads_with("google_local",
                     "\"local_key\": \"/keys/local.pem\", \"local_issuer\": \"https://me\"",
                     "local credentials with a key and issuer load");
    if (cfg) {
        is_int(cfg->google.source, GOOGLE_LOCAL, "credentials \"local\" selects GOOGLE_LOCAL");
        is_str(cfg->google.local_key, "/keys/local.pem", "an absolute local_key is kept as is");
        is_str(cfg->google.local_issuer, "https://me", "local_issuer kept");
    }
    config_free(cfg);
    cfg = loads_with("google",
                     "\"credentials\": \"metadata\", \"metadata_host\": \"127.0.0.1:8181\"",
                     "metadata with a metadata_host loads");
    if (cfg)
        is_str(cfg->google.metadata_host, "127.0.0.1:8181", "metadata_host kept");
    config_free(cfg);
    fails_with("google", "\"local_key\": \"k.pem\"",
               "\"local_key\" applies only with \"credentials\": \"local\"",
               "local_key without local credentials is refused");
    fails_with("google", "\"token_lifetime_s\": 600", "\"token_lifetime_s\" applies only with",
               "token_lifetime_s without local credentials is refused");
    fails_with("google_local", "\"metadata_host\": \"m:80\"",
               "\"metadata_host\" applies only with \"credentials\": \"metadata\"",
               "metadata_host with local credentials is refused");
    fails_with("google_local", "\"token_uri\": \"https://t\"", "\"token_uri\" applies only with",
               "token_uri without a service-account key is refused");
    fails_with("google", "\"metadata_host\": \"a:b:c\"", "expected host[:port]",
               "a bad metadata_host is refused");
    fails_with("google", "\"iamcredentials_url\": \"http://iam.example\"",
               "only allowed to a loopback host",
               "plain http iamcredentials_url to a remote host is refused");
    char *t = with("google", "\"local_key\": \"k.pem\"");
    fails(t, 5, 12, "applies only with",
          "the misplaced google key is pointed at by its name (5:12)");
    free(t);
}

static void test_audit(void)
{
    struct baton_config *cfg = loads_with(
        "audit",
        "\"path\": \"logs/audit.jsonl\", \"signing_key\": \"/s/k.pem\", "
        "\"record_headers\": [\"X-Sfn-Execution\", \"traceparent\"], "
        "\"fsync\": \"always\", \"on_failure\": \"allow\"",
        "an audit section with every spec key loads");
    if (cfg) {
        is_str(cfg->audit.path, "/etc/baton/logs/audit.jsonl",
               "a relative audit path resolves against the config dir");
        is_str(cfg->audit.signing_key, "/s/k.pem", "an absolute signing_key is kept");
        ok(cfg->audit.n_record_headers == 2 &&
               !strcmp(cfg->audit.record_headers[0], "X-Sfn-Execution"),
           "record_headers kept in order");
        is_int(cfg->audit.fsync, FSYNC_ALWAYS, "fsync always");
        is_int(cfg->audit.on_failure, ON_FAILURE_ALLOW, "on_failure allow");
    }
    config_free(cfg);
    fails_with("audit", "\"record_headers\": [\"Authorization\"]",
               "\"Authorization\" may carry credentials", "recording Authorization is refused");
    fails_with("audit", "\"record_headers\": [\"cookie\"]", "may carry credentials",
               "recording Cookie is refused");
    fails_with("audit", "\"record_headers\": [\"X-Session-Id\"]", "may carry credentials",
               "recording a session header is refused (the audit module's rule, applied at load)");
    {
        /* the cap that keeps every audit record under its line cap */
        char list[33 * 16] = "\"record_headers\": [";
        for (int i = 0; i < CONFIG_MAX_RECORD_HEADERS + 1; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"X-H%d\"", i ? "," : "",
                     i);
        strcat(list, "]");
        fails_with("audit", list, "at most", "33 record_headers are refused (at most 32)");
        strcpy(strrchr(list, ','), "]"); /* drop the 33rd name */
        struct baton_config *c32 = loads_with("audit", list, "32 record_headers load");
        ok(c32 && c32->audit.n_record_headers == 32, "all 32 record_headers are kept");
        config_free(c32);
    }
    fails_with("audit", "\"record_headers\": [\"X-Bad Header\"]", "is not a header name",
               "a header name with a space is refused");
    fails_with("audit", "\"record_headers\": [\"X-A\", \"x-a\"]", "\"x-a\" is listed twice",
               "record_headers repeat without regard to case");
    fails_with("audit", "\"path\": \"\"", "must not be empty", "an empty audit path is refused");
}

static void test_listen_and_proxies(void)
{
    struct baton_config *cfg = loads_with("root",
                                          "\"listen\": \"[::]:8443\", \"admin_listen\": \"\"",
                                          "an IPv6 listen and a disabled admin listener load");
    if (cfg) {
        ok(!strcmp(cfg->listen.host, "::") && cfg->listen.port == 8443, "listen [::]:8443 parses");
        ok(!cfg->admin_enabled, "admin_listen \"\" disables the admin listener");
    }
    config_free(cfg);
    cfg = loads_with("root", "\"listen\": \"localhost:1\"", "a host name and port 1 load");
    config_free(cfg);
    fails_with("root", "\"listen\": \"8080\"", "expected host:port",
               "listen without a host is refused");
    fails_with("root", "\"listen\": \"0.0.0.0:99999\"", "port must be 1..65535",
               "listen port above 65535 is refused");
    fails_with("root", "\"listen\": \"::1:80\"", "IPv6 addresses need brackets",
               "unbracketed IPv6 is refused");
    fails_with("root", "\"admin_listen\": \"0.0.0.0:8080\"",
               "admin_listen and listen would bind the same port 8080",
               "admin_listen on listen's port is refused");
    fails_with("root", "\"listen\": \"127.0.0.1:9090\"", "would bind the same port 9090",
               "listen on admin_listen's port is refused");
    config_free(loads_with("root", "\"listen\": \"127.0.0.1:9090\", \"admin_listen\": \"\"",
                           "listen may take 9090 when the admin listener is off"));

    static const struct {
        const char *cidr, *why;
    } bad[] = {
        {"10.0.0.1/8", "bits set beyond the prefix"}, {"10.0.0.0/33", "prefix length is 0..32"},
        {"1.2.3", "not an IPv4 or IPv6 address"},     {"::1/129", "prefix length is 0..128"},
        {"10.0.0.0/", "bad prefix length"},           {"10.0.0.0/08", "bad prefix length"},
        {"10.0.0.0/8x", "bad prefix length"},         {"", "expected an address"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        char m[128], name[128];
        snprintf(m, sizeof(m), "\"trusted_proxies\": [\"127.0.0.1\", \"%s\"]", bad[k].cidr);
        snprintf(name, sizeof(name), "trusted proxy \"%s\" is refused", bad[k].cidr);
        char *t = with("root", m);
        fails(t, 6, 47, bad[k].why, name);
        free(t);
    }
}

static struct sockaddr_storage v4(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    in->sin_family = AF_INET;
    inet_pton(AF_INET, a, &in->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *a)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, a, &in6->sin6_addr);
    return ss;
}

static bool trusted(const struct baton_config *cfg, struct sockaddr_storage ss)
{
    return config_is_trusted_proxy(cfg, (const struct sockaddr *)&ss);
}

static void test_cidr_matching(void)
{
    struct baton_config *cfg = loads_with(
        "root",
        "\"trusted_proxies\": [\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\", \"::ffff:172.16.0.0/108\"]",
        "IPv4, bare-address, IPv6 and v4-mapped CIDRs load");
    if (!cfg)
        return;
    is_int(cfg->n_trusted_proxies, 4, "four networks");
    ok(trusted(cfg, v4("10.255.1.2")), "10.255.1.2 is within 10.0.0.0/8");
    ok(!trusted(cfg, v4("11.0.0.1")), "11.0.0.1 is not");
    ok(trusted(cfg, v4("192.168.1.7")), "a bare address matches itself");
    ok(!trusted(cfg, v4("192.168.1.8")), "and only itself (/32)");
    ok(trusted(cfg, v6("2001:db8:ffff::1")), "2001:db8:ffff::1 is within 2001:db8::/32");
    ok(!trusted(cfg, v6("2001:db9::1")), "2001:db9::1 is not");
    ok(trusted(cfg, v6("::ffff:10.1.2.3")), "a v4-mapped IPv6 peer matches an IPv4 network");
    ok(trusted(cfg, v4("172.16.5.5")), "a v4-mapped CIDR is normalized to 172.16.0.0/12");
    ok(!trusted(cfg, v4("172.32.0.1")), "172.32.0.1 is outside 172.16.0.0/12");
    ok(!trusted(cfg, v6("::1")), "::1 is not trusted");
    struct sockaddr_storage un;
    memset(&un, 0, sizeof(un));
    un.ss_family = AF_UNIX;
    ok(!trusted(cfg, un), "a non-IP address is never trusted");
    config_free(cfg);
    cfg = loads_with("root", "\"trusted_proxies\": [\"0.0.0.0/0\"]", "0.0.0.0/0 loads");
    if (cfg) {
        ok(trusted(cfg, v4("203.0.113.9")), "/0 matches every IPv4 address");
        ok(!trusted(cfg, v6("2001:db8::1")), "an IPv4 /0 does not match IPv6");
    }
    config_free(cfg);
    cfg = loads(MINIMAL, "minimal config for the empty proxy list");
    if (cfg)
        ok(!trusted(cfg, v4("127.0.0.1")), "no trusted proxies: nothing is trusted");
    config_free(cfg);
}

static void test_paths(void)
{
    const char *t =
        "{\"issuers\": [{\"name\": \"a\", \"issuer\": \"https://i\", \"jwks_file\": \"jwks/a.json\","
        " \"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u\"}],"
        " \"policies\": \"../policies\", \"audit\": {\"path\": \"/var/log/a.jsonl\"}}";
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = config_load_buffer(t, strlen(t), "conf/baton.json", &d);
    ok(cfg != NULL, "a config named conf/baton.json loads");
    if (cfg) {
        is_str(cfg->dir, "conf", "its directory is conf");
        is_str(cfg->policies, "conf/../policies",
               "policies ../policies resolves to conf/../policies");
        is_str(cfg->issuers[0].jwks_file, "conf/jwks/a.json", "jwks_file resolves under conf/");
        is_str(cfg->audit.path, "/var/log/a.jsonl", "an absolute audit path is kept");
    }
    config_free(cfg);
    cfg = config_load_buffer(t, strlen(t), "baton.json", &d);
    if (cfg) {
        is_str(cfg->dir, ".", "a bare file name's directory is .");
        is_str(cfg->issuers[0].jwks_file, "jwks/a.json", "paths relative to . stay as written");
    } else {
        ok(0, "a bare file name's directory is .");
        ok(0, "paths relative to . stay as written");
    }
    config_free(cfg);
    cfg = config_load_buffer(t, strlen(t), "/baton.json", &d);
    if (cfg)
        is_str(cfg->policies, "/../policies", "a config at / resolves without a double slash");
    else
        ok(0, "a config at / resolves without a double slash");
    config_free(cfg);
    is_int(d.n, 0, "no errors for any of those names");
    diags_free(&d);

    /* config_load from a real file, and its failures */
    char dir[] = "/tmp/baton-config-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temporary directory");
    char *path = xasprintf("%s/b.json", dir);
    FILE *f = fopen(path, "w");
    fputs(t, f);
    fclose(f);
    cfg = config_load(path, &d);
    ok(cfg != NULL && d.n == 0, "config_load reads a file");
    if (cfg) {
        char *want = xasprintf("%s/jwks/a.json", dir);
        is_str(cfg->issuers[0].jwks_file, want, "and resolves against its directory");
        free(want);
    }
    config_free(cfg);
    f = fopen(path, "w");
    for (int k = 0; k < (1 << 20) / 8 + 1; k++)
        fputs("        ", f);
    fclose(f);
    cfg = config_load(path, &d);
    ok(cfg == NULL && d.n == 1 && strstr(d.v[0].msg, "larger than 1048576 bytes"),
       "a file over 1 MiB is refused");
    diags_free(&d);
    unlink(path);
    cfg = config_load(path, &d);
    ok(cfg == NULL && d.n == 1 && strstr(d.v[0].msg, "cannot read: No such file") &&
           d.v[0].line == 0,
       "a missing file is one error without a position");
    diags_free(&d);
    rmdir(dir);
    free(path);
}

static void test_choose(void)
{
    setenv("BATON_CONFIG", "/env/baton.json", 1);
    is_str(config_path_choose("/flag.json"), "/flag.json", "-c wins over $BATON_CONFIG");
    is_str(config_path_choose(NULL), "/env/baton.json", "$BATON_CONFIG without -c");
    setenv("BATON_CONFIG", "", 1);
    is_str(config_path_choose(NULL), CONFIG_DEFAULT_PATH, "an empty $BATON_CONFIG is ignored");
    unsetenv("BATON_CONFIG");
    is_str(config_path_choose(NULL), "/etc/baton/baton.json", "default /etc/baton/baton.json");
}

static void test_lookups(void)
{
    const char *t =
        "{\"issuers\": ["
        "{\"name\": \"aws\", \"issuer\": \"https://a\", \"discovery\": true, \"audiences\": [\"x\"]},"
        "{\"name\": \"cognito\", \"issuer\": \"https://c\", \"discovery\": true, \"audiences\": [\"y\"]}],"
        " \"upstreams\": [{\"name\": \"cleanup\", \"url\": \"https://c\"},"
        " {\"name\": \"billing\", \"url\": \"https://b\"}]}";
    struct baton_config *cfg = loads(t, "two issuers and two upstreams load");
    if (!cfg)
        return;
    ok(config_issuer(cfg, "cognito") == &cfg->issuers[1], "config_issuer finds by name");
    ok(config_issuer(cfg, "gcp") == NULL, "config_issuer: absent name is NULL");
    ok(config_issuer(cfg, NULL) == NULL, "config_issuer: NULL name is NULL");
    ok(config_issuer_by_iss(cfg, "https://axyz", 9) == &cfg->issuers[0],
       "config_issuer_by_iss uses the length");
    ok(config_issuer_by_iss(cfg, "https://a/", 10) == NULL,
       "config_issuer_by_iss is exact (no trailing slash)");
    ok(config_issuer_by_iss(cfg, "HTTPS://A", 9) == NULL, "config_issuer_by_iss is case-sensitive");
    ok(config_upstream(cfg, "billing") == &cfg->upstreams[1], "config_upstream finds by name");
    ok(config_upstream(cfg, "Billing") == NULL, "config_upstream is case-sensitive");
    config_free(cfg);

    is_int(jws_alg_from_name("ES384"), JWS_ES384, "jws_alg_from_name ES384");
    is_int(jws_alg_from_name("EdDSA"), JWS_EDDSA, "jws_alg_from_name EdDSA");
    is_int(jws_alg_from_name("es384"), -1, "jws_alg_from_name is case-sensitive");
    is_int(jws_alg_from_name("HS256"), -1, "jws_alg_from_name knows no HMAC");
    is_int(jws_alg_from_name(NULL), -1, "jws_alg_from_name(NULL)");
    int round = 0;
    for (int a = 0; a < JWS_ALG__COUNT; a++)
        round += jws_alg_from_name(jws_alg_name(a)) == a;
    is_int(round, JWS_ALG__COUNT, "every algorithm name round-trips");
    is_str(jws_alg_name(JWS_ALG__COUNT), "?", "jws_alg_name of an out-of-range value");
}

static void test_syntax_and_caps(void)
{
    fails("{\n  \"workers\": tru\n}", 2, 16, "invalid JSON: invalid token near 'tru'",
          "a syntax error carries jansson's position");
    fails("", 1, 1, "invalid JSON", "an empty file is invalid JSON");
    fails("[1]", 1, 1, "the configuration must be a JSON object, got an array",
          "the root must be an object");
    char *deep = xstrdup(
        "{\"google\": {\"credentials\": {\"service_account_key\": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}}");
    fails(deep, 1, 65, "nesting deeper than 16 levels",
          "nesting beyond CONFIG_MAX_DEPTH is refused at its bracket");
    free(deep);
    struct diags d = DIAGS_INIT;
    static const char nul[] = "{\"workers\": 1\0, \"issuers\": 1}";
    ok(config_load_buffer(nul, sizeof(nul) - 1, "nul.json", &d) == NULL && d.n == 1 &&
           d.v[0].line == 1 && d.v[0].col == 14 && strstr(d.v[0].msg, "unexpected byte 0x00"),
       "a NUL byte jansson would skip is refused at 1:14");
    diags_free(&d);
    char *big = xmalloc(CONFIG_MAX_BYTES + 2);
    memset(big, ' ', CONFIG_MAX_BYTES + 1);
    big[CONFIG_MAX_BYTES + 1] = '\0';
    ok(config_load_buffer(big, CONFIG_MAX_BYTES + 1, "big.json", &d) == NULL && d.n == 1 &&
           strstr(d.v[0].msg, "larger than"),
       "a buffer over CONFIG_MAX_BYTES is refused");
    diags_free(&d);
    free(big);
    /* 150 unknown keys: 100 reported, then one line saying how many more */
    char *many = xstrdup("{");
    for (int k = 0; k < 150; k++) {
        char *next = xasprintf("%s\"k%d\": %d, ", many, k, k);
        free(many);
        many = next;
    }
    char *t = xasprintf("%s\"issuers\": 1, \"upstreams\": 1}", many);
    struct baton_config *cfg = load(t, &d);
    ok(cfg == NULL && d.n == CONFIG_MAX_ERRORS + 1,
       "errors stop at CONFIG_MAX_ERRORS plus a summary (%zu)", d.n);
    if (d.n)
        ok(strstr(d.v[d.n - 1].msg, "too many errors: 52 more not shown") && d.v[d.n - 1].line == 0,
           "the summary counts what was not shown");
    diags_free(&d);
    free(t);
    free(many);
}

/* One file, many errors: each at its exact position, sorted, none missing. */
static void test_multi_error(void)
{
    const char *t = "{\n"                                                              /* 1 */
                    "  \"listen\": \"nowhere\",\n"                                     /* 2 */
                    "  \"workers\": 1000,\n"                                           /* 3 */
                    "  \"limits\": {\"max_uri_bytes\": 1, \"bogus\": 2},\n"            /* 4 */
                    "  \"issuers\": [{\n"                                              /* 5 */
                    "    \"name\": \"aws\",\n"                                         /* 6 */
                    "    \"issuer\": \"https://x\",\n"                                 /* 7 */
                    "    \"audiences\": [\"a\", 7],\n"                                 /* 8 */
                    "    \"audience_claim\": \"azp\"\n"                                /* 9 */
                    "  }],\n"                                                          /* 10 */
                    "  \"upstreams\": [{\"name\": \"u\", \"url\": \"gopher://u\"}],\n" /* 11 */
                    "  \"audit\": {\"fsync\": \"never\"}\n"                            /* 12 */
                    "}\n";
    static const char *const want[] = {
        "2:13: listen: expected host:port",
        "3:14: workers: 1000 is out of range 0..256",
        "4:31: limits.max_uri_bytes: 1 is out of range 256..65536",
        "4:34: limits: unknown key \"bogus\"",
        "5:15: issuers[0]: needs a key source",
        "8:24: issuers[0].audiences[1]: expected a string, got an integer",
        "9:23: issuers[0].audience_claim: \"azp\" is not one of \"aud\" or \"client_id\"",
        "11:38: upstreams[0].url: expected http(s)://host[:port][/path]: must start with https:// or http://",
        "12:22: audit.fsync: \"never\" is not one of",
    };
    size_t nw = sizeof(want) / sizeof(want[0]);
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = load(t, &d);
    char *all = render(&d);
    ok(cfg == NULL, "a file with nine errors does not load");
    is_int(d.n, nw, "all nine errors are reported, not only the first");
    for (size_t k = 0; k < nw; k++)
        ok(strstr(all, want[k]) != NULL, "error %zu: %s", k + 1, want[k]);
    /* sorted by position */
    int sorted = 1;
    for (size_t k = 1; k < d.n; k++)
        if (d.v[k].line < d.v[k - 1].line ||
            (d.v[k].line == d.v[k - 1].line && d.v[k].col < d.v[k - 1].col))
            sorted = 0;
    ok(sorted, "errors come sorted by line and column");
    for (size_t k = 0; k < d.n; k++)
        if (strcmp(d.v[k].file, FILE_NAME))
            sorted = 0;
    ok(sorted, "every error names the file");
    if (d.n != nw)
        tap_diag("%s", all);
    free(all);
    diags_free(&d);
}

static void test_config_diag(void)
{
    struct baton_config *cfg = loads(MINIMAL, "minimal config for config_diag");
    struct diags d = DIAGS_INIT;
    if (!cfg)
        return;
    config_diag(cfg, &d, "issuers/0/audiences/0", false, "audience %s is odd", "x");
    config_diag(cfg, &d, "upstreams/0/url", true, "late");
    config_diag(cfg, &d, "policies", false, "default, not in the file");
    ok(d.n == 3 && d.v[0].line == 1 && d.v[0].col == 96 && !strcmp(d.v[0].msg, "audience x is odd"),
       "config_diag positions a late error at a value (1:96)");
    ok(d.n == 3 && d.v[1].line == 1 && d.v[1].col == 132, "config_diag positions at a key (1:132)");
    ok(d.n == 3 && d.v[2].line == 0 && !strcmp(d.v[2].file, FILE_NAME),
       "config_diag of a path absent from the file has no position");
    diags_free(&d);
    config_free(cfg);
}

static void test_sample(void)
{
    const char *src = getenv("BATON_SRCDIR");
    char *path = xasprintf("%s/conf/baton.json", src ? src : BATON_SRCDIR);
    struct diags d = DIAGS_INIT;
    struct baton_config *cfg = config_load(path, &d);
    if (!ok(cfg != NULL && d.n == 0, "the sample conf/baton.json loads without errors")) {
        char *all = render(&d);
        tap_diag("%s", all);
        free(all);
    }
    if (cfg) {
        const struct cfg_issuer *aws = config_issuer(cfg, "aws"),
                                *cog = config_issuer(cfg, "cognito");
        ok(aws && aws->key_source == KEYS_DISCOVERY &&
               aws->algorithms == (1u << JWS_RS256 | 1u << JWS_ES384),
           "sample issuer aws: discovery, RS256 and ES384");
        ok(cog && !strcmp(cog->audience_claim, "client_id") && cog->token_use &&
               !strcmp(cog->token_use, "access"),
           "sample issuer cognito: client_id audience, access tokens");
        ok(config_upstream(cfg, "cleanup") && config_upstream(cfg, "billing") &&
               config_upstream(cfg, "approvals"),
           "sample upstreams cleanup, billing, approvals");
        char *pol = xasprintf("%s/conf/../policies", src ? src : BATON_SRCDIR);
        is_str(cfg->policies, pol, "sample policies resolve to the top-level policies/");
        free(pol);
    }
    config_free(cfg);
    diags_free(&d);
    free(path);
}

static void test_health_path(void)
{
    struct baton_config *cfg = loads_with("root", "\"health_path\": \"/_baton/ready\"",
                                          "a canonical health_path loads");
    if (cfg)
        is_str(cfg->health_path, "/_baton/ready", "health_path kept as written");
    config_free(cfg);
    fails_with("root", "\"health_path\": \"\"", "must not be empty",
               "an empty health_path is refused");
    const char *bad[] = {"\"ready\"", "\"/a/../b\"", "\"/a//b\"", "\"/a?b=1\"",
                         "\"/%2e\"",  "\"/a b\"",    "\"/a#b\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char m[64], name[96];
        snprintf(m, sizeof(m), "\"health_path\": %s", bad[i]);
        snprintf(name, sizeof(name), "health_path %s is refused", bad[i]);
        fails_with("root", m, "health_path must be a canonical absolute path", name);
    }
}

/* url_signing (extension): keys, caps, defaults; the key files themselves are
 * read by signurl.c (test_signurl). */
static void test_url_signing(void)
{
    struct baton_config *cfg = loads_with(
        "root",
        "\"url_signing\": {\"keys\": [{\"id\": \"k2\", \"file\": \"keys/k2.pem\"}, "
        "{\"id\": \"k1\", \"file\": \"/s/k1.pem\"}]}",
        "url_signing with two keys loads");
    if (cfg) {
        ok(cfg->url_signing.enabled && cfg->url_signing.n_keys == 2,
           "url_signing enabled, two keys");
        is_str(cfg->url_signing.keys[0].id, "k2", "keys kept in order (the first signs)");
        is_str(cfg->url_signing.keys[0].file, "/etc/baton/keys/k2.pem",
               "a relative key file resolves");
        is_int(cfg->url_signing.max_ttl_s, 604800, "max_ttl_s defaults to a week");
        is_int(cfg->url_signing.leeway_s, 0, "leeway_s defaults to 0");
    }
    config_free(cfg);
    cfg = loads(
        "{\"issuers\": [{\"name\": \"aws\", \"issuer\": \"https://iss.example\", \"discovery\": true, "
        "\"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u.example\"}]}",
        "a config without url_signing loads");
    ok(cfg && !cfg->url_signing.enabled, "url_signing absent: disabled");
    config_free(cfg);
    fails_with("root", "\"url_signing\": {\"keys\": []}", "needs 1..16 keys", "no key is refused");
    fails_with("root", "\"url_signing\": {\"max_ttl_s\": 60}", "missing required key \"keys\"",
               "keys are required");
    fails_with(
        "root",
        "\"url_signing\": {\"keys\": [{\"id\": \"a\", \"file\": \"a\"}, {\"id\": \"a\", \"file\": \"b\"}]}",
        "key id \"a\" is already used by keys[0]", "a repeated key id is refused");
    fails_with("root", "\"url_signing\": {\"keys\": [{\"id\": \"a b\", \"file\": \"a\"}]}",
               "a key id is 1..32", "a key id outside the alphabet is refused");
    fails_with("root", "\"url_signing\": {\"keys\": [{\"id\": \"a\"}]}",
               "missing required key \"file\"", "a key without file is refused");
    fails_with(
        "root",
        "\"url_signing\": {\"keys\": [{\"id\": \"a\", \"file\": \"a\"}], \"max_ttl_s\": 604801}",
        "604800", "max_ttl_s over a week is refused");
    fails_with("root",
               "\"url_signing\": {\"keys\": [{\"id\": \"a\", \"file\": \"a\"}], \"leeway_s\": 61}",
               "60", "leeway_s over 60 is refused");
    fails_with("root",
               "\"url_signing\": {\"keys\": [{\"id\": \"a\", \"file\": \"a\"}], \"ttl\": 1}",
               "unknown key", "an unknown url_signing key is refused");
}

/* "redis" (README "Shared limits on Redis"): URL forms, ranges, the password file. */
static void test_redis(void)
{
    struct baton_config *cfg = loads_with("root",
                                          "\"redis\": {\"url\": \"redis://10.0.0.3:6380/2\"}",
                                          "a redis section with a TCP URL loads");
    char dir[] = "/tmp/baton-test-redis-XXXXXX", *pw = NULL, *member = NULL;
    FILE *f;

    if (cfg) {
        ok(cfg->redis.enabled, "redis enabled");
        is_str(cfg->redis.host, "10.0.0.3", "host");
        is_int(cfg->redis.port, 6380, "port");
        is_int(cfg->redis.db, 2, "database");
        ok(cfg->redis.unix_path == NULL && cfg->redis.password == NULL,
           "no unix path, no password");
        is_int(cfg->redis.timeout_ms, 50, "timeout_ms defaults to 50");
        is_int(cfg->redis.on_failure, REDIS_FAIL_LOCAL, "on_failure defaults to local");
    }
    config_free(cfg);
    cfg = loads_with("root",
                     "\"redis\": {\"url\": \"redis://[::1]\", \"timeout_ms\": 10000, "
                     "\"on_failure\": \"deny\"}",
                     "an IPv6 URL without port and database loads");
    if (cfg) {
        is_str(cfg->redis.host, "::1", "IPv6 host without brackets");
        is_int(cfg->redis.port, 6379, "port defaults to 6379");
        is_int(cfg->redis.db, 0, "database defaults to 0");
        is_int(cfg->redis.timeout_ms, 10000, "timeout_ms at its maximum");
        is_int(cfg->redis.on_failure, REDIS_FAIL_DENY, "on_failure deny");
    }
    config_free(cfg);
    cfg = loads_with(
        "root", "\"redis\": {\"url\": \"unix:///run/redis/redis.sock\", \"on_failure\": \"allow\"}",
        "a unix socket URL loads");
    if (cfg) {
        is_str(cfg->redis.unix_path, "/run/redis/redis.sock", "unix path");
        ok(cfg->redis.host == NULL, "no host with a unix socket");
        is_int(cfg->redis.on_failure, REDIS_FAIL_ALLOW, "on_failure allow");
    }
    config_free(cfg);
    cfg = loads(
        "{\"issuers\": [{\"name\": \"aws\", \"issuer\": \"https://iss.example\", \"discovery\": true, "
        "\"audiences\": [\"x\"]}], \"upstreams\": [{\"name\": \"u\", \"url\": \"https://u.example\"}]}",
        "a config without redis loads");
    ok(cfg && !cfg->redis.enabled, "no redis section: redis disabled");
    config_free(cfg);

    fails_with("root", "\"redis\": {\"url\": \"rediss://10.0.0.3:6378\"}",
               "hiredis 0.14 has no TLS", "rediss:// is refused, saying why");
    fails_with("root", "\"redis\": {\"url\": \"redis://redis.internal:6379\"}",
               "must be an IP address",
               "a host name is refused (it would be resolved on a worker)");
    fails_with("root", "\"redis\": {\"url\": \"redis://:pw@10.0.0.3:6379\"}",
               "no user, password or query", "a password in the URL is refused");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3:6379/1024\"}", "0..1023",
               "database 1024");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3:6379/-1\"}", "0..1023",
               "database -1");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3:70000\"}", "port must be 1..65535",
               "port out of range");
    fails_with("root", "\"redis\": {\"url\": \"unix://relative.sock\"}", "unix:///absolute/path",
               "relative unix path");
    fails_with("root", "\"redis\": {}", "missing required key \"url\"", "url is required");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3\", \"timeout_ms\": 0}",
               "out of range 1..10000", "timeout_ms 0");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3\", \"timeout_ms\": 10001}",
               "out of range 1..10000", "timeout_ms 10001");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3\", \"on_failure\": \"retry\"}",
               "is not one of \"local\", \"deny\" or \"allow\"", "unknown on_failure");
    fails_with("root", "\"redis\": {\"url\": \"redis://10.0.0.3\", \"tls\": true}",
               "unknown key \"tls\"", "unknown key in redis");

    /* password_file: read at load, owner-only */
    if (!ok(mkdtemp(dir) != NULL, "temp dir"))
        return;
    pw = xasprintf("%s/redis-password", dir);
    member = xasprintf("\"redis\": {\"url\": \"redis://10.0.0.3\", \"password_file\": \"%s\"}", pw);
    fails_with("root", member, "cannot open", "a missing password file");
    f = fopen(pw, "w");
    fputs("s3cret-auth-string\n", f);
    fclose(f);
    chmod(pw, 0644);
    fails_with("root", member, "readable or writable by others (mode 644)",
               "a password file readable by others");
    chmod(pw, 0600);
    cfg = loads_with("root", member, "a password file of mode 0600 loads");
    if (cfg)
        is_str(cfg->redis.password, "s3cret-auth-string", "the password, without its newline");
    config_free(cfg);
    f = fopen(pw, "w");
    fputs("\n", f);
    fclose(f);
    fails_with("root", member, "holds no password", "an empty password file");
    unlink(pw);
    rmdir(dir);
    free(pw);
    free(member);
}

/* README's "Main configuration" table and config's tables name the same
 * keys with the same defaults and ranges (readme_tables.h); a README whose
 * default or range drifts fails. */
static void test_readme_table(void)
{
    size_t n;
    const struct jload_table *t = config_tables(&n);
    char *readme = readme_text(), *report = NULL, *drifted;
    int bad;

    ok(readme != NULL, "README.md is readable");
    if (!readme)
        return;
    bad = readme_check(readme, "## Main configuration\n", t, n, NULL, &report);
    ok(bad == 0, "README's configuration table agrees with config's tables (%d disagreements)",
       bad);
    for (char *line = report, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        tap_diag("%.*s", (int)(nl - line), line);
    }
    free(report);
    /* the check can fail: a default, a range and a key that drifted */
    drifted = xstrdup(readme);
    {
        char *row = strstr(drifted, "| `limits.max_uri_bytes` | integer | 8192 | 256..65536");
        ok(row != NULL, "README has the max_uri_bytes row the drift test edits");
        if (row) {
            memcpy(strstr(row, "8192"), "8193", 4);
            memcpy(strstr(row, "256..65536"), "256..65535", 10);
            memcpy(strstr(row, "max_uri_bytes"), "max_url_bytes", 13);
        }
    }
    bad = readme_check(drifted, "## Main configuration\n", t, n, NULL, &report);
    ok(bad >= 2 && report && strstr(report, "limits.max_url_bytes: in README, not in the code") &&
           strstr(report, "limits.max_uri_bytes: in the code, not in README"),
       "a README row that drifts is caught (%d)", bad);
    free(report);
    free(drifted);
    drifted = xstrdup(readme);
    {
        char *row = strstr(drifted, "| `limits.max_uri_bytes` | integer | 8192 | 256..65536");
        if (row) {
            memcpy(strstr(row, "8192"), "8193", 4);
            memcpy(strstr(row, "256..65536"), "256..65535", 10);
        }
    }
    bad = readme_check(drifted, "## Main configuration\n", t, n, NULL, &report);
    ok(bad == 2 && report &&
           strstr(report, "limits.max_uri_bytes: README's default does not say 8192") &&
           strstr(report, "limits.max_uri_bytes: README's range does not say 256..65536"),
       "a default and a range that drift are caught (%d)", bad);
    free(report);
    free(drifted);
    free(readme);
}

int main(void)
{
    test_defaults();
    test_ranges();
    test_types();
    test_unknown_keys();
    test_duplicates();
    test_key_sources();
    test_issuer_rules();
    test_upstreams();
    test_google();
    test_audit();
    test_listen_and_proxies();
    test_cidr_matching();
    test_paths();
    test_choose();
    test_lookups();
    test_syntax_and_caps();
    test_multi_error();
    test_config_diag();
    test_sample();
    test_redis();
    test_health_path();
    test_url_signing();
    test_readme_table();
    return tap_done();
}
