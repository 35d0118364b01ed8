/*
 * test_http1_diff.c: the header-line fast path of http1.c (one pass with
 * SSE2 or SWAR over a plainly good line) against a plain bytewise reference
 * of the header-line rules, kept here, on many generated heads.
 *
 * Each head is a request line (or a status line), a few fixed valid headers
 * (Host, Connection, Content-Length, a long Authorization), a padding header
 * whose length moves everything after it across 8- and 16-byte boundaries,
 * the line under test, one more header and the empty line. The line under
 * test is a template (names and values of many lengths, a long bearer-sized
 * value) with one byte replaced, at every position, by every byte value, or
 * by each of the bytes that matter (CR, LF, NUL, HTAB, SP, DEL, ':', 0x80,
 * 0xff) where the template is long. Every head is parsed whole, cut at a few
 * lengths, and under line, head and count limits just around its size; the
 * parser and the reference must give the same status, reason, detail, error
 * offset, head length and header slices, and each header's class and id
 * must be hdrclass_of's for its name (the parser folds short names in its
 * own pass and classifies them by hdrclass_of_folded). Every buffer is a heap block of
 * exactly its length, so the sanitizer build also catches a read past it.
 *
 * Built twice: test_http1_diff runs the parser of libbaton (the SSE2 path on
 * x86-64), test_http1_diff_scalar compiles http1.c into itself with
 * HTTP1_NO_SSE2, so the SWAR and bytewise fallback are held to the same
 * reference. That one compiles hdrclass.c in too, and holds hdrclass_of's
 * path for short names (two words in registers) to classify_any, the path
 * every other name takes, on every byte value at every position of names
 * of 1 to 17 bytes, in the built-in table and a configured one.
 */
#ifdef HTTP1_DIFF_SCALAR
#define HTTP1_NO_SSE2 1
#include "http1.c"
#ifdef HTTP1_SSE2
#error "HTTP1_NO_SSE2 did not turn the SSE2 path off"
#endif
#include "hdrclass.c"
#endif

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "tap.h"

/* ---- the reference: header lines, byte by byte --------------------------- */

struct ref_hdr {
    size_t name, name_len, value, value_len; /* offsets into the buffer */
};

struct ref_result {
    int rc;
    enum reason reason;
    const char *detail;
    size_t off;
    size_t head_len;
    unsigned n;
    struct ref_hdr h[HTTP1_MAX_HEADERS];
};

static bool ref_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int ref_fail(struct ref_result *r, bool response, size_t off, enum reason why,
                    const char *detail)
{
    r->rc = HTTP1_ERROR;
    r->reason = response ? REASON_UPSTREAM_ERROR : why;
    r->detail = detail;
    r->off = off;
    return HTTP1_ERROR;
}

/*
 * The header lines of b[0..len) from s (the first line after the request or
 * status line), as http1.h specifies them: line by line, a line's bytes left
 * to right, the line's end (or the limit that cut it) after its content.
 */
