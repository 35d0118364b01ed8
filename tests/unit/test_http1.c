/*
 * test_http1.c: the HTTP/1.1 guard, chunked decoder and response parser.
 *
 * The core is the request-smuggling matrix: one table row per ambiguous or
 * malformed message (CL.TE, TE.CL, TE.TE obfuscations, CL.CL, bad lengths,
 * chunk extensions, trailers, bare LF, obs-fold, Host games, oversized heads)
 * with the precise reason expected. Every row is also replayed at every split
 * point, since the server feeds the parser a growing buffer. Then exact field
 * checks of valid requests, pipelining, the chunked decoder fed in pieces,
 * upstream response framing, the header-hygiene predicates, and the
 * header-name classifier (hdrclass.h) against a list-by-list reference model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdrclass.h"
#include "http1.h"
#include "tap.h"

static struct http1_request req;
static struct http1_response resp;

/* Length of a literal that may contain NUL bytes. */
#define L(s) (sizeof(s) - 1)

static int slice_is(const char *p, size_t n, const char *want)
{
    return p && strlen(want) == n && memcmp(p, want, n) == 0;
}

/* Parses a NUL-free request into the global req. */
static int preq(const char *raw, size_t *hl)
{
    return http1_parse_request(raw, strlen(raw), NULL, &req, hl);
}

/* ---- the smuggling / strictness matrix ---------------------------------- */

struct mcase {
    const char *name;
    const char *raw;
    size_t len;         /* 0: strlen(raw) */
    int head_rc;        /* expected http1_parse_request status on the whole buffer */
    enum reason reason; /* expected reason (head error, or chunked body error) */
};

#define H "Host: a.example\r\n"
#define PH "POST /x HTTP/1.1\r\n" H
#define OKROW(n, r)                       \
    {                                     \
        n, r, 0, HTTP1_OK, REASON_ALLOWED \
    }
#define BAD(n, r, why)                     \
    {                                      \
        n, r, 0, HTTP1_ERROR, REASON_##why \
    }
#define BADN(n, r, why)                       \
    {                                         \
        n, r, L(r), HTTP1_ERROR, REASON_##why \
    }

