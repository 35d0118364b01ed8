/* Unit tests of otlp.c's ExportTraceServiceRequest JSON builder (OTLP/HTTP
 * JSON: hex ids, decimal-string times and intValues, integer enums) and of
 * trace.c's sampling of new traces when export is on. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "otlp.h"
#include "trace.h"
#include "tap.h"

/* attributes[] as key -> value object */
static json_t *attr(json_t *attrs, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a) {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *sattr(json_t *attrs, const char *key)
{
    json_t *v = attr(attrs, key);
    return v ? json_string_value(json_object_get(v, "stringValue")) : NULL;
}

static const char *iattr(json_t *attrs, const char *key)
{
    json_t *v = attr(attrs, key);
    return v ? json_string_value(json_object_get(v, "intValue")) : NULL;
}

static void fill(struct otlp_span *s, bool upstream)
{
    memset(s, 0, sizeof(*s));
    strcpy(s->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    strcpy(s->span_id, "1122334455667788");
    strcpy(s->parent_id, "00f067aa0ba902b7");
    s->start_ns = 1764755000123456789ull;
    s->end_ns = 1764755000223456789ull;
    strcpy(s->method, "POST");
    strcpy(s->path, "/billing/re\"conc\nile");
    strcpy(s->step, "billing-reconcile");
    s->decision = "allow";
    s->reason = "allowed";
    s->status = 200;
    if (upstream) {
        s->upstream = true;
        s->up_span = 0xabcdef0123456789ull;
        s->up_start_ns = 1764755000130000000ull;
        s->up_end_ns = 1764755000220000000ull;
        strcpy(s->up_name, "billing");
        strcpy(s->up_host, "billing-abc-uc.a.run.app");
        s->up_port = 443;
        s->up_status = 201;
    }
}

static void test_json(void)
{
    struct otlp_span sp[2];
    size_t n = 0;
    char *doc;
    json_error_t je;
    json_t *root, *rs, *res, *ss, *spans, *srv, *cli, *a;

    fill(&sp[0], true);
    fill(&sp[1], false);
    strcpy(sp[1].span_id, "0000000000000abc");
    sp[1].parent_id[0] = '\0';
    sp[1].step[0] = '\0';
    sp[1].decision = "deny";
    sp[1].reason = "no_route";
    sp[1].status = 404;
    doc = otlp_build_json(sp, 2, "8a2c0a4e-5d7b-4c1e-9f1a-0123456789ab", &n);
    is_int((int)n, 3, "two requests, one forwarded: three spans");
    root = json_loads(doc, 0, &je);
    ok(root != NULL, "the body is JSON (%s)", root ? "" : je.text);
    rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    res = json_object_get(json_object_get(rs, "resource"), "attributes");
    is_str(sattr(res, "service.name"), "baton", "resource service.name");
    is_str(sattr(res, "service.instance.id"), "8a2c0a4e-5d7b-4c1e-9f1a-0123456789ab",
           "resource service.instance.id");
    ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    is_str(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "baton",
           "scope name");
    spans = json_object_get(ss, "spans");
    is_int((int)json_array_size(spans), 3, "three spans in the scope");

    srv = json_array_get(spans, 0);
    is_str(json_string_value(json_object_get(srv, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736",
           "traceId: 32 hex, not base64");
    is_str(json_string_value(json_object_get(srv, "spanId")), "1122334455667788", "spanId: hex");
    is_str(json_string_value(json_object_get(srv, "parentSpanId")), "00f067aa0ba902b7",
           "the incoming parent");
    is_int((int)json_integer_value(json_object_get(srv, "kind")), 2, "SPAN_KIND_SERVER");
    is_str(json_string_value(json_object_get(srv, "name")), "POST billing-reconcile",
           "named method and step");
    is_str(json_string_value(json_object_get(srv, "startTimeUnixNano")), "1764755000123456789",
           "start: a decimal string of nanoseconds");
    is_str(json_string_value(json_object_get(srv, "endTimeUnixNano")), "1764755000223456789",
           "end");
    a = json_object_get(srv, "attributes");
    is_str(sattr(a, "baton.step"), "billing-reconcile", "step attribute");
    is_str(sattr(a, "baton.decision"), "allow", "decision attribute");
    is_str(sattr(a, "baton.reason"), "allowed", "reason attribute");
    is_str(sattr(a, "http.request.method"), "POST", "method attribute");
    is_str(sattr(a, "url.path"), "/billing/re\"conc\nile", "path escaped and read back whole");
    is_str(iattr(a, "http.response.status_code"), "200", "status: an intValue string");
    is_int((int)json_integer_value(json_object_get(json_object_get(srv, "status"), "code")), 0,
           "a 200 leaves the status unset");

    cli = json_array_get(spans, 1);
    is_str(json_string_value(json_object_get(cli, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736",
           "the upstream span is in the same trace");
    is_str(json_string_value(json_object_get(cli, "spanId")), "abcdef0123456789",
           "its own span id");
    is_str(json_string_value(json_object_get(cli, "parentSpanId")), "1122334455667788",
           "a child of baton's request span");
    is_int((int)json_integer_value(json_object_get(cli, "kind")), 3, "SPAN_KIND_CLIENT");
    a = json_object_get(cli, "attributes");
    is_str(sattr(a, "baton.upstream"), "billing", "upstream name");
    is_str(sattr(a, "server.address"), "billing-abc-uc.a.run.app", "server.address");
    is_str(iattr(a, "server.port"), "443", "server.port");
    is_str(iattr(a, "http.response.status_code"), "201", "the upstream's status");
    is_str(json_string_value(json_object_get(cli, "startTimeUnixNano")), "1764755000130000000",
           "upstream start");

    srv = json_array_get(spans, 2);
    ok(json_object_get(srv, "parentSpanId") == NULL, "a new trace's span has no parent");
    a = json_object_get(srv, "attributes");
    ok(attr(a, "baton.step") == NULL, "no step attribute without a policy");
    is_str(sattr(a, "baton.reason"), "no_route", "a denied request's reason");
    is_str(json_string_value(json_object_get(srv, "name")), "POST", "named by method alone");
    json_decref(root);
    free(doc);

    /* failed upstream exchange and a 5xx answer: both spans are errors */
    fill(&sp[0], true);
    sp[0].up_status = 0;
    sp[0].status = 502;
    doc = otlp_build_json(sp, 1, "x", &n);
    root = json_loads(doc, 0, &je);
    spans = json_object_get(
        json_array_get(json_object_get(json_array_get(json_object_get(root, "resourceSpans"), 0),
                                       "scopeSpans"),
                       0),
        "spans");
    is_int((int)json_integer_value(
               json_object_get(json_object_get(json_array_get(spans, 0), "status"), "code")),
           2, "a 502 answer: STATUS_CODE_ERROR");
    is_int((int)json_integer_value(
               json_object_get(json_object_get(json_array_get(spans, 1), "status"), "code")),
           2, "no upstream response: STATUS_CODE_ERROR");
    ok(attr(json_object_get(json_array_get(spans, 1), "attributes"), "http.response.status_code") ==
           NULL,
       "no upstream status attribute without a response");
    json_decref(root);
    free(doc);

    /* empty batch is still a valid request */
    doc = otlp_build_json(NULL, 0, "x", &n);
    root = json_loads(doc, 0, &je);
    ok(root != NULL && n == 0, "an empty batch is valid JSON");
    json_decref(root);
    free(doc);
}

static void test_sampling(void)
{
    struct trace_ctx t;
    trace_begin(NULL, 7, 8, 9, &t);
    ok(!t.sampled, "export off: a new trace is not sampled");
    is_str(t.parent_id, "", "a new trace has no parent");
    trace_sample_new(true);
    trace_begin(NULL, 7, 8, 9, &t);
    ok(t.sampled, "export on: a new trace is sampled");
    trace_begin("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 5, 0, 0, &t);
    ok(!t.sampled, "export on: an incoming unsampled flag is kept");
    is_str(t.parent_id, "00f067aa0ba902b7", "the incoming parent-id is kept");
    trace_sample_new(false);
}

int main(void)
{
    test_json();
    test_sampling();
    return tap_done();
}