static int ref_lines(const unsigned char *b, size_t len, size_t s, size_t max_head, size_t max_line,
                     unsigned max_headers, bool response, struct ref_result *r)
{
    size_t window = len < max_head ? len : max_head;
    bool capped = len >= max_head;

    r->n = 0;
    for (;;) {
        size_t lim = window, ce, next, e, i, colon;
        bool line_cap = false, found = false, complete;

        if (max_line < lim - s) {
            lim = s + max_line;
            line_cap = true;
        }
        for (e = s; e < lim; e++)
            if (b[e] == '\n') {
                found = true;
                break;
            }
        if (found) {
            next = e + 1;
            complete = e > s && b[e - 1] == '\r';
            ce = complete ? e - 1 : e;
        } else {
            next = lim;
            complete = false;
            ce = lim > s && b[lim - 1] == '\r' ? lim - 1 : lim;
        }
        if (complete && ce == s) {
            r->rc = HTTP1_OK;
            r->head_len = next;
            return HTTP1_OK;
        }
        if (ce > s && r->n == max_headers)
            return ref_fail(r, response, s, REASON_HEADERS_TOO_LARGE,
                            "more headers than the header count limit");
        i = s;
        if (i < ce && (b[i] == ' ' || b[i] == '\t'))
            return ref_fail(r, response, i, REASON_BAD_HEADER,
                            r->n ? "obs-fold (line folding) is not accepted"
                                 : "whitespace before the first header");
        while (i < ce && ref_tchar(b[i]))
            i++;
        colon = i;
        if (i == ce) {
            if (complete)
                return ref_fail(r, response, i, REASON_BAD_HEADER, "header line without a colon");
        } else if (b[i] == ':') {
            if (i == s)
                return ref_fail(r, response, i, REASON_BAD_HEADER, "empty header name");
            for (i++; i < ce; i++) {
                if (b[i] == '\t' || (b[i] >= 0x20 && b[i] != 0x7f))
                    continue;
                if (b[i] == '\r')
                    return ref_fail(r, response, i, REASON_BAD_FRAMING, "CR not followed by LF");
                return ref_fail(r, response, i, REASON_BAD_HEADER,
                                b[i] ? "control byte in a header value" : "NUL in a header value");
            }
        } else if (b[i] == '\r') {
            return ref_fail(r, response, i, REASON_BAD_FRAMING, "CR not followed by LF");
        } else if (b[i] == ' ' || b[i] == '\t') {
            return ref_fail(r, response, i, REASON_BAD_HEADER,
                            "whitespace in a header name or before the colon");
        } else {
            return ref_fail(r, response, i, REASON_BAD_HEADER,
                            "invalid character in a header name");
        }
        if (!complete) {
            if (found)
                return ref_fail(r, response, ce, REASON_BAD_FRAMING,
                                "bare LF: lines must end with CRLF");
            if (line_cap || lim - s == max_line)
                return ref_fail(r, response, ce, REASON_HEADERS_TOO_LARGE,
                                "line longer than the line limit");
            if (capped)
                return ref_fail(r, response, ce, REASON_HEADERS_TOO_LARGE,
                                "head larger than the header limit");
            r->rc = HTTP1_INCOMPLETE;
            return HTTP1_INCOMPLETE;
        }
        {
            struct ref_hdr *h = &r->h[r->n++];
            size_t vs = colon + 1, ve = ce;
            while (vs < ve && (b[vs] == ' ' || b[vs] == '\t'))
                vs++;
            while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
                ve--;
            h->name = s;
            h->name_len = colon - s;
            h->value = vs;
            h->value_len = ve - vs;
        }
        s = next;
    }
}

/* ---- generated heads ------------------------------------------------------ */

#define REQ_LINE "POST /x HTTP/1.1\r\n"
#define STATUS_LINE "HTTP/1.1 200 OK\r\n"

static char token[801]; /* a bearer-sized base64url run */
static unsigned long n_runs, n_fail;

static size_t build(char *out, bool response, bool fixed, size_t pad, const char *line,
                    size_t line_len, size_t *line_at)
{
    size_t n = 0;
#define PUT(p, l) (memcpy(out + n, (p), (l)), n += (l))
#define PUTS(s) PUT((s), strlen(s))
    PUTS(response ? STATUS_LINE : REQ_LINE);
    if (!response)
        PUTS("Host: a.example\r\n");
    if (fixed) {
        PUTS("Connection: keep-alive\r\n");
        PUTS("Content-Length: 5\r\n");
        if (!response) {
            PUTS("Authorization: Bearer ");
            PUTS(token);
            PUTS("\r\n");
        }
    }
    PUTS("X-Pad: ");
    memset(out + n, 'p', pad);
    n += pad;
    PUTS("\r\n");
    *line_at = n;
    PUT(line, line_len);
    PUTS("X-After: z\r\n\r\n");
#undef PUTS
#undef PUT
    return n;
}

static const char *reason_str(enum reason r)
{
    static char b[16];
    snprintf(b, sizeof(b), "%d", (int)r);
    return b;
}

