/*
 * http1.h: baton's own strict HTTP/1.1 wire parsers (the guard of docs/spec.md step 1).
 *
 * Three parsers and a few header-hygiene predicates, all zero-copy and free of
 * allocation: a request-head parser for the listener, an incremental chunked
 * body decoder, and a response-head parser for upstream responses. evhttp is not
 * used on either side because libevent 2.1.12 accepts ambiguous framing (see
 * docs/design.md); every leniency it has is an error here.
 *
 * Slices: every `const char *` + length in the structs below points into the
 * caller's buffer (borrowed: valid while that buffer is unchanged), except a
 * few that point to static strings (said where they do). Nothing is
 * NUL-terminated.
 *
 * Return channel: the parse functions return an `int` status (HTTP1_OK,
 * HTTP1_INCOMPLETE, HTTP1_ERROR, and for the chunked decoder HTTP1_DATA,
 * HTTP1_DONE). The precise outcome of an error is an `enum reason` in the
 * caller's struct (`error`), with a static human-readable `detail` and the byte
 * `error_offset` where it was found. Reasons are from reason.h's guard group
 * for requests, REASON_UPSTREAM_ERROR for responses.
 *
 * Strictness (each a 400 unless said; the connection must be closed after any
 * error, since the framing of what follows is unknown):
 *  - request line exactly `METHOD SP target SP HTTP/1.x CRLF`; the method a
 *    token; GET HEAD POST PUT DELETE PATCH OPTIONS only, any other token
 *    (CONNECT, TRACE, WebDAV, ...) is 501 METHOD_NOT_IMPLEMENTED; a well-formed
 *    `HTTP/d.d` other than 1.0/1.1 is 505;
 *  - CRLF only: a bare LF or a lone CR anywhere in the head is BAD_FRAMING;
 *  - one leading CRLF before the request line is skipped (RFC 9112 2.2, for
 *    clients that append CRLF after a body); a second one is BAD_REQUEST;
 *  - target: visible ASCII only (no CTL, SP, DEL, non-ASCII) and no `#`
 *    (BAD_TARGET); origin-form, absolute-form (http/https, no userinfo, path
 *    empty or starting with '/'), or `*` with OPTIONS only;
 *  - header names: 1*tchar, no whitespace before ':' (BAD_HEADER); no obs-fold
 *    (BAD_HEADER); values: no NUL, CR, LF, DEL or other CTL except HTAB
 *    (BAD_HEADER), obs-text (0x80-0xFF) allowed, surrounding SP/HTAB trimmed;
 *    `Content_Length` / `Transfer_Encoding` (a framing name spelled with '_',
 *    which CGI-style upstreams read as the real one) are BAD_HEADER;
 *  - Content-Length: 1*DIGIT (at most 19 digits, at most INT64_MAX), exactly
 *    one header with exactly one value. Two Content-Length headers are
 *    rejected even when equal (RFC 9110 allows equal duplicates; we are
 *    stricter): BAD_FRAMING. For Content-Length and Transfer-Encoding the only
 *    whitespace allowed is one SP after the colon (`Content-Length:  5`,
 *    `Content-Length:\t5`, a trailing SP/HTAB: BAD_FRAMING), where other
 *    headers get RFC OWS trimming;
 *  - Transfer-Encoding: exactly one header whose value is the token `chunked`
 *    (case-insensitive); any list, `identity`, other codings, or duplicates are
 *    BAD_FRAMING, as are both Content-Length and Transfer-Encoding, and
 *    Transfer-Encoding in an HTTP/1.0 request;
 *  - Host: exactly one in HTTP/1.1 (missing or two: BAD_HOST), at most one in
 *    HTTP/1.0; value `host[:port]` where host is a reg-name of letters, digits,
 *    '-', '.', '_' (at most 253 bytes) or an IP-literal `[...]` of hex digits,
 *    ':' and '.'; port 1-5 digits, 1..65535 (BAD_HOST); an absolute-form target
 *    whose authority differs from Host (host case-insensitive, default port of
 *    the scheme implied) is BAD_HOST; a trailing root dot is not part of the
 *    hostname ("a.example." routes as "a.example"), an empty label ("." or
 *    "a..") is BAD_HOST;
 *  - Authorization: at most one (DUPLICATE_AUTHORIZATION);
 *  - Connection: a comma list of tokens (empty elements skipped), at most
 *    HTTP1_MAX_CONN_NAMES names; naming Host, Content-Length or
 *    Transfer-Encoding is BAD_HEADER (a hop-by-hop strip of those would change
 *    framing or routing downstream);
 *  - Expect: only `100-continue` (case-insensitive) in HTTP/1.1, else BAD_HEADER;
 *    ignored in HTTP/1.0 (RFC 9110 10.1.1);
 *  - limits: the target longer than max_uri_bytes is 414 URI_TOO_LONG; a head
 *    longer than max_header_bytes, a line longer than max_line_bytes, or more
 *    than max_headers headers is 431 HEADERS_TOO_LARGE.
 * Errors are reported in the order their bytes appear, so a prefix of a head
 * yields HTTP1_INCOMPLETE or the same error as the whole head.
 */
