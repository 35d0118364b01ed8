/*
 * http1.c: the strict HTTP/1.1 request-head parser (guard), the chunked body
 * decoder and the upstream response-head parser declared in http1.h.
 *
 * Heads are read line by line. Each line is located with memchr('\n') inside
 * the window the limits allow, then its content is validated left to right by
 * a validator that stops at the first bad byte. Because every check is tied to
 * the position of the byte that triggers it (and line-level checks run only on
 * complete lines), a prefix of a head gives HTTP1_INCOMPLETE or exactly the
 * error the whole head gives: the result does not depend on how the bytes
 * were split into reads. A header line that is plainly good is read in one
 * pass instead (header_lines: the value's bytes checked 16 at a time with
 * SSE2, 8 at a time without, up to its CRLF); every other line takes the
 * line-by-line path above, so errors are found and reported by one code.
 * No allocation; slices point into the caller's buffer.
 */
#include "http1.h"

#include <string.h>

#if defined(__SSE2__) && !defined(HTTP1_NO_SSE2)
#include <emmintrin.h>
#define HTTP1_SSE2 1
#endif

#include "util.h"

/* ---- byte classes, computed at compile time ---------------------------- */

#define CL_TCHAR 0x01   /* RFC 9110 tchar */
#define CL_VALUE 0x02   /* field-vchar, SP, HTAB (obs-text included) */
#define CL_TARGET 0x04  /* visible ASCII except '#' */
#define CL_REGNAME 0x08 /* host reg-name subset: ALPHA DIGIT - . _ */
#define CL_REASON 0x10  /* reason-phrase: HTAB SP VCHAR obs-text (same as VALUE) */

#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_TCHAR(c)                                                                        \
    (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || \
     (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' ||  \
     (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_VALUE(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
#define IS_TARGET(c) ((c) > 0x20 && (c) < 0x7f && (c) != '#')
#define IS_REGNAME(c) (IS_ALPHA(c) || IS_DIGIT(c) || (c) == '-' || (c) == '.' || (c) == '_')
#define CLASS(c)                                                               \
    ((IS_TCHAR(c) ? CL_TCHAR : 0) | (IS_VALUE(c) ? CL_VALUE | CL_REASON : 0) | \
     (IS_TARGET(c) ? CL_TARGET : 0) | (IS_REGNAME(c) ? CL_REGNAME : 0))
#define C4(b) CLASS(b), CLASS((b) + 1), CLASS((b) + 2), CLASS((b) + 3)
#define C16(b) C4(b), C4((b) + 4), C4((b) + 8), C4((b) + 12)
#define C64(b) C16(b), C16((b) + 16), C16((b) + 32), C16((b) + 48)

static const unsigned char byte_class[256] = {C64(0), C64(64), C64(128), C64(192)};

static inline bool has(unsigned char c, unsigned cl)
{
    return (byte_class[c] & cl) != 0;
}

static bool ieq(const char *a, size_t alen, const char *lit, size_t litlen)
{
    return alen == litlen && ascii_case_eq(a, lit, litlen);
}
#define IEQ(p, n, lit) ieq((p), (n), lit, sizeof(lit) - 1)

/* ---- shared head machinery --------------------------------------------- */

/* The parse of one head (request or response). */
struct head {
    const char *b;
    size_t window; /* bytes the head may occupy: min(len, max_header_bytes) */
    bool capped;   /* the buffer reaches the head limit: the head must end in window */
    size_t max_line, max_uri;
    unsigned max_headers;
    bool response;
    int version;

    const struct hdrclass *classes;
    struct http1_header *hdrs;
    unsigned *n_hdrs;
    struct http1_conn_names *conn;
    bool seen_cl, seen_te, conn_close, conn_ka;
    uint64_t cl;
    /* the name of the line being stored, folded by name_end (hdrclass_of_folded)
     * when `folded`; else header_store classifies the name itself */
    bool folded;
    uint64_t fw0, fw1;

    enum reason err;
    const char *detail;
    size_t err_off;
};

enum line_end {
    LE_CRLF,       /* complete line */
    LE_BARE_LF,    /* line ended by LF without CR */
    LE_PARTIAL,    /* no line end yet, more bytes may complete it */
    LE_LINE_LIMIT, /* no line end within max_line bytes */
    LE_HEAD_LIMIT, /* no line end before the head limit */
};

static void limits_resolve(const struct http1_limits *lim, size_t len, struct head *h)
{
    size_t max_head = lim && lim->max_header_bytes ? lim->max_header_bytes
                                                   : HTTP1_DEFAULT_MAX_HEADER_BYTES;
    unsigned max_hdrs = lim && lim->max_headers ? lim->max_headers : HTTP1_DEFAULT_MAX_HEADERS;

    h->max_uri = lim && lim->max_uri_bytes ? lim->max_uri_bytes : HTTP1_DEFAULT_MAX_URI_BYTES;
    h->max_line = lim && lim->max_line_bytes ? lim->max_line_bytes : max_head;
    h->max_headers = max_hdrs > HTTP1_MAX_HEADERS ? HTTP1_MAX_HEADERS : max_hdrs;
    h->capped = len >= max_head;
    h->window = h->capped ? max_head : len;
    h->classes = lim && lim->classes ? lim->classes : hdrclass_builtin();
}

static int fail(struct head *h, size_t off, enum reason r, const char *detail)
{
    /* Whatever is wrong with an upstream's response, the client sees a 502. */
    h->err = h->response ? REASON_UPSTREAM_ERROR : r;
    h->detail = detail;
    h->err_off = off;
    return HTTP1_ERROR;
}

static int lone_cr(struct head *h, size_t off)
{
    return fail(h, off, REASON_BAD_FRAMING, "CR not followed by LF");
}

/*
 * Locates the line starting at s. [s, *ce) is its content (without the CRLF,
 * or without a trailing CR that may be the start of one); *next the start of
 * the following line when the line is complete.
 */
static enum line_end line_at(const struct head *h, size_t s, size_t *ce, size_t *next)
{
    size_t lim = h->window;
    bool line_cap = false;
    const char *lf;

    if (h->max_line < lim - s) {
        lim = s + h->max_line;
        line_cap = true;
    }
    lf = lim > s ? memchr(h->b + s, '\n', lim - s) : NULL;
    if (lf) {
        size_t e = (size_t)(lf - h->b);
        *next = e + 1;
        if (e > s && h->b[e - 1] == '\r') {
            *ce = e - 1;
            return LE_CRLF;
        }
        *ce = e;
        return LE_BARE_LF;
    }
    *next = lim;
    *ce = lim > s && h->b[lim - 1] == '\r' ? lim - 1 : lim;
    if (line_cap || lim - s == h->max_line)
        return LE_LINE_LIMIT;
    return h->capped ? LE_HEAD_LIMIT : LE_PARTIAL;
}

/* The outcome of a line that is not a complete CRLF line. */
static int line_status(struct head *h, enum line_end le, size_t ce)
{
    switch (le) {
    case LE_BARE_LF:
        return fail(h, ce, REASON_BAD_FRAMING, "bare LF: lines must end with CRLF");
    case LE_LINE_LIMIT:
        return fail(h, ce, REASON_HEADERS_TOO_LARGE, "line longer than the line limit");
    case LE_HEAD_LIMIT:
        return fail(h, ce, REASON_HEADERS_TOO_LARGE, "head larger than the header limit");
    case LE_PARTIAL:
    case LE_CRLF:
        break;
    }
    return HTTP1_INCOMPLETE;
}

/*
 * The fast path of a header line: the first byte at or after i (i <= lim)
 * that is not a tchar, or lim. With SSE2, 16 bytes a step while all are
 * letters, digits or '-' (what names are made of: letters by `(c | 0x20)`
 * in 'a'..'z', which no other byte reaches, bytes >= 0x80 being negative
 * to the signed compares); then, and without SSE2, four bytes per step
 * through the byte classes while all four are tchars, then bytes.
 */
__attribute__((always_inline)) static inline size_t name_end(struct head *h, const unsigned char *b,
                                                             size_t i, size_t lim)
{
#ifdef HTTP1_SSE2
    /* 16 0xff then 16 zeros: loaded from 16 - k, the bytes before k */
    static const unsigned char keep[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const __m128i case_bit = _mm_set1_epi8(0x20), a1 = _mm_set1_epi8('a' - 1),
                  z1 = _mm_set1_epi8('z' + 1), d0 = _mm_set1_epi8('0' - 1),
                  d9 = _mm_set1_epi8('9' + 1), dash = _mm_set1_epi8('-');
    size_t s = i;

    while (lim - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        __m128i x = _mm_or_si128(v, case_bit);
        __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(x, a1), _mm_cmplt_epi8(x, z1));
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, d0), _mm_cmplt_epi8(v, d9));
        unsigned other = ~(unsigned)_mm_movemask_epi8(
                             _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(v, dash))) &
                         0xffffu;
        if (other) {
            unsigned k = (unsigned)__builtin_ctz(other);
            i += k;
            if (b[i] != ':')
                break;
            if (i == s + k && k > 0) {
                /* a name of 1..15 letters, digits and '-' in this one load:
                 * lowercase its letters, zero the bytes from the colon on,
                 * and hand it to hdrclass_of_folded */
                __m128i f = _mm_and_si128(
                    _mm_or_si128(v, _mm_and_si128(letter, case_bit)),
                    _mm_loadu_si128((const __m128i *)(const void *)(keep + 16 - k)));
                h->fw0 = (uint64_t)_mm_cvtsi128_si64(f);
                h->fw1 = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(f, f));
                h->folded = true;
            }
            return i;
        }
        i += 16;
    }
