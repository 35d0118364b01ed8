/*
 * path.c: request target -> canonical path (rules in path.h).
 *
 * One left-to-right pass over the target with a byte-class table; segments are
 * judged when they end. Nothing is decoded into a buffer and nothing is
 * rewritten: the result is two slices of the caller's target, so the bytes the
 * policy engine matches are the bytes the proxy forwards.
 */
#include "path.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

/* Byte classes of the path part. */
enum {
    C_BAD = 0, /* not allowed by RFC 3986 in a path: PATH_BAD_CHAR */
    C_OK,      /* unreserved, sub-delims except ";", ":" "@" */
    C_SLASH,
    C_PERCENT,
    C_QUESTION,
    C_HASH,
    C_BACKSLASH,
    C_SEMICOLON,
    C_CONTROL,
    C_NON_ASCII,
};

/* The class of each byte (GNU range designators; unlisted bytes are C_BAD:
 * space " < > [ ] ^ ` { | }). One load a byte instead of a chain of tests. */
static const uint8_t byte_classes[256] = {
    [0x00 ... 0x1f] = C_CONTROL,
    [0x7f] = C_CONTROL,
    [0x80 ... 0xff] = C_NON_ASCII,
    ['a' ... 'z'] = C_OK,
    ['A' ... 'Z'] = C_OK,
    ['0' ... '9'] = C_OK,
    ['-'] = C_OK, /* unreserved */
    ['.'] = C_OK,
    ['_'] = C_OK,
    ['~'] = C_OK,
    ['!'] = C_OK, /* sub-delims but ';' */
    ['$'] = C_OK,
    ['&'] = C_OK,
    ['\''] = C_OK,
    ['('] = C_OK,
    [')'] = C_OK,
    ['*'] = C_OK,
    ['+'] = C_OK,
    [','] = C_OK,
    ['='] = C_OK,
    [':'] = C_OK,
    ['@'] = C_OK,
    ['/'] = C_SLASH,
    ['%'] = C_PERCENT,
    ['?'] = C_QUESTION,
    ['#'] = C_HASH,
    ['\\'] = C_BACKSLASH,
    [';'] = C_SEMICOLON,
};

static uint8_t byte_class(unsigned char c)
{
    return byte_classes[c];
}

/* Hex digit value, or -1; `*lower` is set when it is a lowercase letter. */
static int hexval(unsigned char c, bool *lower)
{
    if (c >= 'a' && c <= 'f')
        *lower = true;
    return hex_value(c);
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Judges the escape at t[i] == '%' of the path. */
static enum reason path_escape(const char *t, size_t len, size_t i)
{
    bool lower = false;
    int hi, lo;
    unsigned char v;

    if (i + 2 >= len)
        return REASON_PATH_BAD_PERCENT;
    hi = hexval((unsigned char)t[i + 1], &lower);
    lo = hexval((unsigned char)t[i + 2], &lower);
    if (hi < 0 || lo < 0)
        return REASON_PATH_BAD_PERCENT;
    v = (unsigned char)(hi << 4 | lo);
    if (v == '/')
        return REASON_PATH_ENCODED_SLASH;
    if (v == '\\')
        return REASON_PATH_ENCODED_BACKSLASH;
    if (v == '.')
        return REASON_PATH_ENCODED_DOT;
    if (v < 0x20 || v == 0x7f)
        return REASON_PATH_CONTROL;
    if (is_unreserved(v) || lower)
        return REASON_PATH_NONCANONICAL_ESCAPE;
    return REASON_ALLOWED;
}

/* Judges the segment t[start, end) that just ended. */
static enum reason path_segment(const char *t, size_t start, size_t end, bool last)
{
    size_t n = end - start;
    if (n == 0)
        return last ? REASON_ALLOWED : REASON_PATH_EMPTY_SEGMENT;
    if ((n == 1 && t[start] == '.') || (n == 2 && t[start] == '.' && t[start + 1] == '.'))
        return REASON_PATH_DOT_SEGMENT;
    return REASON_ALLOWED;
}

/* Validates the query t[start, len): RFC 3986 query characters. */
static enum reason path_query(const char *t, size_t start, size_t len)
{
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        bool lower = false;
        switch (byte_class(c)) {
        case C_OK:
        case C_SLASH:
        case C_QUESTION:
        case C_SEMICOLON:
            break;
        case C_PERCENT:
            if (i + 2 >= len || hexval((unsigned char)t[i + 1], &lower) < 0 ||
                hexval((unsigned char)t[i + 2], &lower) < 0)
                return REASON_PATH_BAD_QUERY;
            i += 2;
            break;
        case C_CONTROL:
            return REASON_PATH_CONTROL;
        case C_NON_ASCII:
            return REASON_PATH_NON_ASCII;
        case C_HASH:
            return REASON_PATH_FRAGMENT;
        default: /* C_BAD, C_BACKSLASH */
            return REASON_PATH_BAD_QUERY;
        }
    }
    return REASON_ALLOWED;
}

enum reason path_canonicalize(const char *target, size_t len, size_t max_uri,
                              struct path_result *out)
{
    enum reason r = REASON_ALLOWED;
    size_t seg = 1, i;

    memset(out, 0, sizeof(*out));
    if (max_uri == 0)
        max_uri = PATH_DEFAULT_MAX_URI;
    if (len > max_uri)
        return REASON_PATH_TOO_LONG;
    if (len == 0 || target[0] != '/')
        return REASON_PATH_NOT_ORIGIN_FORM;

    for (i = 1; i < len; i++) {
        unsigned char c = (unsigned char)target[i];
        switch (byte_class(c)) {
        case C_OK:
            continue;
        case C_SLASH:
            if ((r = path_segment(target, seg, i, false)) != REASON_ALLOWED)
                return r;
            seg = i + 1;
            continue;
        case C_PERCENT:
            if ((r = path_escape(target, len, i)) != REASON_ALLOWED)
                return r;
            i += 2;
            continue;
        case C_QUESTION:
            break;
        case C_HASH:
            return REASON_PATH_FRAGMENT;
        case C_BACKSLASH:
            return REASON_PATH_BACKSLASH;
        case C_SEMICOLON:
            return REASON_PATH_SEMICOLON;
        case C_CONTROL:
            return REASON_PATH_CONTROL;
        case C_NON_ASCII:
            return REASON_PATH_NON_ASCII;
        default:
            return REASON_PATH_BAD_CHAR;
        }
        break; /* '?' */
    }
    if ((r = path_segment(target, seg, i, true)) != REASON_ALLOWED)
        return r;
    if (i < len && (r = path_query(target, i + 1, len)) != REASON_ALLOWED)
        return r;

    out->path = target;
    out->path_len = i;
    if (i < len) {
        out->query = target + i + 1;
        out->query_len = len - i - 1;
    }
    return REASON_ALLOWED;
}
