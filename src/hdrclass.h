/*
 * hdrclass.h: what a request header name is to baton, found once per header.
 *
 * Every request header is classified in the parse pass (http1.c) by one hash
 * of its folded name in a table built at load: the built-in names (hop-by-hop,
 * framing, spoofable identity and forwarding headers, the names baton sets
 * itself) and the configured ones (audit.record_headers, the headers policies
 * read, credential names). Everything after the parse reads the class instead
 * of comparing the name against lists one by one (nginx's ngx_hash_find does
 * the same for its known headers).
 *
 * Spelling: names compare ASCII case-insensitively. Spoofable, forwarding and
 * credential names match in every '-'/'_' spelling too (X_Forwarded_For:
 * CGI-style frameworks map both to one variable); the other classes and the
 * ids match the exact spelling only (Content_Length is not framing: the
 * parser refuses it as a header of its own).
 *
 * Threads: a table is immutable once built; any thread may read it.
 */
#ifndef BATON_HDRCLASS_H
#define BATON_HDRCLASS_H

#include <stddef.h>
#include <stdint.h>

/* Classes: a name may have several. */
#define HDRCLASS_HOP_BY_HOP \
    0x0001u                         /* Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
                                       Transfer-Encoding, Upgrade, Proxy-Authorization,
                                       Proxy-Authenticate, HTTP2-Settings */
#define HDRCLASS_FRAMING 0x0002u    /* Content-Length, Transfer-Encoding */
#define HDRCLASS_SPOOFABLE 0x0004u  /* identity, path and client-address claims (http1.h) */
#define HDRCLASS_FORWARDING 0x0008u /* X-Forwarded-* (but -User, -Email) and Forwarded */
#define HDRCLASS_CREDENTIAL 0x0010u /* Authorization, Proxy-Authorization, configured names */
#define HDRCLASS_RECORDED 0x0020u   /* configured: the audit record keeps it */
#define HDRCLASS_POLICY 0x0040u     /* configured: some policy reads it */
#define HDRCLASS_DROPPED \
    0x0080u /* baton sets it or never forwards it: Authorization, Host,
                                       Content-Length, Expect, X-Request-Id, traceparent */

/* The names the parser and the proxy act on by name (exact spelling). */
enum hdrclass_id {
    HDR_OTHER = 0,
    HDR_HOST,
    HDR_CONTENT_LENGTH,
    HDR_TRANSFER_ENCODING,
    HDR_CONNECTION,
    HDR_EXPECT,
    HDR_AUTHORIZATION,
    HDR_X_REQUEST_ID,
    HDR_TRACEPARENT,
    HDR_TRACESTATE,
    HDR_USER_AGENT,
    HDR_X_FORWARDED_FOR,
    HDR_X_FORWARDED_PROTO,
    HDR_X_FORWARDED_HOST,
    HDR_FORWARDED,
    HDR_CONTENT_LENGTH_US,    /* a framing name spelled with '_' (Content_Length) */
    HDR_TRANSFER_ENCODING_US, /* Transfer_Encoding, likewise */
};

struct hdrclass;

/*
 * A table of the built-in names plus the configured ones: `recorded` (the
 * audit's record_headers), `policy_read` (every header a policy reads) and
 * `credential` (names to treat as credentials, e.g. the caller assertion's
 * header), n_* entries each (a NULL list with n 0 is fine). The strings are
 * copied. A name may appear in several lists and more than once. Owned; NULL
 * with err filled when a name is empty or longer than 256 bytes.
 */
struct hdrclass *hdrclass_new(const char *const *recorded, size_t n_recorded,
                              const char *const *policy_read, size_t n_policy,
                              const char *const *credential, size_t n_credential, char *err,
                              size_t errlen);
/* NULL ok. */
void hdrclass_free(struct hdrclass *t);

/* The table of the built-in names alone (static, built on first use). */
const struct hdrclass *hdrclass_builtin(void);

/*
 * The classes of name[0..len) (0: none), and its id in *id when id is not
 * NULL. t NULL means hdrclass_builtin(). O(len): one folding pass and one
 * hash probe (two when the name holds '_').
 */
unsigned hdrclass_of(const struct hdrclass *t, const char *name, size_t len, enum hdrclass_id *id);

/*
 * hdrclass_of for a name the caller has folded already (the parser does, in
 * the pass that checks it): len 1..16 bytes, each an ASCII letter, digit or
 * '-', letters lowercased, bytes 0..7 in w0 and 8..15 in w1 (little-endian,
 * as loaded), every byte past len zero. The same answer as hdrclass_of.
 */
unsigned hdrclass_of_folded(const struct hdrclass *t, uint64_t w0, uint64_t w1, size_t len,
                            enum hdrclass_id *id);

#endif