#endif
    while (lim - i >= 4 && (byte_class[b[i]] & byte_class[b[i + 1]] & byte_class[b[i + 2]] &
                            byte_class[b[i + 3]] & CL_TCHAR))
        i += 4;
    while (i < lim && has(b[i], CL_TCHAR))
        i++;
    return i;
}

/*
 * The first byte at or after i (i <= lim) that is a control byte (HTAB, CR
 * and LF included) or DEL, or lim: where a header value stops being plainly
 * valid. SSE2 takes 16 bytes a step (an unsigned min finds the bytes <=
 * 0x1f), then SWAR 8 bytes a step, then bytes. In a word, the lowest byte
 * flagged by `(w - 0x20..) & ~w & 0x80..` (bytes < 0x20) or by the same
 * zero test of w ^ 0x7f.. (DEL) is exact: a borrow only reaches the bytes
 * above a flagged one, so the lowest set bit of either mask is a true hit
 * (little-endian: on a big-endian machine the bytes of a flagged word are
 * looked at one by one). Reads nothing at or past lim.
 */
static inline size_t value_stop(const unsigned char *b, size_t i, size_t lim)
{
#ifdef HTTP1_SSE2
    const __m128i ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);

    while (lim - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        __m128i m = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v), _mm_cmpeq_epi8(v, del));
        unsigned mask = (unsigned)_mm_movemask_epi8(m);
        if (mask)
            return i + (unsigned)__builtin_ctz(mask);
        i += 16;
    }
#endif
    while (lim - i >= 8) {
        uint64_t w, d, m;
        memcpy(&w, b + i, 8);
        d = w ^ 0x7f7f7f7f7f7f7f7full; /* DEL becomes a zero byte */
        m = ((w - 0x2020202020202020ull) & ~w & 0x8080808080808080ull) |
            ((d - 0x0101010101010101ull) & ~d & 0x8080808080808080ull);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        if (m) /* the lowest address is the highest byte: the bytes below tell */
            break;
#else
        if (m)
            return i + (unsigned)__builtin_ctzll(m) / 8;
#endif
        i += 8;
    }
    while (i < lim && b[i] >= 0x20 && b[i] != 0x7f)
        i++;
    return i;
}

