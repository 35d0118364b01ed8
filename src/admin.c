/*
 * admin.c: the admin listener (admin_listen): health, readiness, Prometheus
 * metrics, and the public keys reviewers need (the local identity's JWKS and
 * the audit checkpoint key).
 *
 * It runs on the background event_base with evhttp: loopback-only, a handful
 * of requests a minute, never the data path (whose guard evhttp could not
 * be). Everything it reads is either thread-safe by contract (audit_stats,
 * jwks_stats, identity_*) or summed from the workers' single-writer counters.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "assertion.h"
#include "audit.h"
#include "http1.h"
#include "identity.h"
#include "jwks.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "otlp.h"
#include "resolve.h"
#include "runtime.h"
#include "util.h"

struct admin {
    struct evhttp *http;
    struct admin_deps deps;
};

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, http1_status_text((unsigned)code, "Error"), body);
}

static void add_json_string(struct evbuffer *out, const char *s)
{
    char esc[1024];
    json_escape(esc, sizeof(esc), s, strlen(s));
    evbuffer_add_printf(out, "\"%s\"", esc);
}

/* RFC 3339 UTC with milliseconds, as the audit log and the logs write time. */
static void add_time(struct evbuffer *out, int64_t ms)
{
    char ts[32];
    struct tm tm;
    time_t s = (time_t)(ms / 1000);
    gmtime_r(&s, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    evbuffer_add_printf(out, "\"%s.%03dZ\"", ts, (int)(ms % 1000));
}

/* ,"config":{...}: which files the running snapshot came from and when, and
 * whether the last reload was refused (then the running set is older than the
 * files, and the error says why). Readiness does not depend on it: the old
 * set keeps serving, as it should. */
static void config_status(struct evbuffer *out, const struct runtime *rt)
{
    struct runtime_reload st;
    runtime_reload_status(&st);
    evbuffer_add_printf(out,
                        ",\"config\":{\"generation\":%llu,\"last_reload_ok\":%s,\"loaded_at\":",
                        rt ? (unsigned long long)rt->generation : 0ull, st.ok ? "true" : "false");
    if (st.success_ms)
        add_time(out, st.success_ms);
    else
        evbuffer_add_printf(out, "null");
    if (!st.ok) {
        evbuffer_add_printf(out, ",\"failed_at\":");
        add_time(out, st.failure_ms);
        evbuffer_add_printf(out, ",\"error\":");
        add_json_string(out, st.error);
        evbuffer_add_printf(out, ",\"note\":\"the last reload was refused: the running "
                                 "configuration is older than the files\"");
    }
    evbuffer_add_printf(out, ",\"reloads_refused\":%llu}", (unsigned long long)st.failures);
}

/*
 * The "redis" member of /readyz: the workers' connections. Some connection
 * down makes the instance "degraded" (global steps fall back to on_failure)
 * but not unready, unless on_failure is "deny": then it refuses every global
 * request, and a load balancer should prefer an instance that does not.
 * `st` is read once per /readyz, so the verdict and the detail agree; `out`
 * NULL: only the verdict.
 */
static bool admin_ready_redis(const struct runtime *rt, const struct redis_status *st,
                              struct evbuffer *out)
{
    bool configured = rt && rt->cfg->redis.enabled, degraded, ok;

    if (!configured) {
        if (out)
            evbuffer_add_printf(out, ",\"redis\":{\"configured\":false}");
        return true;
    }
    degraded = st->up < st->workers;
    ok = !degraded || rt->cfg->redis.on_failure != REDIS_FAIL_DENY;
    if (!out)
        return ok;
    evbuffer_add_printf(out,
                        ",\"redis\":{\"configured\":true,\"connections_up\":%u,\"workers\":%u,"
                        "\"degraded\":%s",
                        st->up, st->workers, degraded ? "true" : "false");
    if (degraded && st->last_error[0]) {
        evbuffer_add_printf(out, ",\"last_error\":");
        add_json_string(out, st->last_error);
    }
    evbuffer_add(out, "}", 1);
    return ok;
}

/* ,"upstreams":{...}: the upstreams whose name has no address yet (502
 * upstream_unresolved). They leave readiness alone, as an Envoy STRICT_DNS
 * cluster with no host leaves its listener serving: one bad name must not
 * keep a Cloud Run instance out of rotation for every other step. */
static void upstream_status(struct evbuffer *out, const struct runtime *rt)
{
    size_t bad = 0;

    evbuffer_add_printf(out, ",\"upstreams\":{\"unresolved\":[");
    for (size_t i = 0; rt && i < rt->cfg->n_upstreams; i++) {
        const struct proxy_target *t = &rt->targets[i];
        size_t n = 0;
        char err[200];
        if (resolver_status(t->res, &n, err, sizeof(err)))
            continue;
        evbuffer_add_printf(out, "%s{\"name\":", bad++ ? "," : "");
        add_json_string(out, t->up->name);
        evbuffer_add_printf(out, ",\"host\":");
        add_json_string(out, t->up->host);
        evbuffer_add_printf(out, ",\"error\":");
        add_json_string(out, err);
        evbuffer_add(out, "}", 1);
    }
    evbuffer_add_printf(out, "],\"degraded\":%s}", bad ? "true" : "false");
}

bool admin_ready(const struct admin_deps *deps, struct evbuffer *out)
{
    struct runtime *rt = runtime_current();
    bool keys = false, audit_ok = false, identity_ok = true, draining = false;
    bool need_identity = false, redis_ok;
    struct redis_status rst;
    size_t n_iss = 0;

    if (rt) {
        keys = jwks_ready(rt->jwks);
        n_iss = jwks_issuer_count(rt->jwks);
        need_identity = rt->needs_identity;
    }
    audit_ok = deps->audit && audit_healthy(deps->audit);
    if (need_identity)
        identity_ok = deps->identity && identity_ready(deps->identity);
    if (deps->draining)
        draining = deps->draining();
    redis_status(&rst);
    redis_ok = admin_ready_redis(rt, &rst, NULL);

    evbuffer_add_printf(
        out, "{\"ready\":%s,\"config_loaded\":%s,\"keys\":{\"ready\":%s,\"issuers\":[",
        (rt && keys && audit_ok && identity_ok && !draining && redis_ok) ? "true" : "false",
        rt ? "true" : "false", keys ? "true" : "false");
    for (size_t i = 0; i < n_iss; i++) {
        struct jwks_issuer_stats st;
        if (jwks_stats(rt->jwks, i, &st) < 0)
            continue;
        evbuffer_add_printf(out, "%s{\"name\":", i ? "," : "");
        add_json_string(out, st.name ? st.name : "");
        evbuffer_add_printf(out, ",\"loaded\":%s,\"keys\":%zu", st.loaded ? "true" : "false",
                            st.keys);
        if (st.last_error[0]) {
            evbuffer_add_printf(out, ",\"last_error\":");
            add_json_string(out, st.last_error);
        }
        evbuffer_add(out, "}", 1);
    }
    evbuffer_add_printf(out,
                        "]},\"audit\":{\"healthy\":%s},\"identity\":{\"required\":%s,\"ready\":%s",
                        audit_ok ? "true" : "false", need_identity ? "true" : "false",
                        identity_ok ? "true" : "false");
    if (need_identity && deps->identity && !identity_ok) {
        char *detail = identity_ready_detail(deps->identity);
        if (detail) {
            evbuffer_add_printf(out, ",\"detail\":");
            add_json_string(out, detail);
            free(detail);
        }
    }
    evbuffer_add_printf(out, "},\"draining\":%s", draining ? "true" : "false");
    upstream_status(out, rt);
    config_status(out, rt);
    admin_ready_redis(rt, &rst, out);
    evbuffer_add_printf(out, "}\n");
    runtime_unref(rt);
    return rt && keys && audit_ok && identity_ok && !draining && redis_ok;
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    (void)arg;
    evbuffer_add_printf(b, "ok\n");
    reply(req, 200, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

static void on_readyz(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    bool ok = admin_ready(&a->deps, b);
    reply(req, ok ? 200 : 503, "application/json", b);
    evbuffer_free(b);
}

/* Identity metrics, one family per pass over the pairs: the text format wants
 * every sample of a family in one group. */
enum identity_family { ID_USABLE, ID_EXPIRY, ID_MINTS, ID_FAILURES, ID_DURATION, ID__COUNT };

static const struct {
    const char *name, *type, *help;
} identity_families[ID__COUNT] = {
    {"baton_identity_usable", "gauge",
     "1 while the pair holds a token valid beyond the safety margin."},
    {"baton_identity_token_expiry_seconds", "gauge",
     "Seconds until the pair's current token expires (0: none)."},
    {"baton_identity_mints_total", "counter", "Successful mints."},
    {"baton_identity_mint_failures_total", "counter", "Failed mints, by reason."},
    {"baton_identity_mint_duration_seconds", "histogram", "Time to mint a token."},
};

struct identity_visit {
    struct evbuffer *out;
    enum identity_family family;
    int64_t now_s;
};

static void identity_stats_cb(void *ctx, const struct identity_pair_stats *s)
{
    struct identity_visit *v = ctx;
    const char *name = identity_families[v->family].name;
    char id[256], aud[512], labels[900], more[1000], metric[128];
    uint64_t cumulative = 0;

    metrics_label_escape(id, sizeof(id), s->identity);
    metrics_label_escape(aud, sizeof(aud), s->audience);
    snprintf(labels, sizeof(labels), "identity=\"%s\",audience=\"%s\"", id, aud);
    switch (v->family) {
    case ID_USABLE:
        metrics_write_sample(v->out, name, labels, s->usable ? 1 : 0);
        break;
    case ID_EXPIRY:
        metrics_write_sample(v->out, name, labels,
                             s->expires_at > v->now_s ? (double)(s->expires_at - v->now_s) : 0);
        break;
    case ID_MINTS:
        metrics_write_sample(v->out, name, labels, (double)s->mints_ok);
        break;
    case ID_FAILURES:
        for (int i = 0; i < IDENTITY_FAIL__COUNT; i++) {
            snprintf(more, sizeof(more), "%s,reason=\"%s\"", labels, identity_failure_name(i));
            metrics_write_sample(v->out, name, more, (double)s->failures[i]);
        }
        break;
    case ID_DURATION:
        snprintf(metric, sizeof(metric), "%s_bucket", name);
        for (int i = 0; i <= IDENTITY_LATENCY_BUCKETS; i++) {
            cumulative += s->latency_buckets[i];
            if (i < IDENTITY_LATENCY_BUCKETS)
                snprintf(more, sizeof(more), "%s,le=\"%g\"", labels,
                         identity_latency_bounds_ms[i] / 1000.0);
            else
                snprintf(more, sizeof(more), "%s,le=\"+Inf\"", labels);
            metrics_write_sample(v->out, metric, more, (double)cumulative);
        }
        snprintf(metric, sizeof(metric), "%s_sum", name);
        metrics_write_sample(v->out, metric, labels, s->latency_sum_s);
        snprintf(metric, sizeof(metric), "%s_count", name);
        metrics_write_sample(v->out, metric, labels, (double)s->latency_count);
        break;
    case ID__COUNT:
        break;
    }
}

static void identity_metrics(struct identity *id, struct evbuffer *out)
{
    struct identity_visit v = {out, ID_USABLE, now_ms() / 1000};
    for (int f = 0; f < ID__COUNT; f++) {
        v.family = f;
        metrics_write_header(out, identity_families[f].name, identity_families[f].type,
                             identity_families[f].help);
        identity_stats_visit(id, identity_stats_cb, &v);
    }
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    struct runtime *rt = runtime_current();

    metrics_render(b);
    if (rt) {
        /* each issuer's figures read once, then one group per family */
        size_t n = jwks_issuer_count(rt->jwks), k = 0;
        struct {
            char name[256];
            struct jwks_issuer_stats st;
        } *iss = xcalloc(n ? n : 1, sizeof(*iss));
        char labels[320];

        for (size_t i = 0; i < n; i++)
            if (jwks_stats(rt->jwks, i, &iss[k].st) == 0) {
                metrics_label_escape(iss[k].name, sizeof(iss[k].name),
                                     iss[k].st.name ? iss[k].st.name : "");
                k++;
            }
        metrics_write_header(b, "baton_keyset_refreshes_total", "counter",
                             "Key set refresh attempts, by issuer and result.");
        for (size_t i = 0; i < k; i++) {
            snprintf(labels, sizeof(labels), "issuer=\"%s\",result=\"ok\"", iss[i].name);
            metrics_write_sample(b, "baton_keyset_refreshes_total", labels,
                                 (double)iss[i].st.fetch_ok);
            snprintf(labels, sizeof(labels), "issuer=\"%s\",result=\"failed\"", iss[i].name);
            metrics_write_sample(b, "baton_keyset_refreshes_total", labels,
                                 (double)iss[i].st.fetch_failed);
        }
        metrics_write_header(b, "baton_keyset_keys", "gauge",
                             "Usable keys in the current key set.");
        for (size_t i = 0; i < k; i++) {
            snprintf(labels, sizeof(labels), "issuer=\"%s\"", iss[i].name);
            metrics_write_sample(b, "baton_keyset_keys", labels, (double)iss[i].st.keys);
        }
        metrics_write_header(b, "baton_keyset_empty_total", "counter",
                             "Well-formed key sets without a usable key that replaced the "
                             "previous set (every token of the issuer refused).");
        for (size_t i = 0; i < k; i++) {
            snprintf(labels, sizeof(labels), "issuer=\"%s\"", iss[i].name);
            metrics_write_sample(b, "baton_keyset_empty_total", labels,
                                 (double)iss[i].st.empty_sets);
        }
        free(iss);
        metrics_write(
            b, "baton_config_generation", "gauge",
            "Generation of the configuration snapshot in use (1 at start, +1 per reload).", NULL,
            (double)rt->generation);
    }
    {
        struct runtime_reload st;
        runtime_reload_status(&st);
        metrics_write(b, "baton_config_last_reload_successful", "gauge",
                      "1 when the last load of the config and policies (start or SIGHUP) was "
                      "taken; 0 when it was refused and an older set serves.",
                      NULL, st.ok ? 1 : 0);
        metrics_write(b, "baton_config_last_reload_success_timestamp_seconds", "gauge",
                      "Unix time of the last successful load (the running set's).", NULL,
                      (double)st.success_ms / 1000.0);
    }
    if (a->deps.audit) {
        struct audit_stats st;
        audit_stats(a->deps.audit, &st);
        metrics_write(b, "baton_audit_queue_depth", "gauge",
                      "Audit records reserved or queued, not yet written.", NULL,
                      (double)st.queue_depth);
        metrics_write(b, "baton_audit_records_total", "counter", "Request records written.", NULL,
                      (double)st.written);
        metrics_write(b, "baton_audit_failures_total", "counter",
                      "Audit write, fsync, open or rename errors.", NULL, (double)st.failures);
        metrics_write(b, "baton_audit_lost_total", "counter", "Audit records never written.", NULL,
                      (double)st.lost);
        metrics_write(b, "baton_audit_refused_total", "counter",
                      "Requests refused because no audit slot could be reserved.", NULL,
                      (double)st.refused);
        metrics_write(b, "baton_audit_healthy", "gauge", "1 while audit records can be written.",
                      NULL, st.healthy ? 1 : 0);
        metrics_write(b, "baton_audit_witness_written_total", "counter",
                      "Records (open and checkpoints) created in the audit witness.", NULL,
                      (double)st.witness_written);
        metrics_write(b, "baton_audit_witness_existing_total", "counter",
                      "Records found already in the witness with the same content.", NULL,
                      (double)st.witness_existing);
        metrics_write(b, "baton_audit_witness_conflicts_total", "counter",
                      "Witness names already holding another record (or unreadable to compare).",
                      NULL, (double)st.witness_conflicts);
        metrics_write(b, "baton_audit_witness_failures_total", "counter",
                      "Failed witness attempts (each is retried).", NULL,
                      (double)st.witness_failures);
        metrics_write(b, "baton_audit_witness_dropped_total", "counter",
                      "Records never witnessed (queue full, or pending at shutdown).", NULL,
                      (double)st.witness_dropped);
        metrics_write(b, "baton_audit_witness_pending", "gauge", "Records waiting to be witnessed.",
                      NULL, (double)st.witness_pending);
        metrics_write(b, "baton_audit_checkpoints_total", "counter",
                      "Signed checkpoint records written.", NULL, (double)st.checkpoints);
        metrics_write(b, "baton_audit_bytes_total", "counter",
                      "Bytes written to the audit log, newlines included.", NULL, (double)st.bytes);
        metrics_write(b, "baton_audit_fsyncs_total", "counter", "fsync calls on the audit log.",
                      NULL, (double)st.fsyncs);
        metrics_write(b, "baton_audit_rotations_total", "counter", "Audit log rotations.", NULL,
                      (double)st.rotations);
    }
    if (a->deps.identity && rt && rt->needs_identity) {
        identity_metrics(a->deps.identity, b);
    }
    redis_metrics_render(b);
    {
        struct otlp_stats os;
        otlp_stats(&os);
        metrics_write(b, "baton_trace_spans_exported_total", "counter",
                      "Spans the OTLP collector accepted (tracing.otlp_endpoint).", NULL,
                      (double)os.exported);
        metrics_write_header(b, "baton_trace_spans_dropped_total", "counter",
                             "Spans never exported: the queue was full, or their export failed "
                             "for good.");
        metrics_write_sample(b, "baton_trace_spans_dropped_total", "cause=\"queue_full\"",
                             (double)os.dropped_queue);
        metrics_write_sample(b, "baton_trace_spans_dropped_total", "cause=\"export_failed\"",
                             (double)os.dropped_export);
        metrics_write(b, "baton_trace_export_failures_total", "counter",
                      "Failed OTLP export POSTs (every attempt, retries included).", NULL,
                      (double)os.failures);
    }
    runtime_unref(rt);
    reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
    evbuffer_free(b);
}

static void on_jwks(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    char *doc = a->deps.identity ? identity_jwks_json(a->deps.identity) : NULL;

    if (doc) {
        evbuffer_add(b, doc, strlen(doc));
        reply(req, 200, "application/jwk-set+json", b);
    } else {
        evbuffer_add_printf(b, "{\"error\":\"not_found\"}\n");
        reply(req, 404, "application/json", b);
    }
    free(doc);
    evbuffer_free(b);
}

static void on_audit_key(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    struct evbuffer *b = evbuffer_new();
    const char *pem = a->deps.audit ? audit_public_key_pem(a->deps.audit) : NULL;

    if (pem) {
        evbuffer_add(b, pem, strlen(pem));
        reply(req, 200, "application/x-pem-file", b);
    } else {
        evbuffer_add_printf(b, "{\"error\":\"not_found\"}\n");
        reply(req, 404, "application/json", b);
    }
    evbuffer_free(b);
}

/* The caller assertion's key set (also on the serving port), cacheable. */
static void on_assertion_jwks(struct evhttp_request *req, void *arg)
{
    struct runtime *rt = runtime_current();
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    (void)arg;

    if (rt && rt->assertion) {
        size_t n;
        const char *doc = assertion_signer_jwks(rt->assertion, &n);
        char cc[48];
        evbuffer_add(b, doc, n);
        snprintf(cc, sizeof(cc), "public, max-age=%d", ASSERTION_JWKS_MAX_AGE_S);
        evhttp_add_header(h, "Content-Type", "application/jwk-set+json");
        evhttp_add_header(h, "Cache-Control", cc);
        evhttp_send_reply(req, 200, "OK", b);
    } else {
        evbuffer_add_printf(b, "{\"error\":\"not_found\"}\n");
        reply(req, 404, "application/json", b);
    }
    runtime_unref(rt);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    (void)arg;
    evbuffer_add_printf(b, "{\"error\":\"not_found\"}\n");
    reply(req, 404, "application/json", b);
    evbuffer_free(b);
}

struct admin *admin_start(struct event_base *bg, const struct cfg_addr *addr,
                          const struct admin_deps *deps, char *err, size_t errlen)
{
    struct admin *a = xcalloc(1, sizeof(*a));

    a->deps = *deps;
    a->http = evhttp_new(bg);
    if (!a->http) {
        snprintf(err, errlen, "cannot create the admin listener");
        goto fail;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_cb(a->http, "/healthz", on_healthz, a);
    evhttp_set_cb(a->http, "/readyz", on_readyz, a);
    evhttp_set_cb(a->http, "/metrics", on_metrics, a);
    evhttp_set_cb(a->http, "/.well-known/jwks.json", on_jwks, a);
    evhttp_set_cb(a->http, "/audit/public-key", on_audit_key, a);
    evhttp_set_cb(a->http, "/.well-known/baton/jwks.json", on_assertion_jwks, a);
    evhttp_set_gencb(a->http, on_other, a);
    if (!evhttp_bind_socket_with_handle(a->http, addr->host, (unsigned short)addr->port)) {
        snprintf(err, errlen, "cannot bind the admin listener to %s:%d", addr->host, addr->port);
        goto fail;
    }
    return a;
fail:
    admin_free(a);
    return NULL;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