#ifndef BATON_HTTP1_H
#define BATON_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hdrclass.h"
#include "reason.h"

/* Status of a parse or decode call. */
#define HTTP1_ERROR (-1)   /* see ->error, ->detail; close the connection */
#define HTTP1_OK 0         /* a complete head (parse) */
#define HTTP1_INCOMPLETE 1 /* need more bytes; call again with a longer buffer */
#define HTTP1_DATA 2       /* chunked: a data slice is ready */
#define HTTP1_DONE 3       /* chunked: last chunk and empty trailer consumed */

/* Compile-time capacity of the header array; limits.max_headers may only lower it. */
#define HTTP1_MAX_HEADERS 128
/* Capacity of the list of names given in Connection headers. */
#define HTTP1_MAX_CONN_NAMES 16

/* Defaults used when a limits field is 0. */
#define HTTP1_DEFAULT_MAX_HEADER_BYTES 16384
#define HTTP1_DEFAULT_MAX_URI_BYTES 8192
#define HTTP1_DEFAULT_MAX_HEADERS 100

struct http1_limits {
    size_t max_header_bytes; /* whole head incl. request/status line and final CRLF */
    size_t max_uri_bytes;    /* request target (ignored for responses) */
    size_t max_line_bytes;   /* one line incl. CRLF; 0: same as max_header_bytes */
    unsigned max_headers;    /* header lines; 0: default; capped at HTTP1_MAX_HEADERS */
    /* the names each header is classified by (hdrclass.h), borrowed for the
     * call; NULL: the built-in names only */
    const struct hdrclass *classes;
};

enum http1_method {
    HTTP1_METHOD_GET,
    HTTP1_METHOD_HEAD,
    HTTP1_METHOD_POST,
    HTTP1_METHOD_PUT,
    HTTP1_METHOD_DELETE,
    HTTP1_METHOD_PATCH,
    HTTP1_METHOD_OPTIONS,
};

enum http1_target_form {
    HTTP1_TARGET_ORIGIN,   /* /path?query */
    HTTP1_TARGET_ABSOLUTE, /* http://authority/path?query */
    HTTP1_TARGET_ASTERISK, /* * (OPTIONS only) */
};

/* How the message body is delimited. */
enum http1_body {
    HTTP1_BODY_NONE,    /* no body (no CL/TE in a request; HEAD/1xx/204/304 responses) */
    HTTP1_BODY_LENGTH,  /* content_length bytes (may be 0) */
    HTTP1_BODY_CHUNKED, /* Transfer-Encoding: chunked; use struct http1_chunked */
    HTTP1_BODY_CLOSE,   /* responses only: until the upstream closes */
};

struct http1_header {
    const char *name; /* 1*tchar, original case */
    size_t name_len;
    const char *value; /* surrounding SP/HTAB trimmed; may be empty */
    size_t value_len;
    uint16_t cls; /* HDRCLASS_* of the name, by limits.classes (hdrclass.h) */
    uint8_t id;   /* enum hdrclass_id of the name */
};

/* Names listed in Connection headers (original case), for hop-by-hop stripping. */
struct http1_conn_names {
    unsigned n;
    struct {
        const char *name;
        size_t len;
    } names[HTTP1_MAX_CONN_NAMES];
};