/*
 * Validates a header line's content [s, e) left to right; sets *colon when the
 * name is complete. `complete`: the line ended with CRLF.
 */
static int header_line_check(struct head *h, size_t s, size_t e, bool complete, size_t *colon)
{
    const unsigned char *b = (const unsigned char *)h->b;
    size_t i = s;

    *colon = 0;
    if (i < e && (b[i] == ' ' || b[i] == '\t'))
        return fail(h, i, REASON_BAD_HEADER,
                    *h->n_hdrs ? "obs-fold (line folding) is not accepted"
                               : "whitespace before the first header");
    while (i < e && has(b[i], CL_TCHAR))
        i++;
    if (i < e) {
        if (b[i] == ':') {
            if (i == s)
                return fail(h, i, REASON_BAD_HEADER, "empty header name");
        } else if (b[i] == '\r') {
            return lone_cr(h, i);
        } else if (b[i] == ' ' || b[i] == '\t') {
            return fail(h, i, REASON_BAD_HEADER, "whitespace in a header name or before the colon");
        } else {
            return fail(h, i, REASON_BAD_HEADER, "invalid character in a header name");
        }
    } else {
        return complete ? fail(h, i, REASON_BAD_HEADER, "header line without a colon") : 0;
    }
    *colon = i++;
    /* value_stop skips the plainly valid bytes; of the bytes it stops at,
     * only HTAB is valid. */
    for (;;) {
        i = value_stop(b, i, e);
        if (i < e && b[i] == '\t') {
            i++;
            continue;
        }
        break;
    }
    if (i < e) {
        if (b[i] == '\r')
            return lone_cr(h, i);
        return fail(h, i, REASON_BAD_HEADER,
                    b[i] ? "control byte in a header value" : "NUL in a header value");
    }
    return 0;
}

/* Appends the header, classified; value trimmed of SP/HTAB. Returns its index. */
static unsigned header_store(struct head *h, size_t s, size_t colon, size_t e)
{
    size_t vs = colon + 1, ve = e;
    struct http1_header *hd = &h->hdrs[*h->n_hdrs];
    enum hdrclass_id id;

    while (vs < ve && (h->b[vs] == ' ' || h->b[vs] == '\t'))
        vs++;
    while (ve > vs && (h->b[ve - 1] == ' ' || h->b[ve - 1] == '\t'))
        ve--;
    hd->name = h->b + s;
    hd->name_len = colon - s;
    hd->value = h->b + vs;
    hd->value_len = ve - vs;
    if (h->folded)
        hd->cls = (uint16_t)hdrclass_of_folded(h->classes, h->fw0, h->fw1, hd->name_len, &id);
    else
        hd->cls = (uint16_t)hdrclass_of(h->classes, hd->name, hd->name_len, &id);
    hd->id = (uint8_t)id;
    return (*h->n_hdrs)++;
}

/*
 * Framing headers (Content-Length, Transfer-Encoding) allow only the usual
 * single SP after the colon and nothing after the value: `Content-Length:\t5`,
 * `Content-Length:  5` and `Transfer-Encoding: chunked ` are all refused, as
 * the variants that parsers disagree on.
 */
static bool framing_ows_ok(const struct head *h, size_t colon, size_t e)
{
    size_t vs = colon + 1;
    if (vs < e && h->b[vs] == ' ')
        vs++;
    if (vs < e && (h->b[vs] == ' ' || h->b[vs] == '\t'))
        return false;
    return !(e > vs && (h->b[e - 1] == ' ' || h->b[e - 1] == '\t'));
}

/* 1*DIGIT, at most 19 digits, at most INT64_MAX. */
static bool parse_content_length(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!IS_DIGIT(p[i]))
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = v;
    return true;
}

static int framing_header(struct head *h, size_t s, size_t colon, size_t e,
                          const struct http1_header *hd, bool is_cl)
{
    if (!framing_ows_ok(h, colon, e))
        return fail(h, s, REASON_BAD_FRAMING,
                    is_cl ? "Content-Length with unusual whitespace"
                          : "Transfer-Encoding with unusual whitespace");
    if (is_cl) {
        if (h->seen_cl)
            return fail(h, s, REASON_BAD_FRAMING, "two Content-Length headers");
        if (h->seen_te)
            return fail(h, s, REASON_BAD_FRAMING, "Content-Length with Transfer-Encoding");
        if (!parse_content_length(hd->value, hd->value_len, &h->cl))
            return fail(h, s, REASON_BAD_FRAMING, "Content-Length is not 1*DIGIT within int64");
        h->seen_cl = true;
        return 0;
    }
    if (h->version == 10)
        return fail(h, s, REASON_BAD_FRAMING, "Transfer-Encoding in HTTP/1.0");
    if (h->seen_te)
        return fail(h, s, REASON_BAD_FRAMING, "two Transfer-Encoding headers");
    if (h->seen_cl)
        return fail(h, s, REASON_BAD_FRAMING, "Transfer-Encoding with Content-Length");
    if (!IEQ(hd->value, hd->value_len, "chunked"))
        return fail(h, s, REASON_BAD_FRAMING, "Transfer-Encoding other than exactly chunked");
    h->seen_te = true;
    return 0;
}

