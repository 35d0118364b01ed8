/*
 * fuzz_http1.c: libFuzzer target for the HTTP/1.1 guard. Each input is run
 * through the request-head parser (and, when it succeeds, the chunked decoder
 * or the Content-Length body and the pipelined heads after it), the
 * response-head parser, and the chunked decoder on the raw bytes, fed whole
 * and in small pieces. Besides memory safety it checks the parsers'
 * contracts: slices stay inside the input, a prefix of a head never gives a
 * different answer than the whole head, and split feeds of the chunked
 * decoder give the same bytes as one feed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http1_request req, req2;
static struct http1_response resp;

static void check(int cond)
{
    if (!cond)
        abort();
}

static void in_input(const char *p, size_t n, const uint8_t *data, size_t size)
{
    if (p == NULL)
        return;
    if (n == 1 && p[0] == '/' && !((const uint8_t *)p >= data && (const uint8_t *)p < data + size))
        return; /* the static "/" origin of an absolute-form target */
    check((const uint8_t *)p >= data && (const uint8_t *)p + n <= data + size);
}

/* Decodes a chunked body fed in pieces of `step` bytes; returns status, sums data. */
static int chunked(const char *b, size_t len, size_t step, uint64_t *sum, size_t *total,
                   size_t *end)
{
    struct http1_chunked ck;
    size_t start = 0, fed = 0;
    int rc = HTTP1_INCOMPLETE;

    http1_chunked_init(&ck, 1u << 20);
    *sum = 0;
    *total = 0;
    while (rc == HTTP1_INCOMPLETE || rc == HTTP1_DATA) {
        const char *d;
        size_t dl, used;
        if (rc == HTTP1_INCOMPLETE) {
            if (fed == len)
                break;
            fed = len - fed > step ? fed + step : len;
        }
        rc = http1_chunked_feed(&ck, b + start, fed - start, &used, &d, &dl);
        check(used <= fed - start);
        if (rc == HTTP1_DATA) {
            check(dl > 0 && d >= b + start && d + dl == b + start + used);
            for (size_t i = 0; i < dl; i++)
                *sum = *sum * 31 + (unsigned char)d[i];
            *total += dl;
        }
        start += used;
    }
    check(ck.total == *total);
    *end = start;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct http1_limits lim = {
        .max_header_bytes = 4096, .max_uri_bytes = 1024, .max_line_bytes = 2048, .max_headers = 32};
    size_t hl = 0, off = 0;
    int rc;

    /* Requests, pipelined while heads keep parsing. */
    for (int n = 0; n < 8 && off <= size; n++) {
        rc = http1_parse_request(buf + off, size - off, &lim, &req, &hl);
        if (rc != HTTP1_OK) {
            if (rc == HTTP1_ERROR)
                check(req.detail != NULL && req.error_offset <= size - off);
            /* A prefix must agree with the whole (a few cut points). */
            for (size_t k = 0; k < 4 && size - off > 0; k++) {
                size_t cut = (size - off) * k / 4;
                size_t hl2;
                int r2 = http1_parse_request(buf + off, cut, &lim, &req2, &hl2);
                check(r2 == HTTP1_INCOMPLETE ||
                      (r2 == HTTP1_ERROR && rc == HTTP1_ERROR && req2.error == req.error));
            }
            break;
        }
        check(hl > 0 && hl <= size - off);
        in_input(req.target, req.target_len, data, size);
        in_input(req.origin, req.origin_len, data, size);
        in_input(req.host, req.host_len, data, size);
        check(req.n_headers <= 32);
        for (unsigned i = 0; i < req.n_headers; i++) {
            in_input(req.headers[i].name, req.headers[i].name_len, data, size);
            in_input(req.headers[i].value, req.headers[i].value_len, data, size);
            check(req.headers[i].name_len > 0);
            {
                /* the class stamped in the parse is the lookup's */
                enum hdrclass_id id;
                unsigned c = hdrclass_of(NULL, req.headers[i].name, req.headers[i].name_len, &id);
                check(req.headers[i].cls == c && req.headers[i].id == id);
                check(!(c & HDRCLASS_FORWARDING) || (c & HDRCLASS_SPOOFABLE));
                check(id != HDR_CONTENT_LENGTH_US && id != HDR_TRANSFER_ENCODING_US);
            }
        }
        check(req.version == 10 || req.version == 11);
        check(req.version == 10 || req.host != NULL);
        check(req.authorization < (int)req.n_headers);
        {
            /* the same head must parse identically with nothing after it */
            size_t hl2;
            check(http1_parse_request(buf + off, hl, &lim, &req2, &hl2) == HTTP1_OK && hl2 == hl);
            check(req2.n_headers == req.n_headers && req2.body == req.body);
            if (hl > 0)
                check(http1_parse_request(buf + off, hl - 1, &lim, &req2, &hl2) ==
                      HTTP1_INCOMPLETE);
        }
        off += hl;
        if (req.body == HTTP1_BODY_LENGTH) {
            if (req.content_length > size - off)
                break;
            off += (size_t)req.content_length;
        } else if (req.body == HTTP1_BODY_CHUNKED) {
            uint64_t s1, s2;
            size_t t1, t2, e1, e2;
            int r1 = chunked(buf + off, size - off, size, &s1, &t1, &e1);
            int r2 = chunked(buf + off, size - off, 3, &s2, &t2, &e2);
            check(r1 == r2 && s1 == s2 && t1 == t2);
            if (r1 == HTTP1_DONE)
                check(e1 == e2);
            if (r1 != HTTP1_DONE)
                break;
            off += e1;
        }
    }

    /* The same bytes as an upstream response. */
    rc = http1_parse_response(
        buf, size, &lim, size && (data[0] & 1) ? HTTP1_METHOD_HEAD : HTTP1_METHOD_GET, &resp, &hl);
    if (rc == HTTP1_OK) {
        check(hl <= size && resp.status >= 100 && resp.status <= 599 && resp.status != 101);
        in_input(resp.reason_phrase, resp.reason_len, data, size);
        for (unsigned i = 0; i < resp.n_headers; i++)
            in_input(resp.headers[i].value, resp.headers[i].value_len, data, size);
        check(resp.body != HTTP1_BODY_CLOSE || !resp.keep_alive);
    } else if (rc == HTTP1_ERROR) {
        check(resp.error == REASON_UPSTREAM_ERROR);
    }

    /* The raw bytes as a chunked body, whole and in pieces. */
    {
        uint64_t s1, s2;
        size_t t1, t2, e1, e2;
        int r1 = chunked(buf, size, size ? size : 1, &s1, &t1, &e1);
        int r2 = chunked(buf, size, 1, &s2, &t2, &e2);
        check(r1 == r2 && s1 == s2 && t1 == t2);
        if (r1 == HTTP1_DONE)
            check(e1 == e2 && e1 <= size);
    }

    /* Hygiene predicates on a prefix used as a header name. */
    {
        size_t n = size < 40 ? size : 40;
        enum hdrclass_id id;
        unsigned c = hdrclass_of(NULL, buf, n, &id);
        if (http1_header_is_forwarding(buf, n))
            check(http1_header_is_spoofable(buf, n));
        check(http1_header_is_hop_by_hop(buf, n) == !!(c & HDRCLASS_HOP_BY_HOP));
        /* an id names one exact spelling: never one with '_' but the two refused ones */
        check(id == HDR_OTHER || id == HDR_CONTENT_LENGTH_US || id == HDR_TRANSFER_ENCODING_US ||
              !memchr(buf, '_', n));
    }
    return 0;
}