/* Parses b[0..len) both ways under the limits and compares. */
static void run(const char *src, size_t len, bool response, size_t max_head, size_t max_line,
                unsigned max_headers, const char *what)
{
    static struct http1_request rq;
    static struct http1_response rs;
    static struct ref_result ref;
    struct http1_limits lim = {.max_header_bytes = max_head,
                               .max_uri_bytes = 0,
                               .max_line_bytes = max_line,
                               .max_headers = max_headers};
    char *b = malloc(len ? len : 1);
    size_t first = strlen(response ? STATUS_LINE : REQ_LINE), hl = 0;
    const struct http1_header *hd;
    enum reason reason;
    const char *detail;
    size_t off;
    unsigned n;
    int rc, want;
    bool same;

    memcpy(b, src, len);
    if (response) {
        rc = http1_parse_response(b, len, &lim, HTTP1_METHOD_GET, &rs, &hl);
        reason = rs.error, detail = rs.detail, off = rs.error_offset, n = rs.n_headers;
        hd = rs.headers;
    } else {
        rc = http1_parse_request(b, len, &lim, &rq, &hl);
        reason = rq.error, detail = rq.detail, off = rq.error_offset, n = rq.n_headers;
        hd = rq.headers;
    }
    memset(&ref, 0, sizeof(ref));
    ref.reason = REASON_ALLOWED;
    if (len < first) /* every cut keeps the first line whole, or the whole head */
        abort();
    if (!max_head)
        max_head = HTTP1_DEFAULT_MAX_HEADER_BYTES;
    if (max_line && max_line < first) { /* the limit cuts the (valid) first line */
        want = ref_fail(&ref, response, b[max_line - 1] == '\r' ? max_line - 1 : max_line,
                        REASON_HEADERS_TOO_LARGE, "line longer than the line limit");
    } else {
        want = ref_lines((const unsigned char *)b, len, first, max_head,
                         max_line ? max_line : max_head,
                         !max_headers                      ? HTTP1_DEFAULT_MAX_HEADERS
                         : max_headers > HTTP1_MAX_HEADERS ? HTTP1_MAX_HEADERS
                                                           : max_headers,
                         response, &ref);
    }
    same = rc == want;
    if (same && rc == HTTP1_ERROR)
        same = reason == ref.reason && detail && strcmp(detail, ref.detail) == 0 && off == ref.off;
    if (same && rc == HTTP1_OK) {
        same = hl == ref.head_len && n == ref.n;
        for (unsigned i = 0; same && i < n; i++) {
            enum hdrclass_id id;
            unsigned cls = hdrclass_of(NULL, b + ref.h[i].name, ref.h[i].name_len, &id);
            same = hd[i].name == b + ref.h[i].name && hd[i].name_len == ref.h[i].name_len &&
                   hd[i].value == b + ref.h[i].value && hd[i].value_len == ref.h[i].value_len &&
                   hd[i].cls == cls && hd[i].id == id;
        }
    }
    n_runs++;
    if (!same && n_fail++ < 10)
        tap_diag("%s (%s, len %zu, limits %zu/%zu/%u): parser rc %d reason %s detail %s off %zu;"
                 " reference rc %d reason %d detail %s off %zu",
                 what, response ? "response" : "request", len, max_head, max_line, max_headers, rc,
                 reason_str(reason), detail ? detail : "-", off, want, (int)ref.reason,
                 ref.detail ? ref.detail : "-", ref.off);
    free(b);
}