/* Connection: #token. Records the names, close and keep-alive. */
static int connection_header(struct head *h, size_t s, const struct http1_header *hd)
{
    const char *p = hd->value;
    size_t n = hd->value_len, i = 0;

    while (i < n) {
        size_t t;
        if (p[i] == ' ' || p[i] == '\t' || p[i] == ',') {
            i++;
            continue;
        }
        t = i;
        while (i < n && has((unsigned char)p[i], CL_TCHAR))
            i++;
        if (i == t)
            return fail(h, s, REASON_BAD_HEADER, "Connection option is not a token");
        if (i < n && p[i] != ' ' && p[i] != '\t' && p[i] != ',')
            return fail(h, s, REASON_BAD_HEADER, "Connection option is not a token");
        if (IEQ(p + t, i - t, "close")) {
            h->conn_close = true;
        } else if (IEQ(p + t, i - t, "keep-alive")) {
            h->conn_ka = true;
        } else if (IEQ(p + t, i - t, "host") || IEQ(p + t, i - t, "content-length") ||
                   IEQ(p + t, i - t, "transfer-encoding")) {
            return fail(h, s, REASON_BAD_HEADER, "Connection names a framing or routing header");
        }
        if (h->conn->n == HTTP1_MAX_CONN_NAMES)
            return fail(h, s, REASON_BAD_HEADER, "too many Connection options");
        h->conn->names[h->conn->n].name = p + t;
        h->conn->names[h->conn->n].len = i - t;
        h->conn->n++;
        /* after a token: OWS, then ',' or the end */
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i < n && p[i] != ',')
            return fail(h, s, REASON_BAD_HEADER, "Connection options not separated by commas");
    }
    return 0;
}

/*
 * Host syntax: reg-name (ALPHA DIGIT - . _, 1..253 bytes) or an IP-literal of
 * hex digits, ':' and '.', then an optional ":port" of 1..5 digits, 1..65535.
 */
static bool parse_host(const char *p, size_t n, size_t *hostname_len, unsigned *port)
{
    size_t i = 0;
    unsigned v = 0;

    if (n == 0)
        return false;
    if (p[0] == '[') {
        bool colon = false;
        for (i = 1; i < n && p[i] != ']'; i++) {
            if (p[i] == ':')
                colon = true;
            else if (p[i] != '.' && hex_value((unsigned char)p[i]) < 0)
                return false;
        }
        if (i == n || !colon || i > 46)
            return false;
        i++;
    } else {
        while (i < n && has((unsigned char)p[i], CL_REGNAME))
            i++;
        if (i == 0 || i > 253)
            return false;
    }
    /* A fully qualified name's root dot ("secret.example.") names the same
     * host: the hostname is given without it, so routing and what is
     * forwarded see one spelling. An empty label (".", "a..") is refused. */
    *hostname_len = i;
    if (p[0] != '[' && p[i - 1] == '.') {
        if (i == 1 || p[i - 2] == '.')
            return false;
        *hostname_len = i - 1;
    }
    *port = 0;
    if (i == n)
        return true;
    if (p[i++] != ':' || i == n || n - i > 5)
        return false;
    for (; i < n; i++) {
        if (!IS_DIGIT(p[i]))
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return false;
    *port = v;
    return true;
}

/* ---- request ------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t len;
    enum http1_method m;
} methods[] = {
    {"GET", 3, HTTP1_METHOD_GET},         {"HEAD", 4, HTTP1_METHOD_HEAD},
    {"POST", 4, HTTP1_METHOD_POST},       {"PUT", 3, HTTP1_METHOD_PUT},
    {"DELETE", 6, HTTP1_METHOD_DELETE},   {"PATCH", 5, HTTP1_METHOD_PATCH},
    {"OPTIONS", 7, HTTP1_METHOD_OPTIONS},
};
#define METHOD_MAX_LEN 7

const char *http1_method_name(enum http1_method m)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].m == m)
            return methods[i].name;
    return "?";
}

/* `HTTP/d.d` checked positionally; k is the offset in the version text. */
static bool version_byte_ok(size_t k, unsigned char c)
{
    static const char prefix[] = "HTTP/";
    if (k < 5)
        return c == (unsigned char)prefix[k];
    if (k == 5 || k == 7)
        return IS_DIGIT(c);
    return k == 6 && c == '.';
}

/*
 * The request line's content [s, e). Methods are case-sensitive (RFC 9110
 * 9.1): "get" is an unknown method.
 */
static int request_line_check(struct head *h, struct http1_request *req, size_t s, size_t e,
                              bool complete)
{
    const unsigned char *b = (const unsigned char *)h->b;
    size_t i = s, t, v;
    bool known = false;

    while (i < e && has(b[i], CL_TCHAR)) {
        if (i - s == METHOD_MAX_LEN)
            return fail(h, i, REASON_METHOD_NOT_IMPLEMENTED, "method not implemented");
        i++;
    }
    if (i == e)
        return complete ? fail(h, i, REASON_BAD_REQUEST, "request line without a target") : 0;
    if (b[i] == '\r')
        return lone_cr(h, i);
    if (b[i] != ' ')
        return fail(h, i, REASON_BAD_REQUEST, "method is not a token followed by one SP");
    if (i == s)
        return fail(h, i, REASON_BAD_REQUEST, "empty method");
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        if (methods[m].len == i - s && memcmp(methods[m].name, b + s, i - s) == 0) {
            req->method = methods[m].m;
            known = true;
            break;
        }
    }
    if (!known)
        return fail(h, s, REASON_METHOD_NOT_IMPLEMENTED, "method not implemented");
    req->method_str = h->b + s;
    req->method_len = i - s;

    t = ++i;
    for (; i < e && b[i] != ' '; i++) {
        if (i - t == h->max_uri)
            return fail(h, i, REASON_URI_TOO_LONG, "request target longer than the URI limit");
        if (has(b[i], CL_TARGET))
            continue;
        if (b[i] == '\r')
            return lone_cr(h, i);
        if (b[i] == '#')
            return fail(h, i, REASON_BAD_TARGET, "fragment ('#') in the request target");
        return fail(h, i, REASON_BAD_TARGET,
                    b[i] >= 0x80 ? "non-ASCII byte in the request target"
                                 : "control byte or whitespace in the request target");
    }
    if (i == e)
        return complete ? fail(h, i, REASON_BAD_REQUEST, "request line without a version") : 0;
    if (i == t)
        return fail(h, i, REASON_BAD_REQUEST, "empty request target");
    req->target = h->b + t;
    req->target_len = i - t;

    v = ++i;
    for (; i < e; i++) {
        if (b[i] == '\r')
            return lone_cr(h, i);
        if (i - v >= 8 || !version_byte_ok(i - v, b[i]))
            return fail(h, i, REASON_BAD_REQUEST, "malformed HTTP version");
    }
    if (!complete)
        return 0;
    if (i - v != 8)
        return fail(h, i, REASON_BAD_REQUEST, "malformed HTTP version");
    if (b[v + 5] != '1' || (b[v + 7] != '0' && b[v + 7] != '1'))
        return fail(h, v, REASON_VERSION_NOT_SUPPORTED, "HTTP version other than 1.0 or 1.1");
    h->version = req->version = b[v + 7] == '1' ? 11 : 10;
    return 0;
}

