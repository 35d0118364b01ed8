/*
 * path.h: the canonical path, the single place where a request target becomes
 * the path that is both matched against step policies AND forwarded upstream.
 *
 * Nothing is ever rewritten: a target is accepted exactly as sent, or rejected
 * with a precise PATH_* reason (400, or 414 for length). So every resource has
 * exactly one accepted spelling, and what the policy engine saw is byte for
 * byte what the upstream receives.
 *
 * Input: the request target in origin-form, `absolute-path [ "?" query ]`
 * (RFC 9112 section 3.2.1). Absolute-form targets ("http://host/p") are
 * resolved by the server before calling (the guard checks their authority
 * against Host and passes the path-and-query part); "*" (asterisk-form) and
 * authority-form are not paths. The rules below classify each byte and each
 * segment; the target is scanned left to right once, and the first offending
 * byte or segment (a segment is judged when it ends) decides the reason:
 *
 *   1. Length: the whole target (path and query) longer than `max_uri` bytes
 *      -> PATH_TOO_LONG (414). Empty, or not starting with "/" ->
 *      PATH_NOT_ORIGIN_FORM.
 *   2. Bytes anywhere (path or query): NUL and control bytes 0x00-0x1F, 0x7F
 *      -> PATH_CONTROL; bytes >= 0x80 -> PATH_NON_ASCII; "#" -> PATH_FRAGMENT.
 *   3. The path is everything before the first "?". In it:
 *      - "\" -> PATH_BACKSLASH; ";" (path parameters) -> PATH_SEMICOLON;
 *      - any other byte that RFC 3986 does not allow in a path (space and
 *        " < > [ ] ^ ` { | }) -> PATH_BAD_CHAR. Allowed literally:
 *        ALPHA DIGIT - . _ ~ ! $ & ' ( ) * + , = : @ and "/";
 *      - "%" must be followed by two hex digits, else PATH_BAD_PERCENT;
 *        then, by the decoded byte: "/" (%2F, %2f) -> PATH_ENCODED_SLASH,
 *        "\" (%5C, %5c) -> PATH_ENCODED_BACKSLASH, "." (%2E, %2e) ->
 *        PATH_ENCODED_DOT, a control byte (%00-%1F, %7F) -> PATH_CONTROL,
 *        another unreserved character (ALPHA DIGIT - _ ~, which has a literal
 *        spelling) -> PATH_NONCANONICAL_ESCAPE, and an escape written with
 *        lowercase hex digits ("%c3") -> PATH_NONCANONICAL_ESCAPE: the one
 *        accepted spelling of an escape is "%" and two UPPERCASE hex digits,
 *        and only for bytes that need one. "%25" (a literal "%") and escapes
 *        of reserved or non-ASCII bytes ("%3B", "%C3%A9") are accepted and
 *        forwarded as sent.
 *      - Segments are the runs between "/". A segment "." or ".." ->
 *        PATH_DOT_SEGMENT ("..." or ".well-known" are ordinary names). An
 *        empty segment ("//" anywhere, including a leading "//") ->
 *        PATH_EMPTY_SEGMENT, except the last one: "/" itself and a trailing
 *        slash ("/billing/") are accepted, because "/a/" and "/a" name two
 *        resources, not two spellings of one, and an allow-list denies the
 *        one it does not name.
 *   4. The query (after the first "?", which may be empty) is not matched by
 *      policies and is forwarded unchanged. It must be made of RFC 3986
 *      query characters (pchar, "/", "?", including ";") with well-formed
 *      escapes of either case; anything else (space, "\", " < > [ ] ^ ` { | },
 *      "%" not followed by two hex digits) -> PATH_BAD_QUERY.
 */
#ifndef BATON_PATH_H
#define BATON_PATH_H

#include <stddef.h>

#include "reason.h"

/* The default cap when max_uri is 0 (docs/spec.md limits.max_uri_bytes). */
#define PATH_DEFAULT_MAX_URI 8192

struct path_result {
    const char *path; /* slice of the target: starts with "/", no "?" */
    size_t path_len;
    const char *query; /* slice after the "?", or NULL when the target has none */
    size_t query_len;  /* 0 with query != NULL: a bare trailing "?" */
};

/*
 * Validates `target` (`len` bytes, not necessarily NUL-terminated; NUL bytes
 * inside are rejected) against the rules above. `max_uri` caps the whole
 * target; 0 means PATH_DEFAULT_MAX_URI. Returns REASON_ALLOWED and fills `out`
 * with slices of `target` (borrowed: valid while target is), or a PATH_*
 * reason with `out` zeroed. Pure, thread-safe, allocation-free.
 */
enum reason path_canonicalize(const char *target, size_t len, size_t max_uri,
                              struct path_result *out);

#endif