struct http1_request {
    /* Request line. */
    enum http1_method method;
    const char *method_str; /* the token as sent */
    size_t method_len;
    const char *target; /* raw request target */
    size_t target_len;
    enum http1_target_form target_form;
    /* The origin-form part (path and query) to canonicalize and forward: the
     * target itself in origin-form; in absolute-form the part after the
     * authority, or the static string "/" when that part is empty; "*" in
     * asterisk-form. */
    const char *origin;
    size_t origin_len;
    const char *scheme; /* absolute-form only ("http"/"https" as sent), else NULL */
    size_t scheme_len;
    const char *authority; /* absolute-form only, else NULL */
    size_t authority_len;
    int version; /* 10 or 11 */

    /* Headers in order, every copy kept. */
    struct http1_header headers[HTTP1_MAX_HEADERS];
    unsigned n_headers;

    /* Pre-extracted. */
    /* Host value; NULL when absent (HTTP/1.0 only). An HTTP/1.0 absolute-form
     * request without Host gets host, hostname and port from the authority. */
    const char *host;
    size_t host_len;
    const char *hostname; /* host without port or trailing dot; IPv6 literal keeps its brackets */
    size_t hostname_len;
    unsigned port;           /* from Host; 0 when absent */
    enum http1_body body;    /* NONE, LENGTH or CHUNKED */
    uint64_t content_length; /* HTTP1_BODY_LENGTH only, else 0 */
    bool keep_alive;         /* 1.1 unless Connection: close; 1.0 only with keep-alive */
    bool expect_100;         /* Expect: 100-continue (HTTP/1.1) */
    int authorization;       /* index into headers[] of the Authorization header, or -1 */
    struct http1_conn_names connection;

    /* Error (HTTP1_ERROR only). */
    enum reason error;
    const char *detail;  /* static string, e.g. "two Content-Length headers" */
    size_t error_offset; /* byte offset in buf where the error was found */
};

struct http1_response {
    int version;               /* 10 or 11 */
    unsigned status;           /* 100..599 */
    const char *reason_phrase; /* may be empty */
    size_t reason_len;
    struct http1_header headers[HTTP1_MAX_HEADERS];
    unsigned n_headers;
    bool informational; /* 1xx (not 101): no body; parse the next head after it */
    enum http1_body body;
    uint64_t content_length; /* HTTP1_BODY_LENGTH only */
    bool keep_alive;         /* the upstream connection may be reused after this response */
    struct http1_conn_names connection;

    enum reason error; /* REASON_UPSTREAM_ERROR */
    const char *detail;
    size_t error_offset;
};

/*
 * Parses one request head at the start of buf[0..len).
 * HTTP1_OK: *req is filled, *head_len is the head's length including the final
 * CRLF (and a skipped leading CRLF); the body, if any, starts at buf+head_len.
 * HTTP1_INCOMPLETE: the head is not complete and no error is certain yet.
 * HTTP1_ERROR: req->error / detail / error_offset say why.
 * lim may be NULL (defaults). req is fully overwritten; its slices borrow buf.
 * The call is stateless and linear in len; see http1_worth_parsing to avoid
 * rescanning a growing buffer on every read.
 */
int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_request *req, size_t *head_len);

/*
 * True when a buffer that returned HTTP1_INCOMPLETE at length prev_len may give
 * another answer at length len: the new bytes hold a '\n', or len reached the
 * head limit. Skipping calls when it is false gives the same final result
 * (errors are positional), and bounds the work per head to O(lines * len).
 */
bool http1_worth_parsing(const char *buf, size_t len, size_t prev_len,
                         const struct http1_limits *lim);

/*
 * Parses one response head. request_method is the method of the request it
 * answers (HEAD responses have no body). Framing as strict as for requests:
 * two Content-Length, CL with TE, TE other than `chunked`, TE in HTTP/1.0,
 * TE or a non-zero CL in a 1xx/204, and 101 Switching Protocols (never
 * requested) are errors (REASON_UPSTREAM_ERROR: a 502, never passed on).
 * No CL and no TE gives HTTP1_BODY_CLOSE and keep_alive false.
 * Same return values as http1_parse_request; resp slices borrow buf.
 */
int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         enum http1_method request_method, struct http1_response *resp,
                         size_t *head_len);