static unsigned default_port(const struct http1_request *req)
{
    return req->scheme_len == 5 ? 443 : 80;
}

/* Classifies the (complete) target: origin-, absolute- or asterisk-form. */
static int target_form(struct head *h, struct http1_request *req)
{
    const char *t = req->target;
    size_t n = req->target_len, off = (size_t)(t - h->b), a, ae, hl;
    unsigned port;

    if (t[0] == '/') {
        req->target_form = HTTP1_TARGET_ORIGIN;
        req->origin = t;
        req->origin_len = n;
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (req->method != HTTP1_METHOD_OPTIONS)
            return fail(h, off, REASON_BAD_TARGET,
                        "asterisk-form target with a method other than OPTIONS");
        req->target_form = HTTP1_TARGET_ASTERISK;
        req->origin = t;
        req->origin_len = 1;
        return 0;
    }
    if (n > 7 && ascii_casecmp_n(t, 7, "http://", 7) == 0)
        req->scheme_len = 4;
    else if (n > 8 && ascii_casecmp_n(t, 8, "https://", 8) == 0)
        req->scheme_len = 5;
    else
        return fail(h, off, REASON_BAD_TARGET,
                    "target is not origin-form or absolute http(s) form");
    req->scheme = t;
    a = req->scheme_len + 3;
    for (ae = a; ae < n && t[ae] != '/' && t[ae] != '?'; ae++)
        if (t[ae] == '@')
            return fail(h, off + ae, REASON_BAD_TARGET, "userinfo in the request target");
    if (!parse_host(t + a, ae - a, &hl, &port))
        return fail(h, off + a, REASON_BAD_TARGET, "invalid authority in the request target");
    req->target_form = HTTP1_TARGET_ABSOLUTE;
    req->authority = t + a;
    req->authority_len = ae - a;
    if (ae == n) {
        req->origin = "/";
        req->origin_len = 1;
    } else if (t[ae] == '?') {
        return fail(h, off + ae, REASON_BAD_TARGET,
                    "absolute-form target with a query but no path");
    } else {
        req->origin = t + ae;
        req->origin_len = n - ae;
    }
    return 0;
}

/* Host value against the absolute-form authority: same host (case-insensitive), same port. */
static bool authority_matches(const struct http1_request *req)
{
    size_t hl;
    unsigned port;
    if (!parse_host(req->authority, req->authority_len, &hl, &port))
        return false;
    if (ascii_casecmp_n(req->authority, hl, req->hostname, req->hostname_len) != 0)
        return false;
    return (port ? port : default_port(req)) == (req->port ? req->port : default_port(req));
}

static int host_header(struct head *h, struct http1_request *req, size_t s,
                       const struct http1_header *hd)
{
    size_t hl;
    unsigned port;

    if (req->host)
        return fail(h, s, REASON_BAD_HOST, "two Host headers");
    if (!parse_host(hd->value, hd->value_len, &hl, &port))
        return fail(h, s, REASON_BAD_HOST, "invalid Host syntax");
    req->host = hd->value;
    req->host_len = hd->value_len;
    req->hostname = hd->value;
    req->hostname_len = hl;
    req->port = port;
    if (req->target_form == HTTP1_TARGET_ABSOLUTE && !authority_matches(req))
        return fail(h, s, REASON_BAD_HOST, "absolute-form target disagrees with Host");
    return 0;
}

/* The semantics of one complete request header line. */
static int request_header(struct head *h, struct http1_request *req, size_t s, size_t colon,
                          size_t e)
{
    unsigned idx = header_store(h, s, colon, e);
    const struct http1_header *hd = &h->hdrs[idx];

    switch ((enum hdrclass_id)hd->id) {
    case HDR_HOST:
        return host_header(h, req, s, hd);
    case HDR_EXPECT:
        if (req->version == 11) {
            if (!IEQ(hd->value, hd->value_len, "100-continue"))
                return fail(h, s, REASON_BAD_HEADER, "Expect other than 100-continue");
            req->expect_100 = true;
        }
        break;
    case HDR_CONNECTION:
        return connection_header(h, s, hd);
    case HDR_AUTHORIZATION:
        if (req->authorization >= 0)
            return fail(h, s, REASON_DUPLICATE_AUTHORIZATION, "two Authorization headers");
        req->authorization = (int)idx;
        break;
    case HDR_CONTENT_LENGTH:
        return framing_header(h, s, colon, e, hd, true);
    case HDR_CONTENT_LENGTH_US:
        return fail(h, s, REASON_BAD_HEADER, "Content_Length: framing header spelled with '_'");
    case HDR_TRANSFER_ENCODING:
        return framing_header(h, s, colon, e, hd, false);
    case HDR_TRANSFER_ENCODING_US:
        return fail(h, s, REASON_BAD_HEADER, "Transfer_Encoding: framing header spelled with '_'");
    default:
        break;
    }
    return 0;
}