/* The whole head, and under the limits just around its line and its size. */
static void run_all(const char *head, size_t len, size_t line_at, size_t line_len, bool response,
                    bool cuts, const char *what)
{
    size_t first = strlen(response ? STATUS_LINE : REQ_LINE);

    run(head, len, response, 0, 0, 0, what);
    if (!cuts)
        return;
    /* cut: inside the line under test, at its end, and short of the end */
    for (size_t c = line_at; c < line_at + line_len + 2 && c < len; c += line_len / 3 + 1)
        run(head, c, response, 0, 0, 0, what);
    run(head, len - 1, response, 0, 0, 0, what);
    run(head, len - 2, response, 0, 0, 0, what);
    /* line limits around the line under test (CRLF included) and the head limits */
    for (size_t d = 0; d < 4; d++) {
        if (line_len + d >= 2)
            run(head, len, response, 0, line_len + d - 2, 0, what);
        run(head, len, response, len + d - 2, 0, 0, what);
        if (line_at + d > first + 2)
            run(head, len, response, line_at + d - 2, 0, 0, what);
    }
    if (memchr(head + line_at, '\n', line_len - 1) || memchr(head + line_at, '\r', line_len - 2) ||
        head[line_at + line_len - 2] != '\r')
        for (unsigned m = 1; m < 8; m++) /* the count limit, where the line's end moved */
            run(head, len, response, 0, 0, m, what);
    else
        run(head, len, response, 0, 0, 1, what);
}

static const char *const names[] = {
    "X",
    "X-",
    "X-Gen",
    "X-Gen-Fi",
    "X-Gen-Field",
    "X-Gen-Field-Abcd",
    /* names with a class or an id that the parser does not act on */
    "User-Agent",
    "X-Request-Id",
    "keep-alive",
    "X-Goog-Abc",
    "UPGRADE",
    "X-Forwarded-Host",
    "X-Gen-Field-Abcdefghijklmno",
    "X-Gen-Field-Abcdefghijklmnopqrstu",
};
static const size_t value_lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33};

static const unsigned char special[] = {'\r', '\n', 0,    '\t', ' ', 0x7f, ':',
                                        0x1f, 0x20, 0x80, 0xff, 'a', '_'};

static bool matters(unsigned char c)
{
    return memchr(special, c, 7) != NULL; /* CR LF NUL HTAB SP DEL ':' */
}

/*
 * Every line of a template with one byte replaced: by the special bytes at
 * every position, with the fixed headers after 0, 5 and 11 bytes of
 * padding; without the fixed headers, by every byte value at the first
 * `every_upto` and the last 24 positions (the special ones elsewhere). The
 * cuts and limits run after no padding, where the byte matters (and, on a
 * long template, near its ends).
 */
static void mutate(const char *line, size_t line_len, size_t every_upto, bool response)
{
    static const size_t pads[] = {0, 5, 11};
    static char head[4096], mline[2048];

    for (size_t k = 0; k < sizeof(pads) / sizeof(pads[0]); k++) {
        for (int fixed = 1; fixed >= 0; fixed--) {
            size_t at, len, pad = pads[k];
            bool base = pad == 0;
            if (!fixed && pad)
                continue;
            len = build(head, response, fixed, pad, line, line_len, &at);
            run_all(head, len, at, line_len, response, true, "template");
            for (size_t pos = 0; pos < line_len; pos++) {
                bool ends = pos < every_upto || line_len - pos <= 24, every = !fixed && ends;
                unsigned nv = every ? 256 : sizeof(special);
                for (unsigned v = 0; v < nv; v++) {
                    unsigned char c = every ? (unsigned char)v : special[v];
                    memcpy(mline, line, line_len);
                    mline[pos] = (char)c;
                    len = build(head, response, fixed, pad, mline, line_len, &at);
                    run_all(head, len, at, line_len, response, base && ends && matters(c),
                            "mutated");
                }
            }
        }
    }
}

