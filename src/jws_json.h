/*
 * jws_json.h: the strict JSON reader for a JWS header and payload.
 *
 * A token's two JSON parts are read on every cold verification, and jansson's
 * own reader (a byte-at-a-time stream, a token buffer, a second pass to
 * unescape) cost about as much as the rest of authn_verify outside the
 * signature. This reader scans the decoded bytes once and builds the same
 * jansson values with jansson's public constructors, so every consumer of
 * the claims (policy, audit, assertion) still reads a json_t.
 *
 * It accepts exactly what json_loadb(text, len, JSON_REJECT_DUPLICATES) accepts
 * when the result is an object, and builds an equal value (json_equal, same
 * member order), with a nesting cap on top (tests/unit/test_jws_json.c checks
 * the equivalence against jansson on crafted and mutated documents):
 * RFC 8259 grammar, no trailing commas or garbage, whitespace only
 * space/tab/LF/CR; strings strictly UTF-8 (no overlong form, surrogate or
 * code point above U+10FFFF), no control byte, escapes only
 * \" \\ \/ \b \f \n \r \t \uXXXX with surrogates paired and \u0000 refused;
 * duplicate member names (compared after unescaping) refused; integers that
 * do not fit json_int_t refused, reals that overflow a double refused.
 */
#ifndef BATON_JWS_JSON_H
#define BATON_JWS_JSON_H

#include <stddef.h>

#include <jansson.h>

/*
 * Parses the `len` bytes at `text` (need not be NUL-terminated) as a JSON
 * object nesting at most `max_depth` arrays/objects (the outer object counts
 * one). Returns a new reference (json_decref), or NULL when the text is not
 * such an object.
 */
json_t *jws_json_parse(const char *text, size_t len, int max_depth);

#endif