static void request_reset(struct http1_request *req)
{
    /* Field by field: the header array is not cleared (n_headers bounds it). */
    req->method = HTTP1_METHOD_GET;
    req->method_str = req->target = req->origin = req->scheme = req->authority = NULL;
    req->method_len = req->target_len = req->origin_len = req->scheme_len = 0;
    req->authority_len = 0;
    req->target_form = HTTP1_TARGET_ORIGIN;
    req->version = 0;
    req->n_headers = 0;
    req->host = req->hostname = NULL;
    req->host_len = req->hostname_len = 0;
    req->port = 0;
    req->body = HTTP1_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_100 = false;
    req->authorization = -1;
    req->connection.n = 0;
    req->error = REASON_ALLOWED;
    req->detail = NULL;
    req->error_offset = 0;
}

static void head_init(struct head *h, const char *buf, size_t len, const struct http1_limits *lim,
                      bool response, struct http1_header *hdrs, unsigned *n_hdrs,
                      struct http1_conn_names *conn)
{
    memset(h, 0, sizeof(*h));
    h->b = buf;
    h->response = response;
    h->hdrs = hdrs;
    h->n_hdrs = n_hdrs;
    h->conn = conn;
    h->err = REASON_ALLOWED;
    limits_resolve(lim, len, h);
}

/*
 * Reads header lines from s to the empty line; *end is the head's length.
 *
 * A line that is plainly good (a non-empty token name, ':', value bytes
 * that are HTAB or no control byte nor DEL, then CRLF, inside the line and
 * head limits) is read in one pass: name_end, then value_stop to its CR.
 * Every byte before that CRLF is then neither LF nor CR, so line_at would
 * find the same line end and header_line_check would pass it with the same
 * colon: the outcome is the one of the slow path below. Any other line (the
 * empty line ending the head, an error, a line cut by the buffer or a limit)
 * takes the slow path from its first byte, which decides it and reports
 * exactly as before. Inlined into both parsers, so `each` is a direct call.
 */
__attribute__((always_inline)) static inline int
header_lines(struct head *h, size_t s, size_t *end,
             int (*each)(struct head *, void *, size_t, size_t, size_t), void *arg)
{
    const unsigned char *b = (const unsigned char *)h->b;

    for (;;) {
        size_t ce, next, colon, lim = h->window, i;
        enum line_end le;
        int rc;

        if (h->max_line < lim - s)
            lim = s + h->max_line;
        h->folded = false;
        i = name_end(h, b, s, lim);
        if (i > s && i < lim && b[i] == ':') {
            size_t p = value_stop(b, i + 1, lim);
            while (p < lim && b[p] == '\t')
                p = value_stop(b, p + 1, lim);
            if (lim - p >= 2 && b[p] == '\r' && b[p + 1] == '\n') {
                if (*h->n_hdrs == h->max_headers)
                    return fail(h, s, REASON_HEADERS_TOO_LARGE,
                                "more headers than the header count limit");
                if ((rc = each(h, arg, s, i, p)) != 0)
                    return rc;
                s = p + 2;
                continue;
            }
            h->folded = false;
        } else if (i == s && lim - s >= 2 && b[s] == '\r' && b[s + 1] == '\n') {
            *end = s + 2;
            return HTTP1_OK;
        }

        le = line_at(h, s, &ce, &next);
        if (le == LE_CRLF && ce == s) {
            *end = next;
            return HTTP1_OK;
        }
        if (ce > s && *h->n_hdrs == h->max_headers)
            return fail(h, s, REASON_HEADERS_TOO_LARGE, "more headers than the header count limit");
        if ((rc = header_line_check(h, s, ce, le == LE_CRLF, &colon)) != 0)
            return rc;
        if (le != LE_CRLF)
            return line_status(h, le, ce);
        if ((rc = each(h, arg, s, colon, ce)) != 0)
            return rc;
        s = next;
    }
}

static int request_header_cb(struct head *h, void *arg, size_t s, size_t colon, size_t e)
{
    return request_header(h, arg, s, colon, e);
}

int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_request *req, size_t *head_len)
{
    struct head h;
    size_t s = 0, ce, next, end = 0;
    enum line_end le;
    int rc;

    request_reset(req);
    head_init(&h, buf, len, lim, false, req->headers, &req->n_headers, &req->connection);
    *head_len = 0;

    le = line_at(&h, 0, &ce, &next);
    if (le == LE_CRLF && ce == 0) {
        /* RFC 9112 2.2: one CRLF before the request line is skipped, no more. */
        s = next;
        le = line_at(&h, s, &ce, &next);
        if (le == LE_CRLF && ce == s) {
            rc = fail(&h, s, REASON_BAD_REQUEST,
                      "more than one empty line before the request line");
            goto out;
        }
    }
    if ((rc = request_line_check(&h, req, s, ce, le == LE_CRLF)) != 0)
        goto out;
    if (le != LE_CRLF) {
        rc = line_status(&h, le, ce);
        goto out;
    }
    if ((rc = target_form(&h, req)) != 0)
        goto out;
    if ((rc = header_lines(&h, next, &end, request_header_cb, req)) != 0)
        goto out;

    if (!req->host && req->version == 11) {
        rc = fail(&h, end, REASON_BAD_HOST, "no Host header in an HTTP/1.1 request");
        goto out;
    }
    if (!req->host && req->target_form == HTTP1_TARGET_ABSOLUTE) {
        /* HTTP/1.0 absolute-form without Host: the authority names the host. */
        size_t hl;
        unsigned port;
        parse_host(req->authority, req->authority_len, &hl, &port);
        req->host = req->authority;
        req->host_len = req->authority_len;
        req->hostname = req->authority;
        req->hostname_len = hl;
        req->port = port;
    }
    if (h.seen_te) {
        req->body = HTTP1_BODY_CHUNKED;
    } else if (h.seen_cl) {
        req->body = HTTP1_BODY_LENGTH;
        req->content_length = h.cl;
    }
    req->keep_alive = !h.conn_close && (req->version == 11 || h.conn_ka);
    *head_len = end;
    rc = HTTP1_OK;
out:
    if (rc == HTTP1_ERROR) {
        req->error = h.err;
        req->detail = h.detail;
        req->error_offset = h.err_off;
    }
    return rc;
}

