/*
 * ready.c: the start gate (ready.h states the contract).
 *
 * The gate polls the /readyz verdict every READY_POLL_MS on the background
 * loop rather than being told by each module: readiness is a conjunction over
 * key sets, identity pairs and the audit writer, each of which already keeps
 * its state thread-safe for /readyz, and a poll of a few microseconds every
 * 5 ms during start costs nothing while adding at most 5 ms to a start of
 * 35-50 ms. One source of truth: what the gate waits for is exactly what
 * /readyz and health_path report.
 */
#include "ready.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "log.h"
#include "util.h"

struct ready_gate {
    struct admin_deps deps;
    struct event *timer; /* owned */
    ready_open_fn open;
    void *arg;
    uint64_t start_ns;
    uint64_t next_log_ns;
    unsigned timeout_ms;
    bool opened;
};

/* Appends "sep what" to out when there is room. */
static void add(char *out, size_t cap, const char *what)
{
    size_t n = strlen(out);
    if (n + 1 >= cap)
        return;
    snprintf(out + n, cap - n, "%s%s", n ? ", " : "", what);
}

void ready_missing(const char *doc, size_t len, char *out, size_t cap)
{
    json_error_t je;
    json_t *d = json_loadb(doc, len, 0, &je);
    json_t *v;
    size_t i;
    char item[400];

    if (cap)
        out[0] = '\0';
    if (!d)
        return;
    if (!json_is_true(json_object_get(d, "config_loaded")))
        add(out, cap, "the configuration");
    json_array_foreach(json_object_get(json_object_get(d, "keys"), "issuers"), i, v) {
        const char *err = json_string_value(json_object_get(v, "last_error"));
        if (json_is_true(json_object_get(v, "loaded")))
            continue;
        snprintf(item, sizeof(item), "issuer %s keys (%s)",
                 json_string_value(json_object_get(v, "name"))
                     ? json_string_value(json_object_get(v, "name"))
                     : "?",
                 err ? err : "first fetch in flight");
        add(out, cap, item);
    }
    v = json_object_get(d, "identity");
    if (json_is_true(json_object_get(v, "required")) &&
        !json_is_true(json_object_get(v, "ready"))) {
        const char *detail = json_string_value(json_object_get(v, "detail"));
        snprintf(item, sizeof(item), "Google identity tokens (%s)",
                 detail ? detail : "first mint in flight");
        add(out, cap, item);
    }
    if (!json_is_true(json_object_get(json_object_get(d, "audit"), "healthy")))
        add(out, cap, "the audit log");
    if (json_is_true(json_object_get(d, "draining")))
        add(out, cap, "draining");
    json_decref(d);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct ready_gate *g = arg;
    struct evbuffer *b = evbuffer_new();
    uint64_t now = mono_ns(), waited_ms = (now - g->start_ns) / 1000000u;
    bool ready;
    char missing[1024] = "", fields[1600], esc[1200];
    size_t len;
    const char *doc;
    (void)fd;
    (void)what;

    if (!b)
        abort();
    ready = admin_ready(&g->deps, b);
    len = evbuffer_get_length(b);
    doc = (const char *)evbuffer_pullup(b, -1);
    if (!ready)
        ready_missing(doc ? doc : "", doc ? len : 0, missing, sizeof(missing));
    if (ready || waited_ms >= g->timeout_ms) {
        g->opened = true;
        if (ready) {
            log_msg(LOG_INFO, "ready after %llu ms: accepting connections",
                    (unsigned long long)waited_ms);
        } else {
            json_escape(esc, sizeof(esc), missing, strlen(missing));
            snprintf(fields, sizeof(fields), "\"waited_ms\":%llu,\"missing\":\"%s\"",
                     (unsigned long long)waited_ms, esc);
            log_msg_fields(LOG_WARNING, fields,
                           "ready_timeout_ms (%u) passed: accepting connections; still missing: "
                           "%s (their requests get 503 with Retry-After until it arrives)",
                           g->timeout_ms, missing);
        }
        evbuffer_free(b);
        g->open(g->arg, ready, missing);
        return;
    }
    if (now >= g->next_log_ns) {
        json_escape(esc, sizeof(esc), missing, strlen(missing));
        snprintf(fields, sizeof(fields), "\"waited_ms\":%llu,\"missing\":\"%s\"",
                 (unsigned long long)waited_ms, esc);
        log_msg_fields(LOG_INFO, fields,
                       "not ready after %llu ms, the serving port stays closed (at most %u ms): "
                       "waiting for %s",
                       (unsigned long long)waited_ms, g->timeout_ms, missing);
        g->next_log_ns = now + (uint64_t)READY_LOG_EVERY_MS * 1000000u;
    }
    evbuffer_free(b);
    {
        struct timeval tv = {0, READY_POLL_MS * 1000};
        evtimer_add(g->timer, &tv);
    }
}

struct ready_gate *ready_gate_start(struct event_base *bg, const struct admin_deps *deps,
                                    unsigned timeout_ms, ready_open_fn open, void *arg)
{
    struct ready_gate *g = xcalloc(1, sizeof(*g));
    struct timeval now = {0, 0};

    g->deps = *deps;
    g->open = open;
    g->arg = arg;
    g->timeout_ms = timeout_ms;
    g->start_ns = mono_ns();
    g->next_log_ns = g->start_ns + (uint64_t)READY_LOG_FIRST_MS * 1000000u;
    g->timer = evtimer_new(bg, on_poll, g);
    if (!g->timer)
        abort(); /* libevent out of memory */
    evtimer_add(g->timer, &now);
    return g;
}

bool ready_gate_opened(const struct ready_gate *g)
{
    return g && g->opened;
}

void ready_gate_free(struct ready_gate *g)
{
    if (!g)
        return;
    event_free(g->timer);
    free(g);
}