static const struct mcase matrix[] = {
    /* CL.TE and TE.CL */
    BAD("CL.TE", PH "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        BAD_FRAMING),
    BAD("TE.CL", PH "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
        BAD_FRAMING),
    BAD("CL.TE, TE lowercase", PH "content-length: 6\r\ntransfer-encoding: chunked\r\n\r\n",
        BAD_FRAMING),
    /* TE.TE obfuscations */
    BAD("TE.TE space before colon", PH "Transfer-Encoding : chunked\r\n\r\n", BAD_HEADER),
    BAD("TE.TE tab before colon", PH "Transfer-Encoding\t: chunked\r\n\r\n", BAD_HEADER),
    BAD("TE.TE xchunked", PH "Transfer-Encoding: xchunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE chunked, identity", PH "Transfer-Encoding: chunked, identity\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE identity", PH "Transfer-Encoding: identity\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE chunked, chunked", PH "Transfer-Encoding: chunked, chunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE gzip, chunked", PH "Transfer-Encoding: gzip, chunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE ,chunked", PH "Transfer-Encoding: ,chunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE quoted", PH "Transfer-Encoding: \"chunked\"\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE tab before value", PH "Transfer-Encoding:\tchunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE two spaces before value", PH "Transfer-Encoding:  chunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE trailing space", PH "Transfer-Encoding: chunked \r\n\r\n", BAD_FRAMING),
    BAD("TE.TE trailing tab", PH "Transfer-Encoding: chunked\t\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE vertical tab", PH "Transfer-Encoding: \vchunked\r\n\r\n", BAD_HEADER),
    BAD("TE.TE duplicated header",
        PH "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE second header identity",
        PH "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", BAD_FRAMING),
    BAD("TE.TE underscore name", PH "Transfer_Encoding: chunked\r\n\r\n", BAD_HEADER),
    BAD("TE.TE empty value, chunked folded below", PH "Transfer-Encoding:\r\n chunked\r\n\r\n",
        BAD_FRAMING),
    BAD("obs-fold continuing a valid header", PH "X-A: b\r\n c\r\n\r\n", BAD_HEADER),
    BAD("TE.TE folded header", PH "X-A: b\r\n Transfer-Encoding: chunked\r\n\r\n", BAD_HEADER),
    BAD("TE.TE leading space first header",
        "POST /x HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" H "\r\n", BAD_HEADER),
    BADN("TE.TE NUL in value", PH "Transfer-Encoding: chunked\0\r\n\r\n", BAD_HEADER),
    BAD("TE in HTTP/1.0", "POST /x HTTP/1.0\r\n" H "Transfer-Encoding: chunked\r\n\r\n",
        BAD_FRAMING),
    /* CL.CL and Content-Length values */
    BAD("CL.CL equal", PH "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL.CL different", PH "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", BAD_FRAMING),
    BAD("CL list 5, 5", PH "Content-Length: 5, 5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL +5", PH "Content-Length: +5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL -1", PH "Content-Length: -1\r\n\r\n", BAD_FRAMING),
    BAD("CL two spaces then 5", PH "Content-Length:  5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL tab then 5", PH "Content-Length:\t5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL 5 junk", PH "Content-Length: 5 junk\r\n\r\nhello", BAD_FRAMING),
    BAD("CL 0x5", PH "Content-Length: 0x5\r\n\r\nhello", BAD_FRAMING),
    BAD("CL 5.0", PH "Content-Length: 5.0\r\n\r\nhello", BAD_FRAMING),
    BAD("CL empty", PH "Content-Length:\r\n\r\n", BAD_FRAMING),
    BAD("CL overflow int64", PH "Content-Length: 9223372036854775808\r\n\r\n", BAD_FRAMING),
    BAD("CL 20 digits", PH "Content-Length: 18446744073709551621\r\n\r\n", BAD_FRAMING),
    BAD("CL underscore name", PH "Content_Length: 5\r\n\r\nhello", BAD_HEADER),
    BAD("CL trailing space", PH "Content-Length: 5 \r\n\r\nhello", BAD_FRAMING),
    /* chunked bodies (head is fine, the decoder must refuse) */
    BAD("chunk extension", PH "Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk extension bare ;", PH "Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("last chunk extension", PH "Transfer-Encoding: chunked\r\n\r\n0;x\r\n\r\n", BAD_FRAMING),
    BAD("trailer field", PH "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size 0x5", PH "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size 5 junk", PH "Transfer-Encoding: chunked\r\n\r\n5 junk\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size leading space", PH "Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size +5", PH "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size -5", PH "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size 17 digits",
        PH "Transfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n",
        BAD_FRAMING),
    BAD("chunk size overflows int64",
        PH "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello", BAD_FRAMING),
    BAD("chunk bare LF", PH "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", BAD_FRAMING),
    BAD("chunk data longer than size",
        PH "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", BAD_FRAMING),
    BAD("chunk missing size", PH "Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n", BAD_FRAMING),
    BAD("last chunk bare LF", PH "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", BAD_FRAMING),
    /* line endings */
    BAD("bare LF request line", "GET / HTTP/1.1\n" H "\r\n", BAD_FRAMING),
    BAD("bare LF header", "GET / HTTP/1.1\r\nHost: a\n\r\n", BAD_FRAMING),
    BAD("bare LF end of head", "GET / HTTP/1.1\r\n" H "\n", BAD_FRAMING),
    BAD("lone CR in value", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", BAD_FRAMING),
    BAD("lone CR in request line", "GET /\r HTTP/1.1\r\n" H "\r\n", BAD_FRAMING),
    BAD("CR CR LF", "GET / HTTP/1.1\r\r\n" H "\r\n", BAD_FRAMING),
    BAD("leading bare LF", "\nGET / HTTP/1.1\r\n" H "\r\n", BAD_FRAMING),
    BAD("two leading CRLF", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    /* header names and values */
    BAD("empty header name", "GET / HTTP/1.1\r\n" H ": x\r\n\r\n", BAD_HEADER),
    BAD("space in header name", "GET / HTTP/1.1\r\n" H "X Y: z\r\n\r\n", BAD_HEADER),
    BAD("paren in header name", "GET / HTTP/1.1\r\n" H "X(y): z\r\n\r\n", BAD_HEADER),
    BAD("non-ASCII header name", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: z\r\n\r\n", BAD_HEADER),
    BAD("line without colon", "GET / HTTP/1.1\r\n" H "Xyz\r\n\r\n", BAD_HEADER),
    BADN("NUL in value", "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", BAD_HEADER),
    BAD("SOH in value",
        "GET / HTTP/1.1\r\n" H "X: a\x01"
        "b\r\n\r\n",
        BAD_HEADER),
    BAD("DEL in value", "GET / HTTP/1.1\r\n" H "X: a\x7f\r\n\r\n", BAD_HEADER),
    BAD("ESC in value", "GET / HTTP/1.1\r\n" H "X: \x1b[31m\r\n\r\n", BAD_HEADER),
    BAD("Expect other than 100-continue", "GET / HTTP/1.1\r\n" H "Expect: 200-ok\r\n\r\n",
        BAD_HEADER),
    BAD("Connection names Content-Length",
        "GET / HTTP/1.1\r\n" H "Connection: close, Content-Length\r\n\r\n", BAD_HEADER),
    BAD("Connection names Host", "GET / HTTP/1.1\r\n" H "Connection: host\r\n\r\n", BAD_HEADER),
    BAD("Connection option not a token", "GET / HTTP/1.1\r\n" H "Connection: a;b\r\n\r\n",
        BAD_HEADER),
    BAD("Connection options without comma", "GET / HTTP/1.1\r\n" H "Connection: a b\r\n\r\n",
        BAD_HEADER),
    BAD("two Authorization",
        "GET / HTTP/1.1\r\n" H "Authorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n",
        DUPLICATE_AUTHORIZATION),
    /* Host */
    BAD("no Host in 1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", BAD_HOST),
    BAD("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", BAD_HOST),
    BAD("two Host differing", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BAD_HOST),
    BAD("two Host in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", BAD_HOST),
    BAD("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", BAD_HOST),
    BAD("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD_HOST),
    BAD("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD_HOST),
    BAD("Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD_HOST),
    BAD("Host port 0", "GET / HTTP/1.1\r\nHost: a:0\r\n\r\n", BAD_HOST),
    BAD("Host port 65536", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", BAD_HOST),
    BAD("Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", BAD_HOST),
    BAD("Host port not digits", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", BAD_HOST),
    BAD("Host unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", BAD_HOST),
    BAD("Host percent-encoded", "GET / HTTP/1.1\r\nHost: a%2eb\r\n\r\n", BAD_HOST),
    BAD("absolute-form disagrees with Host", "GET http://b.example/ HTTP/1.1\r\n" H "\r\n",
        BAD_HOST),
    BAD("absolute-form port disagrees", "GET http://a.example:8080/ HTTP/1.1\r\n" H "\r\n",
        BAD_HOST),
    BAD("absolute-form https vs Host :80",
        "GET https://a.example/ HTTP/1.1\r\nHost: a.example:80\r\n\r\n", BAD_HOST),
    BAD("absolute-form Host first, then disagrees",
        "GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", BAD_HOST),
    /* target */
    BAD("target with #", "GET /a#b HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("target with control byte", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("target with tab", "GET /a\tb HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("target with DEL", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("target non-ASCII", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BADN("target with NUL", "GET /a\0 HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("target with space", "GET /a b HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("asterisk with GET", "GET * HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("relative target", "GET a/b HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("ftp absolute-form", "GET ftp://a.example/ HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("absolute-form userinfo", "GET http://u@a.example/ HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("absolute-form empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", BAD_TARGET),
    BAD("absolute-form query without path", "GET http://a.example?x HTTP/1.1\r\n" H "\r\n",
        BAD_TARGET),
    /* request line, method, version */
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", VERSION_NOT_SUPPORTED),
    BAD("HTTP/1.2", "GET / HTTP/1.2\r\n" H "\r\n", VERSION_NOT_SUPPORTED),
    BAD("HTTP/0.9", "GET / HTTP/0.9\r\n" H "\r\n", VERSION_NOT_SUPPORTED),
    BAD("lowercase version", "GET / http/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("version 11", "GET / HTTP/11\r\n" H "\r\n", BAD_REQUEST),
    BAD("junk after version", "GET / HTTP/1.1 \r\n" H "\r\n", BAD_REQUEST),
    BAD("HTTP/0.9 style line", "GET /\r\n" H "\r\n", BAD_REQUEST),
    BAD("method only", "GET\r\n\r\n", BAD_REQUEST),
    BAD("two spaces after method", "GET  / HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("leading space", " GET / HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("tab separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("method not a token", "G(T / HTTP/1.1\r\n" H "\r\n", BAD_REQUEST),
    BAD("CONNECT", "CONNECT a.example:443 HTTP/1.1\r\n" H "\r\n", METHOD_NOT_IMPLEMENTED),
    BAD("TRACE", "TRACE / HTTP/1.1\r\n" H "\r\n", METHOD_NOT_IMPLEMENTED),
    BAD("lowercase get", "get / HTTP/1.1\r\n" H "\r\n", METHOD_NOT_IMPLEMENTED),
    BAD("PROPFIND", "PROPFIND / HTTP/1.1\r\n" H "\r\n", METHOD_NOT_IMPLEMENTED),
    BAD("binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", BAD_REQUEST),
    /* valid neighbours of the rows above: the guard is not over-broad */
    OKROW("TE chunked uppercase", PH "Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"),
    OKROW("TE no space", PH "Transfer-Encoding:chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    OKROW("CL no space", PH "Content-Length:5\r\n\r\nhello"),
    OKROW("CL leading zeros", PH "Content-Length: 005\r\n\r\nhello"),
    OKROW("CL int64 max", PH "Content-Length: 9223372036854775807\r\n\r\n"),
    OKROW("chunk size uppercase hex with zeros",
          PH "Transfer-Encoding: chunked\r\n\r\n000A\r\n0123456789\r\n0\r\n\r\n"),
    OKROW("one leading CRLF", "\r\nGET / HTTP/1.1\r\n" H "\r\n"),
    OKROW("absolute-form matching Host, default port",
          "GET http://A.example:80/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n"),
    OKROW("absolute-form https matching :443",
          "GET https://a.example/x HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
    OKROW("OPTIONS *", "OPTIONS * HTTP/1.1\r\n" H "\r\n"),
    OKROW("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n"),
    OKROW("IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
    OKROW("obs-text in value", "GET / HTTP/1.1\r\n" H "X-Name: caf\xc3\xa9\r\n\r\n"),
    OKROW("Expect in 1.0 ignored", "GET / HTTP/1.0\r\nExpect: whatever\r\n\r\n"),
    OKROW("Connection with empty elements",
          "GET / HTTP/1.1\r\n" H "Connection: , close ,, x-a\r\n\r\n"),
};

/* Runs a matrix row: head, then the chunked body when there is one. */
static void run_case(const struct mcase *c, const struct http1_limits *lim, int *rc_out,
                     enum reason *reason_out)
{
    size_t len = c->len ? c->len : strlen(c->raw), head_len = 0;
    int rc = http1_parse_request(c->raw, len, lim, &req, &head_len);

    *rc_out = rc;
    *reason_out = rc == HTTP1_ERROR ? req.error : REASON_ALLOWED;
    if (rc == HTTP1_OK && req.body == HTTP1_BODY_CHUNKED) {
        struct http1_chunked ck;
        size_t off = head_len, used;
        const char *d;
        size_t dl;
        int r;
        http1_chunked_init(&ck, 0);
        do {
            r = http1_chunked_feed(&ck, c->raw + off, len - off, &used, &d, &dl);
            off += used;
        } while (r == HTTP1_DATA);
        if (r == HTTP1_ERROR) {
            *rc_out = HTTP1_ERROR;
            *reason_out = ck.error;
        } else if (r != HTTP1_DONE) {
            *rc_out = HTTP1_INCOMPLETE;
        }
    }
}

static void test_matrix(void)
{
    size_t n = sizeof(matrix) / sizeof(matrix[0]);
    for (size_t i = 0; i < n; i++) {
        const struct mcase *c = &matrix[i];
        int rc;
        enum reason r;
        run_case(c, NULL, &rc, &r);
        if (c->head_rc == HTTP1_OK) {
            ok(rc == HTTP1_OK, "valid: %s parses (got rc %d, %s: %s)", c->name, rc, reason_code(r),
               rc == HTTP1_ERROR ? (req.detail ? req.detail : "?") : "");
        } else {
            ok(rc == HTTP1_ERROR && r == c->reason, "matrix: %s -> %s %d (got rc %d, %s)", c->name,
               reason_code(c->reason), reason_status(c->reason), rc, reason_code(r));
        }
    }
}

/*
 * Every prefix of a matrix row's head gives HTTP1_INCOMPLETE or the whole
 * row's head result; none gives OK or a different error.
 */
static void test_matrix_prefixes(void)
{
    size_t n = sizeof(matrix) / sizeof(matrix[0]);
    for (size_t i = 0; i < n; i++) {
        const struct mcase *c = &matrix[i];
        size_t len = c->len ? c->len : strlen(c->raw), hl, full_hl;
        int full = http1_parse_request(c->raw, len, NULL, &req, &full_hl);
        enum reason full_r = req.error;
        size_t end = full == HTTP1_OK ? full_hl : len;
        size_t bad = 0;
        for (size_t k = 0; k < end; k++) {
            /* a private copy of exactly k bytes, so ASan catches any over-read */
            char *p = malloc(k ? k : 1);
            int rc;
            memcpy(p, c->raw, k);
            rc = http1_parse_request(p, k, NULL, &req, &hl);
            if (!(rc == HTTP1_INCOMPLETE ||
                  (rc == HTTP1_ERROR && full == HTTP1_ERROR && req.error == full_r))) {
                if (!bad)
                    tap_diag("  %s: prefix %zu gives rc %d %s", c->name, k, rc,
                             reason_code(req.error));
                bad++;
            }
            free(p);
        }
        ok(bad == 0, "split: every prefix of '%s' is incomplete or the same result", c->name);
    }
}

/* ---- valid requests, field by field ------------------------------------- */

static void test_valid_fields(void)
{
    static const char raw[] = "POST http://Example.com:8080/a/b?x=1 HTTP/1.1\r\n"
                              "Host: example.com:8080\r\n"
                              "Content-Length: 11\r\n"
                              "Connection: keep-alive, X-Foo\r\n"
                              "Authorization: Bearer abc\r\n"
                              "X-Empty:\r\n"
                              "X-Pad: \t v  w \t\r\n"
                              "Expect: 100-continue\r\n"
                              "\r\n"
                              "hello world";
    size_t hl = 0;
    const char *v;
    size_t vl;
    int rc = http1_parse_request(raw, L(raw), NULL, &req, &hl);

    is_int(rc, HTTP1_OK, "full request: parses");
    is_int(hl, L(raw) - 11, "full request: head_len ends before the body");
    is_int(req.method, HTTP1_METHOD_POST, "full request: method enum POST");
    ok(slice_is(req.method_str, req.method_len, "POST"), "full request: method slice");
    ok(slice_is(req.target, req.target_len, "http://Example.com:8080/a/b?x=1"),
       "full request: raw target");
    is_int(req.target_form, HTTP1_TARGET_ABSOLUTE, "full request: absolute-form");
    ok(slice_is(req.origin, req.origin_len, "/a/b?x=1"),
       "full request: origin part of absolute-form");
    ok(slice_is(req.scheme, req.scheme_len, "http"), "full request: scheme");
    ok(slice_is(req.authority, req.authority_len, "Example.com:8080"), "full request: authority");
    is_int(req.version, 11, "full request: version 1.1");
    is_int(req.n_headers, 7, "full request: 7 headers");
    ok(slice_is(req.host, req.host_len, "example.com:8080"), "full request: host value");
    ok(slice_is(req.hostname, req.hostname_len, "example.com"),
       "full request: hostname without port");
    is_int(req.port, 8080, "full request: port");
    is_int(req.body, HTTP1_BODY_LENGTH, "full request: body by Content-Length");
    is_int(req.content_length, 11, "full request: content_length 11");
    ok(req.keep_alive, "full request: keep-alive");
    ok(req.expect_100, "full request: expect 100-continue");
    is_int(req.authorization, 3, "full request: Authorization is header 3");
    ok(slice_is(req.headers[3].value, req.headers[3].value_len, "Bearer abc"),
       "full request: Authorization value");
    ok(slice_is(req.headers[4].name, req.headers[4].name_len, "X-Empty") &&
           req.headers[4].value_len == 0,
       "full request: empty value kept");
    ok(slice_is(req.headers[5].value, req.headers[5].value_len, "v  w"),
       "full request: value OWS trimmed, inner spaces kept");
    is_int(req.connection.n, 2, "full request: two Connection names");
    ok(http1_header_in_connection(&req.connection, "x-foo", 5),
       "full request: X-Foo listed in Connection");
    ok(!http1_header_in_connection(&req.connection, "x-bar", 5), "full request: X-Bar not listed");
    is_int(http1_header_find(req.headers, req.n_headers, "content-length", 14, &v, &vl), 1,
           "header_find: one content-length");
    ok(slice_is(v, vl, "11"), "header_find: value of the first match");
    is_int(http1_header_find(req.headers, req.n_headers, "X-Missing", 9, &v, &vl), 0,
           "header_find: none");
    ok(v == NULL && vl == 0, "header_find: none gives NULL/0");

    /* HTTP/1.0 defaults */
    rc = preq("GET /p HTTP/1.0\r\n\r\n", &hl);
    is_int(rc, HTTP1_OK, "1.0: parses without Host");
    ok(req.host == NULL && req.version == 10, "1.0: no host, version 10");
    ok(!req.keep_alive, "1.0: not keep-alive by default");
    is_int(req.body, HTTP1_BODY_NONE, "1.0: no body");
    rc = preq("GET /p HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && req.keep_alive, "1.0: Connection: keep-alive keeps it alive");
    rc = preq("GET http://h.example:81/ HTTP/1.0\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && slice_is(req.hostname, req.hostname_len, "h.example") && req.port == 81,
       "1.0: absolute-form without Host names the host");
    rc = preq("GET http://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && slice_is(req.origin, req.origin_len, "/"),
       "absolute-form with empty path: origin is /");

    rc = preq("DELETE /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && !req.keep_alive && req.method == HTTP1_METHOD_DELETE,
       "1.1: Connection: close ends keep-alive");
    is_int(req.body, HTTP1_BODY_NONE, "no CL and no TE: no body");
    ok(req.authorization == -1 && !req.expect_100, "no Authorization: index -1");

    rc = preq("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && hl == 29, "leading CRLF: skipped and counted in head_len");
    rc = preq("PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &hl);
    ok(rc == HTTP1_OK && req.body == HTTP1_BODY_CHUNKED && req.content_length == 0,
       "chunked: body kind set");
    ok(strcmp(http1_method_name(HTTP1_METHOD_PATCH), "PATCH") == 0, "method_name PATCH");
    is_str(reason_code(REASON_BAD_TARGET), "bad_target", "bad_target reason row");
    is_int(reason_status(REASON_BAD_TARGET), 400, "bad_target is 400");
}

/* ---- incremental and pipelined ------------------------------------------ */

static void test_incremental(void)
{
    static const char *const heads[] = {
        "GET /a?b=c HTTP/1.1\r\nHost: h.example\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n",
        "\r\nPOST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nAuthorization: Bearer x.y.z\r\n\r\n",
        "OPTIONS * HTTP/1.0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        size_t len = strlen(heads[i]), hl = 0, bad = 0;
        struct http1_request full;
        int rc = http1_parse_request(heads[i], len, NULL, &full, &hl);
        ok(rc == HTTP1_OK && hl == len, "incremental %zu: whole head parses, head_len exact", i);
        for (size_t k = 0; k < len; k++) {
            char *p = malloc(k ? k : 1);
            memcpy(p, heads[i], k);
            if (http1_parse_request(p, k, NULL, &req, &hl) != HTTP1_INCOMPLETE)
                bad++;
            free(p);
        }
        ok(bad == 0, "incremental %zu: every proper prefix is incomplete", i);
        /* byte-by-byte growth with worth_parsing gating the calls */
        {
            size_t prev = 0, calls = 0, got = 0;
            int r = HTTP1_INCOMPLETE;
            for (size_t k = 1; k <= len && r == HTTP1_INCOMPLETE; k++) {
                if (!http1_worth_parsing(heads[i], k, prev, NULL))
                    continue;
                calls++;
                r = http1_parse_request(heads[i], k, NULL, &req, &got);
                prev = k;
            }
            ok(r == HTTP1_OK && got == len && req.n_headers == full.n_headers,
               "incremental %zu: gated growth gives the same head (%zu calls)", i, calls);
        }
    }
    ok(!http1_worth_parsing("GET / HT", 8, 4, NULL), "worth_parsing: no LF in new bytes -> false");
    ok(http1_worth_parsing("GET /\r\n", 7, 4, NULL), "worth_parsing: LF in new bytes -> true");
}

static void test_pipelined(void)
{
#define P1 "POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
#define P2 "GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    static const char raw[] = P1
        "hello" P2
        "PUT /three HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        "GET /four HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t off = 0, hl = 0, used;
    int rc = http1_parse_request(raw, L(raw), NULL, &req, &hl);
    struct http1_chunked ck;
    const char *d;
    size_t dl;

    ok(rc == HTTP1_OK && hl == L(P1), "pipelined 1: head_len exactly %zu (got %zu)", L(P1), hl);
    ok(req.content_length == 5 && memcmp(raw + hl, "hello", 5) == 0,
       "pipelined 1: body follows the head");
    off = hl + 5;
    rc = http1_parse_request(raw + off, L(raw) - off, NULL, &req, &hl);
    ok(rc == HTTP1_OK && slice_is(req.target, req.target_len, "/two") && hl == L(P2),
       "pipelined 2: second head parses from its offset, head_len exact");
    off += hl;
    rc = http1_parse_request(raw + off, L(raw) - off, NULL, &req, &hl);
    ok(rc == HTTP1_OK && req.body == HTTP1_BODY_CHUNKED, "pipelined 3: chunked head");
    off += hl;
    http1_chunked_init(&ck, 0);
    rc = http1_chunked_feed(&ck, raw + off, L(raw) - off, &used, &d, &dl);
    ok(rc == HTTP1_DATA && slice_is(d, dl, "abc"), "pipelined 3: chunk data abc");
    off += used;
    rc = http1_chunked_feed(&ck, raw + off, L(raw) - off, &used, &d, &dl);
    is_int(rc, HTTP1_DONE, "pipelined 3: body done");
    is_int(used, 7, "pipelined 3: done consumes exactly CRLF 0 CRLF CRLF");
    off += used;
    rc = http1_parse_request(raw + off, L(raw) - off, NULL, &req, &hl);
    ok(rc == HTTP1_OK && slice_is(req.target, req.target_len, "/four") && off + hl == L(raw),
       "pipelined 4: last head ends the buffer");
}

/* ---- limits --------------------------------------------------------------- */

static void test_limits(void)
{
    struct http1_limits lim = {
        .max_header_bytes = 256, .max_uri_bytes = 32, .max_line_bytes = 64, .max_headers = 3};
    char buf[1024];
    size_t hl;
    int rc;

    snprintf(buf, sizeof(buf), "GET /%031d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    is_int(rc, HTTP1_OK, "limits: target of exactly max_uri bytes is accepted");
    snprintf(buf, sizeof(buf), "GET /%032d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    ok(rc == HTTP1_ERROR && req.error == REASON_URI_TOO_LONG, "limits: max_uri+1 -> 414");
    is_int(reason_status(req.error), 414, "limits: uri_too_long maps to 414");
    /* 414 is known before the line ends */
    rc = http1_parse_request(buf, 40, &lim, &req, &hl);
    ok(rc == HTTP1_ERROR && req.error == REASON_URI_TOO_LONG,
       "limits: 414 on a partial request line");

    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nX-Long: %0*d\r\n\r\n", 55, 0);
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE,
       "limits: header line over max_line -> 431");
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nX-Long: %0*d\r\n\r\n", 54, 0);
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    is_int(rc, HTTP1_OK, "limits: header line of exactly max_line is accepted");

    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n");
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    is_int(rc, HTTP1_OK, "limits: exactly max_headers headers accepted");
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    rc = http1_parse_request(buf, strlen(buf), &lim, &req, &hl);
    ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE, "limits: max_headers+1 -> 431");

    {
        size_t o = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\n");
        while (o < 300)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "X: %040d\r\n", 0);
        memcpy(buf + o, "\r\n", 3);
        lim.max_headers = 100;
        rc = http1_parse_request(buf, o + 2, &lim, &req, &hl);
        ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE,
           "limits: head over max_header -> 431");
        is_int(reason_status(req.error), 431, "limits: headers_too_large maps to 431");
        rc = http1_parse_request(buf, 256, &lim, &req, &hl);
        ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE,
           "limits: 431 as soon as max_header bytes arrive without an end");
        rc = http1_parse_request(buf, 255, &lim, &req, &hl);
        is_int(rc, HTTP1_INCOMPLETE, "limits: one byte below the head limit is incomplete");
    }
    /* default limits: an unbounded header stream is cut at 16 KiB */
    {
        size_t n = HTTP1_DEFAULT_MAX_HEADER_BYTES + 100, o;
        char *big = malloc(n);
        o = (size_t)snprintf(big, n, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
        memset(big + o, 'a', n - o);
        rc = http1_parse_request(big, n, NULL, &req, &hl);
        ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE,
           "limits: default 16 KiB head cap");
        free(big);
    }
    /* too many headers under the default cap */
    {
        size_t n = 8192, o;
        char *many = malloc(n);
        o = (size_t)snprintf(many, n, "GET / HTTP/1.1\r\nHost: h\r\n");
        for (int i = 0; i < 100; i++)
            o += (size_t)snprintf(many + o, n - o, "X%d: y\r\n", i);
        o += (size_t)snprintf(many + o, n - o, "\r\n");
        rc = http1_parse_request(many, o, NULL, &req, &hl);
        ok(rc == HTTP1_ERROR && req.error == REASON_HEADERS_TOO_LARGE,
           "limits: 101 headers -> 431 by default");
        free(many);
    }
}

/* ---- chunked decoder ------------------------------------------------------- */

/* Decodes body fed in pieces of `step` bytes (0: at once); returns the status. */
static int decode(const char *body, size_t len, size_t step, uint64_t max, char *out,
                  size_t *outlen, size_t *end, struct http1_chunked *ck)
{
    size_t fed = 0, buffered_start = 0, o = 0;
    int rc = HTTP1_INCOMPLETE;

    http1_chunked_init(ck, max);
    *end = 0;
    /* the caller's buffer is body[buffered_start .. fed) */
    while (rc == HTTP1_INCOMPLETE || rc == HTTP1_DATA) {
        const char *d;
        size_t dl, used;
        if (rc == HTTP1_INCOMPLETE) {
            if (fed == len)
                break;
            fed = step && len - fed > step ? fed + step : len;
        }
        rc = http1_chunked_feed(ck, body + buffered_start, fed - buffered_start, &used, &d, &dl);
        buffered_start += used;
        if (rc == HTTP1_DATA) {
            memcpy(out + o, d, dl);
            o += dl;
        }
    }
    *outlen = o;
    *end = buffered_start;
    return rc;
}

static void test_chunked(void)
{
    static const char body[] = "5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
    char out[256];
    size_t ol, end, used;
    struct http1_chunked ck;
    int rc;
    const char *d;
    size_t dl;

    rc = decode(body, L(body), 0, 0, out, &ol, &end, &ck);
    is_int(rc, HTTP1_DONE, "chunked: whole body decodes");
    ok(ol == 16 && memcmp(out, "hello 0123456789", 16) == 0, "chunked: data is the concatenation");
    is_int(end, L(body) - 4, "chunked: done stops before the next message");
    is_int(ck.total, 16, "chunked: total counts decoded bytes");
    {
        size_t bad = 0;
        for (size_t step = 1; step < L(body); step++) {
            rc = decode(body, L(body), step, 0, out, &ol, &end, &ck);
            if (rc != HTTP1_DONE || ol != 16 || memcmp(out, "hello 0123456789", 16) != 0 ||
                end != L(body) - 4)
                bad++;
        }
        ok(bad == 0, "chunked: every feed size gives the same data and end");
    }
    /* two-part split at every point */
    {
        size_t bad = 0;
        for (size_t k = 0; k <= L(body); k++) {
            size_t o = 0, start = 0, u;
            int r;
            http1_chunked_init(&ck, 0);
            do {
                r = http1_chunked_feed(&ck, body + start, k - start, &u, &d, &dl);
                start += u;
                if (r == HTTP1_DATA) {
                    memcpy(out + o, d, dl);
                    o += dl;
                }
            } while (r == HTTP1_DATA);
            if (r == HTTP1_INCOMPLETE) {
                do {
                    r = http1_chunked_feed(&ck, body + start, L(body) - start, &u, &d, &dl);
                    start += u;
                    if (r == HTTP1_DATA) {
                        memcpy(out + o, d, dl);
                        o += dl;
                    }
                } while (r == HTTP1_DATA);
            }
            if (r != HTTP1_DONE || o != 16 || start != L(body) - 4)
                bad++;
        }
        ok(bad == 0, "chunked: every two-part split gives the same result");
    }
    rc = decode("0\r\n\r\n", 5, 0, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_DONE && ol == 0 && end == 5, "chunked: empty body");
    rc = decode("5\r\nhel", 6, 0, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_INCOMPLETE && ol == 3 && ck.total == 3,
       "chunked: partial data is delivered early");
    rc = decode("a\r\n0123456789\r\n0\r\n\r\n", 20, 0, 9, out, &ol, &end, &ck);
    ok(rc == HTTP1_ERROR && ck.error == REASON_BODY_TOO_LARGE,
       "chunked: max_total -> body_too_large");
    is_int(ol, 0, "chunked: nothing delivered from a chunk over the cap");
    rc = decode("a\r\n0123456789\r\n0\r\n\r\n", 20, 0, 10, out, &ol, &end, &ck);
    is_int(rc, HTTP1_DONE, "chunked: exactly max_total is accepted");
    rc = decode("fffffffffffffff\r\n", 17, 0, 0, out, &ol, &end, &ck);
    is_int(rc, HTTP1_INCOMPLETE, "chunked: 15 hex digits accepted as a size");
    rc = decode("7fffffffffffffff\r\nx", 19, 0, 0, out, &ol, &end, &ck);
    is_int(rc, HTTP1_INCOMPLETE, "chunked: INT64_MAX size accepted");
    rc = decode("8000000000000000\r\nx", 19, 0, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_ERROR && ck.error == REASON_BAD_FRAMING,
       "chunked: size above INT64_MAX refused");
    http1_chunked_init(&ck, 0);
    rc = http1_chunked_feed(&ck, "5;ext\r\n", 7, &used, &d, &dl);
    ok(rc == HTTP1_ERROR && strstr(ck.detail, "extension") != NULL,
       "chunked: extension detail says so");
    rc = http1_chunked_feed(&ck, "0\r\n\r\n", 5, &used, &d, &dl);
    ok(rc == HTTP1_ERROR && used == 0, "chunked: an error is sticky");
    rc = decode("0\r\n\r\n", 5, 0, 0, out, &ol, &end, &ck);
    rc = http1_chunked_feed(&ck, "x", 1, &used, &d, &dl);
    ok(rc == HTTP1_DONE && used == 0, "chunked: feeding after done consumes nothing");
    rc = decode("0\r\nX: y\r\n\r\n", 11, 1, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_ERROR && strstr(ck.detail, "trailer") != NULL,
       "chunked: trailer refused byte by byte");
    rc = decode("5\r\nhello\n0\r\n\r\n", 14, 0, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_ERROR && ck.error == REASON_BAD_FRAMING, "chunked: bare LF after data refused");
    rc = decode("5\r\nhelloXY0\r\n\r\n", 15, 0, 0, out, &ol, &end, &ck);
    ok(rc == HTTP1_ERROR, "chunked: junk instead of CRLF after data refused");
}

/* ---- responses -------------------------------------------------------------- */

struct rcase {
    const char *name;
    const char *raw;
    enum http1_method method;
    int rc;
    unsigned status;
    enum http1_body body;
    uint64_t cl;
    int keep_alive;
};

static const struct rcase rcases[] = {
    {"200 with CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", HTTP1_METHOD_GET, HTTP1_OK,
     200, HTTP1_BODY_LENGTH, 3, 1},
    {"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_OK, 200, HTTP1_BODY_CHUNKED, 0, 1},
    {"200 close-delimited", "HTTP/1.1 200 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_OK, 200,
     HTTP1_BODY_CLOSE, 0, 0},
    {"1.1 Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_OK, 200, HTTP1_BODY_LENGTH, 0, 0},
    {"1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", HTTP1_METHOD_GET,
     HTTP1_OK, 200, HTTP1_BODY_LENGTH, 1, 0},
    {"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
     HTTP1_METHOD_GET, HTTP1_OK, 200, HTTP1_BODY_LENGTH, 1, 1},
    {"204 no body", "HTTP/1.1 204 No Content\r\n\r\n", HTTP1_METHOD_DELETE, HTTP1_OK, 204,
     HTTP1_BODY_NONE, 0, 1},
    {"204 CL 0", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET, HTTP1_OK,
     204, HTTP1_BODY_NONE, 0, 1},
    {"304 with CL", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_OK, 304, HTTP1_BODY_NONE, 0, 1},
    {"HEAD with CL", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HTTP1_METHOD_HEAD, HTTP1_OK,
     200, HTTP1_BODY_NONE, 0, 1},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET, HTTP1_OK,
     200, HTTP1_BODY_LENGTH, 0, 1},
    {"empty reason phrase", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_OK, 404, HTTP1_BODY_LENGTH, 0, 1},
    {"100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", HTTP1_METHOD_POST, HTTP1_OK, 100,
     HTTP1_BODY_NONE, 0, 1},
    {"101 never requested", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"1xx with CL", "HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_ERROR, 0, 0, 0, 0},
    {"204 with CL 5", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_ERROR, 0, 0, 0, 0},
    {"204 with TE", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"two CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_ERROR, 0, 0, 0, 0},
    {"CL +3", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0,
     0, 0},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0,
     0},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET,
     HTTP1_ERROR, 0, 0, 0, 0},
    {"HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"status 600", "HTTP/1.1 600 X\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"status 2 digits", "HTTP/1.1 20 OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"status no space", "HTTP/1.1 200OK\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR, 0, 0, 0, 0},
    {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc", HTTP1_METHOD_GET,
     HTTP1_ERROR, 0, 0, 0, 0},
    {"LF in value via lone CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", HTTP1_METHOD_GET, HTTP1_ERROR,
     0, 0, 0, 0},
};

static void test_responses(void)
{
    size_t hl;
    for (size_t i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
        const struct rcase *c = &rcases[i];
        size_t len = strlen(c->raw), bad = 0;
        int rc = http1_parse_response(c->raw, len, NULL, c->method, &resp, &hl);
        if (c->rc == HTTP1_OK) {
            ok(rc == HTTP1_OK && resp.status == c->status && resp.body == c->body &&
                   resp.content_length == c->cl && resp.keep_alive == (c->keep_alive != 0),
               "response: %s -> status %u body %d cl %llu keep-alive %d (got rc %d %u %d %llu %d %s)",
               c->name, c->status, c->body, (unsigned long long)c->cl, c->keep_alive, rc,
               resp.status, resp.body, (unsigned long long)resp.content_length, resp.keep_alive,
               resp.detail ? resp.detail : "");
        } else {
            ok(rc == HTTP1_ERROR && resp.error == REASON_UPSTREAM_ERROR,
               "response: %s -> upstream_error 502 (got rc %d)", c->name, rc);
        }
        for (size_t k = 0; k < len; k++) {
            int r;
            char *p = malloc(k ? k : 1);
            memcpy(p, c->raw, k);
            r = http1_parse_response(p, k, NULL, c->method, &resp, &hl);
            if (!(r == HTTP1_INCOMPLETE || (r == HTTP1_ERROR && c->rc == HTTP1_ERROR) ||
                  (r == HTTP1_OK && rc == HTTP1_OK && hl <= k)))
                bad++;
            free(p);
        }
        ok(bad == 0, "response split: %s, every prefix consistent", c->name);
    }
    {
        static const char raw[] =
            "HTTP/1.1 200 Fine Thanks\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            "Connection: X-Up\r\nContent-Length: 2\r\n\r\nok";
        int rc = http1_parse_response(raw, L(raw), NULL, HTTP1_METHOD_GET, &resp, &hl);
        ok(rc == HTTP1_OK && hl == L(raw) - 2, "response: head_len exact");
        ok(slice_is(resp.reason_phrase, resp.reason_len, "Fine Thanks"),
           "response: reason phrase slice");
        is_int(resp.n_headers, 4, "response: four headers kept");
        is_int(http1_header_find(resp.headers, resp.n_headers, "set-cookie", 10, NULL, NULL), 2,
               "response: repeated Set-Cookie kept");
        ok(http1_header_in_connection(&resp.connection, "X-Up", 4),
           "response: Connection names recorded");
        is_int(resp.version, 11, "response: version");
        rc = http1_parse_response(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 63, NULL,
            HTTP1_METHOD_POST, &resp, &hl);
        ok(rc == HTTP1_OK && resp.informational && hl == 25,
           "response: 100 Continue head, then the final one follows");
        rc = http1_parse_response(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + 25, 38,
            NULL, HTTP1_METHOD_POST, &resp, &hl);
        ok(rc == HTTP1_OK && !resp.informational && resp.status == 200,
           "response: final head after 1xx");
    }
}

/* ---- hygiene ------------------------------------------------------------------- */

static void test_hygiene(void)
{
    static const char *const hop[] = {"Connection",
                                      "keep-alive",
                                      "Proxy-Connection",
                                      "TE",
                                      "Trailer",
                                      "Transfer-Encoding",
                                      "upgrade",
                                      "Proxy-Authorization",
                                      "Proxy-Authenticate",
                                      "HTTP2-Settings"};
    static const char *const not_hop[] = {
        "Content-Length", "Authorization", "Te-X", "T", "Host", "Upgrade-Insecure-Requests"};
    static const char *const spoof[] = {"X-Serverless-Authorization",
                                        "x_serverless_authorization",
                                        "X-Forwarded-For",
                                        "X_Forwarded_For",
                                        "x-forwarded-host",
                                        "X-Forwarded-Proto",
                                        "X-Forwarded-Anything",
                                        "Forwarded",
                                        "FORWARDED",
                                        "X-Goog-Iap-Jwt-Assertion",
                                        "x_goog_authenticated_user_email",
                                        "X-Baton-Step",
                                        "X_BATON_CALLER",
                                        "X-HTTP-Method-Override",
                                        "X-HTTP_Method-Override",
                                        "x_http_method_override",
                                        "X-HTTP-Method",
                                        "X_HTTP_METHOD",
                                        "X-Method-Override",
                                        "x_method_override",
                                        "X-Original-URL",
                                        "x_original_url",
                                        "X-Rewrite-URL",
                                        "X-Original-URI",
                                        "X-Real-IP",
                                        "x_real_ip",
                                        "True-Client-IP",
                                        "X-Client-IP",
                                        "CF-Connecting-IP"};
    static const char *const not_spoof[] = {
        "Authorization",
        "X-Request-Id",
        "traceparent",
        "X-Goo",
        "X-Forwarded",
        "XForwarded-For",
        "X-Forwarded-For-Real" /* still X-Forwarded-*: checked below */,
        "X-HTTP-Methods",
        "X-Method",
        "Forwarded-For",
        "X-Serverless-Authorization2",
        "X-Batons"};

    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        ok(http1_header_is_hop_by_hop(hop[i], strlen(hop[i])), "hop-by-hop: %s", hop[i]);
    for (size_t i = 0; i < sizeof(not_hop) / sizeof(not_hop[0]); i++)
        ok(!http1_header_is_hop_by_hop(not_hop[i], strlen(not_hop[i])), "not hop-by-hop: %s",
           not_hop[i]);
    for (size_t i = 0; i < sizeof(spoof) / sizeof(spoof[0]); i++)
        ok(http1_header_is_spoofable(spoof[i], strlen(spoof[i])), "spoofable: %s", spoof[i]);
    for (size_t i = 0; i < sizeof(not_spoof) / sizeof(not_spoof[0]); i++) {
        bool want = strncmp(not_spoof[i], "X-Forwarded-", 12) == 0;
        ok(http1_header_is_spoofable(not_spoof[i], strlen(not_spoof[i])) == want, "%s: %s",
           want ? "spoofable (prefix)" : "not spoofable", not_spoof[i]);
    }
    ok(http1_header_is_forwarding("X_Forwarded_Host", 16), "forwarding: X_Forwarded_Host");
    ok(http1_header_is_forwarding("forwarded", 9), "forwarding: forwarded");
    ok(!http1_header_is_forwarding("X-Goog-Foo", 10), "forwarding: X-Goog-Foo is not");
    ok(!http1_header_is_forwarding("X-Serverless-Authorization", 26),
       "forwarding: X-Serverless-Authorization is not");
    ok(!http1_header_is_spoofable("X-Forwarded-For", 11),
       "spoofable: length respected (X-Forwarded)");
}

/* Header values are checked a word at a time: every byte value, at every
 * offset of a value longer than several words, must get the byte loop's
 * verdict (control bytes and DEL refused, HTAB, SP, VCHAR, obs-text kept),
 * also after a first odd byte sent the check to the byte loop. */
static void test_value_bytes(void)
{
    char raw[256], val[41];
    int wrong = 0, checked = 0;

    for (int c = 0; c < 256; c++) {
        bool good = c == '\t' || (c >= 0x20 && c != 0x7f);
        for (int at = 0; at < 40; at++) {
            for (int tab_first = 0; tab_first < 2; tab_first++) {
                size_t hl = 0, n;
                int rc;
                memset(val, 'a', 40);
                if (tab_first && at > 1)
                    val[1] = '\t'; /* an inner HTAB before the byte */
                val[at] = (char)c;
                n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-V: x");
                memcpy(raw + n, val, 40);
                n += 40;
                memcpy(raw + n, "z\r\n\r\n", 5);
                n += 5;
                if (c == '\r' || c == '\n')
                    continue; /* line structure: the matrix covers lone CR and bare LF */
                rc = http1_parse_request(raw, n, NULL, &req, &hl);
                checked++;
                if ((rc == HTTP1_OK) != good) {
                    if (wrong++ < 3)
                        tap_diag("byte 0x%02x at offset %d (tab first %d): rc %d", c, at, tab_first,
                                 rc);
                } else if (!good && req.error != REASON_BAD_HEADER) {
                    wrong++;
                }
            }
        }
    }
    is_int(wrong, 0, "header values: every byte at every offset gets the byte-wise verdict");
    ok(checked > 20000, "header values: over 20,000 cases checked");
}

/* ---- header classes (hdrclass.h) --------------------------------------- */

/* The reference model: the lists as they were compared one by one before
 * the table, '-' and '_' equivalent where the old code said so. */
static bool ref_eq(const char *name, size_t len, const char *lit, bool prefix, bool dash)
{
    size_t n = strlen(lit);
    if (prefix ? len < n : len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        else if (dash && c == '_')
            c = '-';
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

static bool ref_hop(const char *n, size_t l)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-authorization",
                                      "proxy-authenticate",
                                      "http2-settings"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (ref_eq(n, l, hop[i], false, false))
            return true;
    return false;
}

static bool ref_fwd(const char *n, size_t l)
{
    if (ref_eq(n, l, "x-forwarded-user", false, true) ||
        ref_eq(n, l, "x-forwarded-email", false, true))
        return false;
    return ref_eq(n, l, "forwarded", false, true) || ref_eq(n, l, "x-forwarded-", true, true);
}

static bool ref_spoof(const char *n, size_t l)
{
    static const char *const exact[] = {"x-serverless-authorization",
                                        "x-http-method-override",
                                        "x-http-method",
                                        "x-method-override",
                                        "x-original-url",
                                        "x-rewrite-url",
                                        "x-original-uri",
                                        "x-real-ip",
                                        "true-client-ip",
                                        "x-client-ip",
                                        "cf-connecting-ip",
                                        "x-endpoint-api-userinfo",
                                        "x-apigateway-api-userinfo",
                                        "x-remote-user",
                                        "x-forwarded-user",
                                        "x-forwarded-email",
                                        "x-middleware-subrequest"};
    static const char *const prefixes[] = {"x-goog-", "x-baton-", "x-appengine-",
                                           "x-cloudscheduler", "x-auth-request-"};
    if (ref_fwd(n, l))
        return true;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (ref_eq(n, l, exact[i], false, true))
            return true;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (ref_eq(n, l, prefixes[i], true, true))
            return true;
    return false;
}

static bool ref_dropped(const char *n, size_t l)
{
    static const char *const names[] = {"authorization", "host",         "content-length",
                                        "expect",        "x-request-id", "traceparent"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (ref_eq(n, l, names[i], false, false))
            return true;
    return false;
}

/* Every built-in name, and its neighbours (case flipped, '-'/'_' swapped,
 * one byte short, one byte more, a prefix family's bare prefix), must get
 * the reference model's verdict for every built-in class. */
static void test_classes_model(void)
{
    static const char *const base[] = {"connection",
                                       "keep-alive",
                                       "proxy-connection",
                                       "te",
                                       "trailer",
                                       "transfer-encoding",
                                       "upgrade",
                                       "proxy-authorization",
                                       "proxy-authenticate",
                                       "http2-settings",
                                       "content-length",
                                       "authorization",
                                       "host",
                                       "expect",
                                       "x-request-id",
                                       "traceparent",
                                       "tracestate",
                                       "user-agent",
                                       "forwarded",
                                       "x-forwarded-for",
                                       "x-forwarded-proto",
                                       "x-forwarded-host",
                                       "x-forwarded-",
                                       "x-forwarded-user",
                                       "x-forwarded-email",
                                       "x-serverless-authorization",
                                       "x-http-method-override",
                                       "x-http-method",
                                       "x-method-override",
                                       "x-original-url",
                                       "x-rewrite-url",
                                       "x-original-uri",
                                       "x-real-ip",
                                       "true-client-ip",
                                       "x-client-ip",
                                       "cf-connecting-ip",
                                       "x-endpoint-api-userinfo",
                                       "x-apigateway-api-userinfo",
                                       "x-remote-user",
                                       "x-middleware-subrequest",
                                       "x-goog-",
                                       "x-goog-iap-jwt-assertion",
                                       "x-baton-",
                                       "x-baton-step",
                                       "x-appengine-",
                                       "x-appengine-cron",
                                       "x-cloudscheduler",
                                       "x-cloudscheduler-jobname",
                                       "x-auth-request-",
                                       "x-auth-request-user",
                                       "x-sfn-execution",
                                       "cookie",
                                       "a",
                                       "x",
                                       "x-",
                                       "x-g"};
    unsigned bad = 0, total = 0;

    for (size_t b = 0; b < sizeof(base) / sizeof(base[0]); b++) {
        size_t n = strlen(base[b]);
        for (int v = 0; v < 6; v++) {
            char name[64];
            size_t len = n;
            memcpy(name, base[b], n);
            if (v == 1) /* upper case, every other byte */
                for (size_t i = 0; i < n; i += 2)
                    name[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
            if (v == 2) /* '_' for '-' */
                for (size_t i = 0; i < n; i++)
                    name[i] = name[i] == '-' ? '_' : name[i];
            if (v == 3 && len > 1) /* one byte short */
                len--;
            if (v == 4) /* one byte more */
                name[len++] = 's';
            if (v == 5) /* the first '-' alone as '_', upper case */
                for (size_t i = 0; i < n; i++) {
                    if (name[i] == '-') {
                        name[i] = '_';
                        break;
                    }
                    name[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
                }
            unsigned c = hdrclass_of(NULL, name, len, NULL);
            total++;
            if (!!(c & HDRCLASS_HOP_BY_HOP) != ref_hop(name, len) ||
                !!(c & HDRCLASS_SPOOFABLE) != ref_spoof(name, len) ||
                !!(c & HDRCLASS_FORWARDING) != ref_fwd(name, len) ||
                !!(c & HDRCLASS_DROPPED) != ref_dropped(name, len)) {
                bad++;
                tap_diag("class of %.*s: 0x%x", (int)len, name, c);
            }
        }
    }
    is_int(bad, 0, "classes: %u names and neighbours agree with the list-by-list model", total);
}

static void test_classes(void)
{
    static const char *const recorded[] = {"X-Sfn-Execution", "x-tenant"};
    static const char *const policy[] = {"X-Tenant", "x_under"};
    static const char *const cred[] = {"X-Caller-Assertion"};
    static const char *const empty[] = {""};
    enum hdrclass_id id;
    struct hdrclass *t;
    char err[80] = "";

    /* built-in: every class, mixed case, ids by exact spelling */
    ok(hdrclass_of(NULL, "CONNECTION", 10, &id) & HDRCLASS_HOP_BY_HOP,
       "class: CONNECTION hop-by-hop");
    is_int(id, HDR_CONNECTION, "class: CONNECTION id");
    ok((hdrclass_of(NULL, "Content-Length", 14, &id) & (HDRCLASS_FRAMING | HDRCLASS_DROPPED)) ==
           (HDRCLASS_FRAMING | HDRCLASS_DROPPED),
       "class: Content-Length framing, dropped");
    is_int(id, HDR_CONTENT_LENGTH, "class: Content-Length id");
    ok((hdrclass_of(NULL, "transfer-ENCODING", 17, &id) &
        (HDRCLASS_FRAMING | HDRCLASS_HOP_BY_HOP)) == (HDRCLASS_FRAMING | HDRCLASS_HOP_BY_HOP),
       "class: Transfer-Encoding framing, hop-by-hop");
    is_int(id, HDR_TRANSFER_ENCODING, "class: Transfer-Encoding id");
    is_int(hdrclass_of(NULL, "Content_Length", 14, &id), 0, "class: Content_Length is no class");
    is_int(id, HDR_CONTENT_LENGTH_US, "class: Content_Length has the '_' id");
    hdrclass_of(NULL, "TRANSFER_encoding", 17, &id);
    is_int(id, HDR_TRANSFER_ENCODING_US, "class: TRANSFER_encoding has the '_' id");
    ok(hdrclass_of(NULL, "aUTHORIZATION", 13, &id) & HDRCLASS_CREDENTIAL,
       "class: Authorization credential");
    is_int(id, HDR_AUTHORIZATION, "class: Authorization id");
    hdrclass_of(NULL, "Authorization_", 14, &id);
    is_int(id, HDR_OTHER, "class: Authorization_ has no id");
    ok(hdrclass_of(NULL, "Proxy-Authorization", 19, NULL) & HDRCLASS_CREDENTIAL,
       "class: Proxy-Authorization credential");
    ok(!(hdrclass_of(NULL, "X-Authorization", 15, NULL) & HDRCLASS_CREDENTIAL),
       "class: X-Authorization is not a built-in credential");
    ok((hdrclass_of(NULL, "X_FORWARDED_FOR", 15, &id) &
        (HDRCLASS_SPOOFABLE | HDRCLASS_FORWARDING)) == (HDRCLASS_SPOOFABLE | HDRCLASS_FORWARDING),
       "class: X_FORWARDED_FOR spoofable, forwarding");
    is_int(id, HDR_OTHER, "class: X_FORWARDED_FOR has no id (the '-' spelling alone has)");
    hdrclass_of(NULL, "x-forwarded-FOR", 15, &id);
    is_int(id, HDR_X_FORWARDED_FOR, "class: x-forwarded-FOR id");
    hdrclass_of(NULL, "X-Forwarded-Proto", 17, &id);
    is_int(id, HDR_X_FORWARDED_PROTO, "class: X-Forwarded-Proto id");
    hdrclass_of(NULL, "X-Forwarded-Host", 16, &id);
    is_int(id, HDR_X_FORWARDED_HOST, "class: X-Forwarded-Host id");
    hdrclass_of(NULL, "Forwarded", 9, &id);
    is_int(id, HDR_FORWARDED, "class: Forwarded id");
    is_int(hdrclass_of(NULL, "X-Forwarded-User", 16, NULL), HDRCLASS_SPOOFABLE,
           "class: X-Forwarded-User spoofable, not forwarding");
    is_int(hdrclass_of(NULL, "x_forwarded_email", 17, NULL), HDRCLASS_SPOOFABLE,
           "class: x_forwarded_email spoofable, not forwarding");
    ok(hdrclass_of(NULL, "X-CloudScheduler", 16, NULL) & HDRCLASS_SPOOFABLE,
       "class: X-CloudScheduler (prefix, 16)");
    ok(!(hdrclass_of(NULL, "X-CloudSchedule", 15, NULL) & HDRCLASS_SPOOFABLE),
       "class: X-CloudSchedule is not");
    ok(hdrclass_of(NULL, "x-auth-request-access-token", 27, NULL) & HDRCLASS_SPOOFABLE,
       "class: X-Auth-Request-* spoofable");
    hdrclass_of(NULL, "TraceState", 10, &id);
    is_int(id, HDR_TRACESTATE, "class: TraceState id");
    hdrclass_of(NULL, "User-Agent", 10, &id);
    is_int(id, HDR_USER_AGENT, "class: User-Agent id");
    is_int(hdrclass_of(NULL, "X-Request-Ids", 13, &id), 0, "class: X-Request-Ids is no class");
    is_int(id, HDR_OTHER, "class: X-Request-Ids has no id");
    is_int(hdrclass_of(NULL, "", 0, &id), 0, "class: the empty name is no class");
    ok(!(hdrclass_of(NULL, "X-Sfn-Execution", 15, NULL) & HDRCLASS_RECORDED),
       "class: nothing is recorded by the built-in table");

    /* configured names */
    t = hdrclass_new(recorded, 2, policy, 2, cred, 1, err, sizeof(err));
    ok(t != NULL, "classes: a table of configured names builds");
    is_int(hdrclass_of(t, "x-sfn-EXECUTION", 15, NULL), HDRCLASS_RECORDED,
           "classes: recorded, any case");
    is_int(hdrclass_of(t, "X_Sfn_Execution", 15, NULL), 0,
           "classes: recorded matches its spelling only");
    is_int(hdrclass_of(t, "X-Sfn-Executio", 14, NULL), 0,
           "classes: one byte short is not recorded");
    is_int(hdrclass_of(t, "X-TENANT", 8, NULL), HDRCLASS_RECORDED | HDRCLASS_POLICY,
           "classes: a name in two lists has both classes");
    is_int(hdrclass_of(t, "X_Under", 7, NULL), HDRCLASS_POLICY,
           "classes: a configured name with '_'");
    is_int(hdrclass_of(t, "x-under", 7, NULL), 0, "classes: its '-' spelling is another name");
    is_int(hdrclass_of(t, "x_caller_ASSERTION", 18, NULL), HDRCLASS_CREDENTIAL,
           "classes: a configured credential in every '-'/'_' spelling");
    is_int(hdrclass_of(t, "X-Caller-Assertions", 19, NULL), 0,
           "classes: one byte more is no credential");
    ok(hdrclass_of(t, "Keep-Alive", 10, NULL) & HDRCLASS_HOP_BY_HOP,
       "classes: built-ins stay in a configured table");
    is_int(hdrclass_of(t, "X-Forwarded-User", 16, NULL), HDRCLASS_SPOOFABLE,
           "classes: and their exceptions");
    /* the parse stamps each header with the table's classes */
    {
        const char *raw = "GET / HTTP/1.1\r\nHost: a\r\nx-tenant: 7\r\nX_Caller_Assertion: e\r\n"
                          "Content_Type: x\r\n\r\n";
        struct http1_limits lim = {.classes = t};
        size_t hl;
        ok(http1_parse_request(raw, strlen(raw), &lim, &req, &hl) == HTTP1_OK && req.n_headers == 4,
           "classes: parse with a configured table");
        is_int(req.headers[0].id, HDR_HOST, "classes: Host stamped with its id");
        is_int(req.headers[1].cls, HDRCLASS_RECORDED | HDRCLASS_POLICY,
               "classes: x-tenant stamped");
        is_int(req.headers[2].cls, HDRCLASS_CREDENTIAL, "classes: X_Caller_Assertion stamped");
        is_int(req.headers[3].cls, 0, "classes: an unknown name has no class");
        ok(http1_parse_request(raw, strlen(raw), NULL, &req, &hl) == HTTP1_OK &&
               req.headers[1].cls == 0,
           "classes: without a table, the built-in names only");
    }
    hdrclass_free(t);
    ok(hdrclass_new(empty, 1, NULL, 0, NULL, 0, err, sizeof(err)) == NULL && strstr(err, "empty"),
       "classes: an empty configured name is refused (%s)", err);
}

/* A name with one byte replaced by each of the 255 others, at every offset:
 * the table's (word-wise) folding must give the byte-wise verdict, for
 * bytes next to the letters ('@', '[', '`', '{'), '_' and '-', and bytes
 * with the high bit set (0xc1 is 'A' | 0x80: never a letter). */
static bool ref_fold_eq(const char *name, size_t len, const char *lit, bool dash)
{
    return strlen(lit) == len && ref_eq(name, len, lit, false, dash);
}

static void test_classes_fold(void)
{
    /* the second: the bytes each side of 'A'..'Z' and their lowercase twins */
    static const char *const recorded[] = {
        "x-sfn-execution-arn-long", "@az[`{^~_-0123456789", "ab", "abc-d", "x-sfn-ex", "a-c"};
    static const char *const policy[] = {"x_under_score"};
    static const char *const cred[] = {"x-caller-assertion"};
    static const char *const bases[] = {"X-Sfn-Execution-Arn-Long",
                                        "X_Under_Score",
                                        "x_caller-ASSERTION",
                                        "@AZ[`{^~_-0123456789",
                                        "AB",
                                        "aBc-D",
                                        "X-Sfn-Ex",
                                        "A",
                                        "A_C"};
    char err[128], name[64], lng[300];
    unsigned bad = 0, total = 0;
    struct hdrclass *t = hdrclass_new(recorded, 6, policy, 1, cred, 1, err, sizeof(err));

    for (size_t b = 0; t && b < sizeof(bases) / sizeof(bases[0]); b++) {
        size_t n = strlen(bases[b]);
        for (size_t i = 0; i < n; i++)
            for (unsigned c = 1; c < 256; c++) {
                unsigned got, want = 0;
                memcpy(name, bases[b], n);
                name[i] = (char)c;
                for (size_t k = 0; k < sizeof(recorded) / sizeof(recorded[0]); k++)
                    if (ref_fold_eq(name, n, recorded[k], false))
                        want |= HDRCLASS_RECORDED;
                if (ref_fold_eq(name, n, policy[0], false))
                    want |= HDRCLASS_POLICY;
                if (ref_fold_eq(name, n, cred[0], true))
                    want |= HDRCLASS_CREDENTIAL;
                got = hdrclass_of(t, name, n, NULL) &
                      (HDRCLASS_RECORDED | HDRCLASS_POLICY | HDRCLASS_CREDENTIAL);
                total++;
                if (got != want) {
                    bad++;
                    tap_diag("class of %.*s (0x%02x at %zu): 0x%x, want 0x%x", (int)n, name, c, i,
                             got, want);
                }
            }
    }
    is_int(bad, 0, "classes: %u one-byte neighbours fold as byte by byte", total);
    memset(lng, 'a', sizeof(lng));
    memcpy(lng, "X_Goog-", 7);
    is_int(hdrclass_of(t, lng, sizeof(lng), NULL), HDRCLASS_SPOOFABLE,
           "classes: a name over 256 bytes keeps its prefix family only");
    hdrclass_free(t);
}

static void test_status_text(void)
{
    is_str(http1_status_text(431, "x"), "Request Header Fields Too Large", "status text: 431");
    is_str(http1_status_text(502, "x"), "Bad Gateway", "status text: 502");
    is_str(http1_status_text(201, "x"), "Created", "status text: 201 (upstream statuses too)");
    is_str(http1_status_text(418, "Status"), "Status", "status text: unknown gets the fallback");
}

static void test_token(void)
{
    static const char *const bad[] = {"a b", "a:b",  "a\tb", "(x)", "a,b",
                                      "a/b", "\x80", "a\"",  "[v]"};
    unsigned wrong = 0;

    ok(http1_token("X-Foo", 5), "token: X-Foo");
    ok(http1_token("!#$%&'*+-.^_`|~09AZaz", 21), "token: every tchar symbol, digits, letters");
    ok(!http1_token("", 0), "token: empty is not one");
    ok(!http1_token("a\0b", 3), "token: NUL is not a tchar");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (http1_token(bad[i], strlen(bad[i])))
            wrong++;
    is_int(wrong, 0, "token: separators, whitespace, obs-text are not tchars");
    /* the parser's header-name check is the same class */
    for (int c = 1; c < 256; c++) {
        char raw[64];
        size_t hl;
        int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX%cY: 1\r\n\r\n", c);
        bool parsed = c != '\r' && c != '\n' && c != ':' &&
                      http1_parse_request(raw, (size_t)n, NULL, &req, &hl) == HTTP1_OK;
        char name[3] = {'X', (char)c, 'Y'};
        if (c != ':' && c != '\r' && c != '\n' && parsed != http1_token(name, 3))
            wrong++;
    }
    is_int(wrong, 0, "token: a header name parses exactly when it is a token");
}

int main(void)
{
    test_matrix();
    test_value_bytes();
    test_matrix_prefixes();
    test_valid_fields();
    test_incremental();
    test_pipelined();
    test_limits();
    test_chunked();
    test_responses();
    test_hygiene();
    test_classes_model();
    test_classes();
    test_classes_fold();
    test_status_text();
    test_token();
    return tap_done();
}