bool http1_worth_parsing(const char *buf, size_t len, size_t prev_len,
                         const struct http1_limits *lim)
{
    size_t max_head = lim && lim->max_header_bytes ? lim->max_header_bytes
                                                   : HTTP1_DEFAULT_MAX_HEADER_BYTES;
    if (len >= max_head || prev_len >= len)
        return true;
    return memchr(buf + prev_len, '\n', len - prev_len) != NULL;
}

/* ---- response ----------------------------------------------------------- */

/* `HTTP/d.d SP 3DIGIT [SP reason-phrase]`, checked positionally. */
static int status_line_check(struct head *h, struct http1_response *resp, size_t s, size_t e,
                             bool complete)
{
    const unsigned char *b = (const unsigned char *)h->b;
    size_t i;

    for (i = s; i < e; i++) {
        size_t k = i - s;
        bool good;
        if (b[i] == '\r')
            return lone_cr(h, i);
        if (k < 8)
            good = version_byte_ok(k, b[i]);
        else if (k == 8 || k == 12)
            good = b[i] == ' ';
        else if (k < 12)
            good = IS_DIGIT(b[i]);
        else
            good = has(b[i], CL_REASON);
        if (!good)
            return fail(h, i, REASON_UPSTREAM_ERROR, "malformed status line");
    }
    if (!complete)
        return 0;
    if (e - s < 12)
        return fail(h, e, REASON_UPSTREAM_ERROR, "malformed status line");
    if (b[s + 5] != '1' || (b[s + 7] != '0' && b[s + 7] != '1'))
        return fail(h, s, REASON_UPSTREAM_ERROR, "response version other than HTTP/1.0 or 1.1");
    h->version = resp->version = b[s + 7] == '1' ? 11 : 10;
    resp->status = (unsigned)(b[s + 9] - '0') * 100 + (unsigned)(b[s + 10] - '0') * 10 +
                   (unsigned)(b[s + 11] - '0');
    if (resp->status < 100 || resp->status > 599)
        return fail(h, s + 9, REASON_UPSTREAM_ERROR, "status code outside 100..599");
    resp->reason_phrase = h->b + (e - s > 12 ? s + 13 : e);
    resp->reason_len = e - s > 12 ? e - s - 13 : 0;
    return 0;
}

static int response_header_cb(struct head *h, void *arg, size_t s, size_t colon, size_t e)
{
    unsigned idx = header_store(h, s, colon, e);
    const struct http1_header *hd = &h->hdrs[idx];
    (void)arg;

    switch ((enum hdrclass_id)hd->id) {
    case HDR_CONTENT_LENGTH:
        return framing_header(h, s, colon, e, hd, true);
    case HDR_TRANSFER_ENCODING:
        return framing_header(h, s, colon, e, hd, false);
    case HDR_CONNECTION:
        return connection_header(h, s, hd);
    default:
        return 0;
    }
}

int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         enum http1_method request_method, struct http1_response *resp,
                         size_t *head_len)
{
    struct head h;
    size_t ce, next, end = 0;
    enum line_end le;
    int rc;

    resp->version = 0;
    resp->status = 0;
    resp->reason_phrase = NULL;
    resp->reason_len = 0;
    resp->n_headers = 0;
    resp->informational = false;
    resp->body = HTTP1_BODY_NONE;
    resp->content_length = 0;
    resp->keep_alive = false;
    resp->connection.n = 0;
    resp->error = REASON_ALLOWED;
    resp->detail = NULL;
    resp->error_offset = 0;
    head_init(&h, buf, len, lim, true, resp->headers, &resp->n_headers, &resp->connection);
    *head_len = 0;

    le = line_at(&h, 0, &ce, &next);
    if ((rc = status_line_check(&h, resp, 0, ce, le == LE_CRLF)) != 0)
        goto out;
    if (le != LE_CRLF) {
        rc = line_status(&h, le, ce);
        goto out;
    }
    if ((rc = header_lines(&h, next, &end, response_header_cb, NULL)) != 0)
        goto out;

    rc = HTTP1_ERROR;
    if (resp->status == 101) {
        fail(&h, 0, REASON_UPSTREAM_ERROR, "101 Switching Protocols was never requested");
        goto out;
    }
    resp->keep_alive = !h.conn_close && (resp->version == 11 || h.conn_ka);
    if (resp->status < 200) {
        if (h.seen_cl || h.seen_te) {
            fail(&h, 0, REASON_UPSTREAM_ERROR,
                 "1xx response with Content-Length or Transfer-Encoding");
            goto out;
        }
        resp->informational = true;
    } else if (resp->status == 204) {
        if (h.seen_te || (h.seen_cl && h.cl != 0)) {
            fail(&h, 0, REASON_UPSTREAM_ERROR, "204 response with a body length");
            goto out;
        }
    } else if (resp->status == 304 || request_method == HTTP1_METHOD_HEAD) {
        /* No body; Content-Length describes the representation (RFC 9110 8.6). */
    } else if (h.seen_te) {
        resp->body = HTTP1_BODY_CHUNKED;
    } else if (h.seen_cl) {
        resp->body = HTTP1_BODY_LENGTH;
        resp->content_length = h.cl;
    } else {
        resp->body = HTTP1_BODY_CLOSE;
        resp->keep_alive = false;
    }
    *head_len = end;
    rc = HTTP1_OK;
out:
    if (rc == HTTP1_ERROR) {
        resp->error = h.err;
        resp->detail = h.detail;
        resp->error_offset = h.err_off;
    }
    return rc;
}

/* ---- chunked decoder ----------------------------------------------------- */