/*
 * Incremental chunked-body decoder. No chunk extensions (any ';' is an
 * error), no trailers (anything but the empty line after the last chunk is an
 * error), chunk sizes 1..16 hex digits with nothing before or after them, CRLF
 * exactly after each size and each chunk's data. Errors: REASON_BAD_FRAMING,
 * or REASON_BODY_TOO_LARGE when the decoded total would exceed max_total.
 * Caller-owned, embed it; no allocation.
 */
struct http1_chunked {
    int state;          /* private */
    unsigned digits;    /* private: hex digits of the current size line */
    uint64_t remaining; /* private: data bytes left in the current chunk */
    uint64_t total;     /* decoded body bytes so far (public, read-only) */
    uint64_t max_total; /* 0: only overflow-capped */
    enum reason error;
    const char *detail; /* static */
};

void http1_chunked_init(struct http1_chunked *c, uint64_t max_total);

/*
 * Feeds buf[0..len). Sets *consumed to the bytes used from buf; the caller
 * drops them and calls again with the rest (and later with more bytes).
 * HTTP1_DATA: *data and *data_len give a slice of buf with decoded body bytes (the
 *   slice ends at buf + *consumed); call again with buf + *consumed.
 * HTTP1_INCOMPLETE: all of buf was consumed (*consumed == len), feed more.
 * HTTP1_DONE: the body ended; *consumed bytes belong to it, anything after is
 *   the next message (pipelining).
 * HTTP1_ERROR: c->error / c->detail; every later call fails the same way.
 */
int http1_chunked_feed(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed,
                       const char **data, size_t *data_len);

/*
 * Header hygiene for the proxy (docs/spec.md step 6). Names compare ASCII
 * case-insensitively.
 * hop_by_hop: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 *   Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate,
 *   HTTP2-Settings.
 * spoofable: X-Serverless-Authorization, X-Forwarded-*, Forwarded, X-Goog-*,
 *   X-Baton-*, X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override (docs/spec.md),
 *   and the path overrides X-Original-URL, X-Rewrite-URL, X-Original-URI and
 *   client-address claims X-Real-IP, True-Client-IP, X-Client-IP,
 *   CF-Connecting-IP (frameworks honour them like X-Forwarded-*); '-'
 *   and '_' are equivalent (X_Forwarded_For, X-HTTP_Method-Override), because
 *   CGI-style frameworks map both to the same variable.
 * forwarding: the subset of spoofable kept from trusted proxies: X-Forwarded-*
 *   and Forwarded (same '-'/'_' equivalence).
 * in_connection: the name is listed in a Connection header (case-insensitive).
 */
bool http1_header_is_hop_by_hop(const char *name, size_t len);
bool http1_header_is_spoofable(const char *name, size_t len);
bool http1_header_is_forwarding(const char *name, size_t len);
/* ASCII case-insensitive a[0..n) == b[0..n) (http1_header_in_connection's compare). */
bool http1_name_eq(const char *a, const char *b, size_t n);
/* Inline: the proxy asks it for every header it forwards; lengths rule most out. */
static inline bool http1_header_in_connection(const struct http1_conn_names *conn, const char *name,
                                              size_t len)
{
    for (unsigned i = 0; i < conn->n; i++)
        if (conn->names[i].len == len && http1_name_eq(conn->names[i].name, name, len))
            return true;
    return false;
}

/* 1*tchar (RFC 9110 5.6.2): what a header name, a method or a Connection
 * option must be. The one token check; its byte class is the parser's. */
bool http1_token(const char *s, size_t n);

/*
 * Counts the headers named `name` (ASCII case-insensitive) in h[0..n) and sets
 * *value / *value_len (either may be NULL) to the first one's value, or to
 * NULL / 0 when there is none. Fits policy_input.header.
 */
unsigned http1_header_find(const struct http1_header *h, unsigned n, const char *name,
                           size_t name_len, const char **value, size_t *value_len);

/*
 * The reason phrase of an HTTP status ("Not Found"), static; `fallback` for a
 * status baton does not know (the phrase is advisory: RFC 9112 4).
 */
const char *http1_status_text(unsigned status, const char *fallback);

/* The method's canonical name ("GET"), static. */
const char *http1_method_name(enum http1_method m);

#endif