#ifdef HTTP1_DIFF_SCALAR
static void classes_diff(void)
{
    static const char *const base[] = {
        "te",
        "host",
        "expect",
        "upgrade",
        "x-goog-",
        "x-baton-",
        "forwarded",
        "connection",
        "user-agent",
        "keep-alive",
        "tracestate",
        "x-request-id",
        "content-type",
        "authorization",
        "content-length",
        "http2-settings",
        "x-forwarded-for",
        "x-sfn-execution",
        "x-cloudscheduler",
        "x-forwarded-host",
        "x-forwarded-user",
        "x-forwarded-proto",
        "transfer-encoding",
        "x-tenant",
        "x-api-key",
        "a",
    };
    const char *recorded[] = {"X-Sfn-Execution", "X-Tenant"}, *policy[] = {"x-tenant", "Accept"},
               *cred[] = {"X-Api-Key"};
    char err[128];
    struct hdrclass *t = hdrclass_new(recorded, 2, policy, 2, cred, 1, err, sizeof(err));
    unsigned long total = 0, bad = 0;

    for (int tab = 0; tab < 2; tab++) {
        const struct hdrclass *tt = tab ? t : NULL;
        for (size_t b = 0; b < sizeof(base) / sizeof(base[0]); b++) {
            size_t n = strlen(base[b]);
            for (size_t pos = 0; pos <= n; pos++) {
                for (unsigned v = 0; v < 256; v++) {
                    char name[32];
                    size_t len = n;
                    enum hdrclass_id id1, id2;
                    unsigned c1, c2;
                    memcpy(name, base[b], n);
                    if (pos == n) /* one byte more */
                        name[len++] = (char)v;
                    else
                        name[pos] = (char)v;
                    if (v & 1) /* upper case, every other byte */
                        for (size_t i = 0; i < len; i += 2)
                            if (name[i] >= 'a' && name[i] <= 'z')
                                name[i] = (char)(name[i] - 32);
                    c1 = hdrclass_of(tt, name, len, &id1);
                    c2 = classify_any(tt, name, len, &id2);
                    total++;
                    if (c1 != c2 || id1 != id2) {
                        if (bad++ < 10)
                            tap_diag("class of %.*s: 0x%x id %d, classify_any 0x%x id %d", (int)len,
                                     name, c1, (int)id1, c2, (int)id2);
                    }
                }
            }
        }
    }
    ok(t && bad == 0,
       "classes: %lu names, the short-name path agrees with classify_any (%lu differ)", total, bad);
    hdrclass_free(t);
}
#endif

int main(void)
{
    static char line[2048];
    size_t n;

    for (size_t i = 0; i < sizeof(token) - 1; i++)
        token[i] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 7 + 3) % 64];
    token[sizeof(token) - 1] = 0;
#ifdef HTTP1_DIFF_SCALAR
    tap_diag("http1.c compiled in, SSE2 off: the SWAR and bytewise scanner");
#elif defined(__SSE2__)
    tap_diag("libbaton's http1.c: the SSE2 scanner");
#endif

    for (int response = 0; response < 2; response++) {
        /* names of many lengths, values of many lengths (the names with a
         * class: values of three lengths) */
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            for (size_t j = 0; j < sizeof(value_lens) / sizeof(value_lens[0]); j++) {
                if (strncmp(names[k], "X-Gen", 5) && names[k][1] && j % 4)
                    continue;
                n = (size_t)snprintf(line, sizeof(line), "%s: %.*s\r\n", names[k],
                                     (int)value_lens[j],
                                     "value with\tspace, obs-text \xc3\xa9 and more bytes !~");
                mutate(line, n, n, response);
            }
        }
        /* OWS around the value, an empty value */
        n = (size_t)snprintf(line, sizeof(line), "X-Ows: \t  v v \t \r\n");
        mutate(line, n, n, response);
        n = (size_t)snprintf(line, sizeof(line), "X-Empty:\r\n");
        mutate(line, n, n, response);
        /* a bearer-sized value: every byte value near the ends, the special
         * bytes all along */
        n = (size_t)snprintf(line, sizeof(line), "X-Token: Bearer %s\r\n", token);
        mutate(line, n, 40, response);
    }
#ifdef HTTP1_DIFF_SCALAR
    classes_diff();
#endif
    ok(n_fail == 0,
       "%lu generated heads: the parser agrees with the bytewise reference (%lu differ)", n_runs,
       n_fail);
    return tap_done();
}