enum {
    CK_SIZE,       /* hex digits of a chunk size */
    CK_SIZE_LF,    /* CR seen after the size */
    CK_DATA,       /* chunk data */
    CK_DATA_CR,    /* CR after the data */
    CK_DATA_LF,    /* LF after the data */
    CK_TRAILER,    /* after the last chunk: only an empty line */
    CK_TRAILER_LF, /* CR of that empty line seen */
    CK_DONE,
    CK_ERROR,
};

void http1_chunked_init(struct http1_chunked *c, uint64_t max_total)
{
    memset(c, 0, sizeof(*c));
    c->state = CK_SIZE;
    c->max_total = max_total;
    c->error = REASON_ALLOWED;
}

static int ck_fail(struct http1_chunked *c, enum reason r, const char *detail, size_t *consumed)
{
    c->state = CK_ERROR;
    c->error = r;
    c->detail = detail;
    *consumed = 0;
    return HTTP1_ERROR;
}

static const char *size_byte_error(unsigned char ch, unsigned digits)
{
    switch (ch) {
    case ';':
        return "chunk extensions are not accepted";
    case ' ':
    case '\t':
        return "whitespace in a chunk size line";
    case '\n':
        return "bare LF after a chunk size";
    case '\r':
        return "empty chunk size";
    default:
        return digits ? "junk after a chunk size" : "chunk size is not hex digits";
    }
}

int http1_chunked_feed(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed,
                       const char **data, size_t *data_len)
{
    size_t i = 0;

    *data = NULL;
    *data_len = 0;
    if (c->state == CK_ERROR) {
        *consumed = 0;
        return HTTP1_ERROR;
    }
    if (c->state == CK_DONE) {
        *consumed = 0;
        return HTTP1_DONE;
    }
    while (i < len) {
        unsigned char ch = (unsigned char)buf[i];
        int v;
        size_t n;

        switch (c->state) {
        case CK_SIZE:
            if ((v = hex_value((unsigned char)ch)) >= 0) {
                if (c->digits == 16)
                    return ck_fail(c, REASON_BAD_FRAMING, "chunk size longer than 16 hex digits",
                                   consumed);
                c->remaining = c->remaining << 4 | (uint64_t)v;
                c->digits++;
            } else if (ch == '\r' && c->digits) {
                c->state = CK_SIZE_LF;
            } else {
                return ck_fail(c, REASON_BAD_FRAMING, size_byte_error(ch, c->digits), consumed);
            }
            i++;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                return ck_fail(c, REASON_BAD_FRAMING, "CR not followed by LF after a chunk size",
                               consumed);
            i++;
            if (c->remaining == 0) {
                c->state = CK_TRAILER;
                break;
            }
            if (c->remaining > (uint64_t)INT64_MAX - c->total)
                return ck_fail(c, REASON_BAD_FRAMING, "chunked body size overflows", consumed);
            if (c->max_total && c->total + c->remaining > c->max_total)
                return ck_fail(c, REASON_BODY_TOO_LARGE, "chunked body larger than the limit",
                               consumed);
            c->state = CK_DATA;
            break;
        case CK_DATA:
            n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            *data = buf + i;
            *data_len = n;
            c->remaining -= n;
            c->total += n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            *consumed = i + n;
            return HTTP1_DATA;
        case CK_DATA_CR:
            if (ch != '\r')
                return ck_fail(c, REASON_BAD_FRAMING, "chunk data not followed by CRLF", consumed);
            c->state = CK_DATA_LF;
            i++;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                return ck_fail(c, REASON_BAD_FRAMING, "chunk data not followed by CRLF", consumed);
            c->state = CK_SIZE;
            c->digits = 0;
            c->remaining = 0;
            i++;
            break;
        case CK_TRAILER:
            if (ch != '\r')
                return ck_fail(c, REASON_BAD_FRAMING,
                               ch == '\n' ? "bare LF after the last chunk"
                                          : "trailer fields are not accepted",
                               consumed);
            c->state = CK_TRAILER_LF;
            i++;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n')
                return ck_fail(c, REASON_BAD_FRAMING, "CR not followed by LF after the last chunk",
                               consumed);
            c->state = CK_DONE;
            *consumed = i + 1;
            return HTTP1_DONE;
        default:
            return ck_fail(c, REASON_INTERNAL, "chunked decoder in an unknown state", consumed);
        }
    }
    *consumed = len;
    return HTTP1_INCOMPLETE;
}

/* ---- header hygiene ------------------------------------------------------ */

/* The hygiene sets are hdrclass.c's built-in names: one table for the parse
 * pass, the proxy and these. */
bool http1_header_is_hop_by_hop(const char *name, size_t len)
{
    return (hdrclass_of(NULL, name, len, NULL) & HDRCLASS_HOP_BY_HOP) != 0;
}

bool http1_header_is_forwarding(const char *name, size_t len)
{
    return (hdrclass_of(NULL, name, len, NULL) & HDRCLASS_FORWARDING) != 0;
}

bool http1_header_is_spoofable(const char *name, size_t len)
{
    return (hdrclass_of(NULL, name, len, NULL) & HDRCLASS_SPOOFABLE) != 0;
}

bool http1_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!has((unsigned char)s[i], CL_TCHAR))
            return false;
    return true;
}

bool http1_name_eq(const char *a, const char *b, size_t n)
{
    return ascii_case_eq(a, b, n);
}

unsigned http1_header_find(const struct http1_header *h, unsigned n, const char *name,
                           size_t name_len, const char **value, size_t *value_len)
{
    unsigned count = 0;
    if (value)
        *value = NULL;
    if (value_len)
        *value_len = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!ieq(h[i].name, h[i].name_len, name, name_len))
            continue;
        if (count++ == 0) {
            if (value)
                *value = h[i].value;
            if (value_len)
                *value_len = h[i].value_len;
        }
    }
    return count;
}

const char *http1_status_text(unsigned status, const char *fallback)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return fallback;
    }
}
