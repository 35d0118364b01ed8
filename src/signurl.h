/*
 * signurl.h: signed URLs: expiring, single-purpose links that let a caller
 * without a token (a person clicking an approval link) invoke one method on
 * one path of one host, until a deadline, at most N times.
 *
 * A link is the URL it was minted for with five parameters appended, in this
 * order and in no other, each exactly once, as the last parameters of the
 * query:
 *
 *   ?[query&]baton_exp=E&baton_kid=K&baton_uses=U&baton_minter=M&baton_sig=S
 *
 *   E  expiry, unix seconds, decimal without leading zero (1..2^40)
 *   K  the key id, [A-Za-z0-9._-]{1,32}
 *   U  how many forwards the link allows, 0 (any until E) or 1..1000
 *   M  the minter: "cli" (baton sign-url) or "<issuer name>.<12 hex>"
 *      (the sign endpoint: the first 12 hex digits of SHA-256(iss NUL sub)
 *      of the minting caller's token), [A-Za-z0-9._-]{1,80}
 *   S  96 characters of unpadded base64url: the 64-byte Ed25519 signature
 *      and an 8-byte scope hint
 *
 * The signature covers the canonical string
 *
 *   "BATON-SIGNED-URL-V1\n" METHOD "\n" host "\n" path "\n" query-without-sig
 *
 * where host is the request's host name without port, lower case (an IPv6
 * literal keeps its brackets), path the canonical path (path.h) and the last
 * line the query's exact bytes up to (not including) "&baton_sig=". The
 * scope hint is the first 8 bytes of SHA-256 of the first four lines; it is
 * not trusted and decides nothing: when the signature fails it only tells the
 * audit record whether the link was made for another method, host or path
 * (url_scope_mismatch) or was altered otherwise (url_bad_signature).
 *
 * Parsing is strict (signurl_parse_query): a parameter whose name, decoded
 * and folded to lower case, starts with "baton_" begins the suffix; from
 * there, exactly the five names above must follow, literally (no escape, no
 * upper case), in order, each once, with a canonical value, and nothing after
 * baton_sig. A duplicate, a parameter out of order, an unknown baton_* name,
 * a non-canonical value or anything after the signature is a malformed link.
 *
 * Verification order (signurl_verify): known kid (url_unknown_key), the
 * signature over the request's own method, host, path and query
 * (url_scope_mismatch / url_bad_signature), then the expiry: refused from
 * E + leeway_s on (url_expired), and when E lies further ahead than
 * max_ttl_s + leeway_s (url_expired: no key holder may mint past the cap).
 * Single use (url_used) is the caller's last step: signurl_uses.consume just
 * before the request is forwarded.
 *
 * Keys are Ed25519 PEM private keys read once (signurl_keys_load), refused
 * like the audit signing key when group or others may read them; the first
 * key signs, every key verifies, so a rotation adds the new key first and
 * removes the old one after the longest link lifetime.
 *
 * The in-memory use store (signurl_memstore) is one bounded table shared by
 * every worker of the process, behind `struct signurl_uses`: it counts uses
 * when the main config has no "redis". With "redis", uses are counted there,
 * across every instance sharing it (redis_link_use: one Lua script, INCR of
 * "baton:link:<link id hex>" with EXPIREAT on the first use, at
 * exp + leeway_s + SIGNURL_SHARED_GRACE_S), the request parked meanwhile like
 * a global rate decision; a use Redis cannot count is refused with a
 * retryable 503 whatever redis.on_failure says (a link is a credential).
 */
#ifndef BATON_SIGNURL_H
#define BATON_SIGNURL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "diag.h"
#include "reason.h"

#define SIGNURL_MAX_KEYS 16
#define SIGNURL_KID_MAX 32
#define SIGNURL_MINTER_MAX 80
#define SIGNURL_MAX_USES 1000
#define SIGNURL_EXP_MAX (1LL << 40)
#define SIGNURL_ID_BYTES 16  /* link id: SHA-256 of the signature, truncated */
#define SIGNURL_SIG_CHARS 96 /* base64url of 64 signature + 8 hint bytes */
#define SIGNURL_KEY_FILE_MAX 16384
#define SIGNURL_MINT_BODY_MAX 4096 /* bytes of a sign endpoint request body */
#define SIGNURL_ENDPOINT "/.well-known/baton/sign"
#define SIGNURL_CLI_MINTER "cli"
/* Bytes of the longest suffix signurl_sign appends ("?" or "&" included). */
#define SIGNURL_SUFFIX_MAX 320

/* The link parameters of a query (signurl_parse_query). */
struct signurl_params {
    int64_t exp;
    char kid[SIGNURL_KID_MAX + 1];
    unsigned uses;
    char minter[SIGNURL_MINTER_MAX + 1];
    unsigned char sig[64];
    unsigned char hint[8];
    size_t base_len;   /* query bytes before the suffix, without the '&' joining them */
    size_t signed_len; /* query bytes the signature covers (up to "&baton_sig=") */
};

/*
 * Whether the query (`n` bytes, may be NULL) has a parameter whose decoded
 * name starts with "baton_" in any case: such a request is a signed-URL
 * request and nothing named baton_* ever reaches an upstream.
 */
bool signurl_query_marked(const char *q, size_t n);

/*
 * Parses the link parameters of query `q` (`n` bytes, no '?'). Returns 1 and
 * fills `out`, 0 when the query carries no baton_* parameter, or -1 with a
 * one-line reason in `err` (caller-owned) for a malformed suffix.
 * Allocation-free, thread-safe.
 */
int signurl_parse_query(const char *q, size_t n, struct signurl_params *out, char *err,
                        size_t errlen);

/* What a link is bound to. `query` is the request's query (NULL: none). */
struct signurl_scope {
    const char *method; /* upper case, NUL-terminated */
    const char *host;   /* host name without port; compared lower-cased */
    size_t host_len;
    const char *path; /* canonical path */
    size_t path_len;
    const char *query;
    size_t query_len;
};

struct signurl_keys; /* immutable after load; shared by every worker */

/*
 * Reads and parses every key of `cfg` (borrowed; url_signing.enabled must be
 * set). Returns an owned key set, or NULL with a message in `err` and the
 * index of the offending key in *bad (-1: not a key's fault).
 */
struct signurl_keys *signurl_keys_load(const struct cfg_url_signing *cfg, char *err, size_t errlen,
                                       int *bad);
void signurl_keys_free(struct signurl_keys *k);
/* The same for a whole config: NULL without url_signing (nothing added to
 * `d`), else the keys, or NULL with the error added to `d` at the offending
 * key's "file" (serve, reload, `baton check` and `baton sign-url` share it). */
struct signurl_keys *signurl_keys_for(const struct baton_config *cfg, struct diags *d);
/* The id of the signing key (the first). Borrowed. */
const char *signurl_keys_signer(const struct signurl_keys *k);
unsigned signurl_keys_max_ttl(const struct signurl_keys *k);

/*
 * Mints a link for `scope` (its query must carry no baton_* parameter): the
 * suffix to append to the target, "?" or "&" first, NUL-terminated, into
 * `out` (caller-owned, at least SIGNURL_SUFFIX_MAX bytes). `exp` in 1..2^40,
 * `uses` 0..SIGNURL_MAX_USES, `minter` in the minter alphabet. Fills `id`
 * (the link id) when not NULL. Returns the suffix length, or -1 with `err`.
 * Thread-safe.
 */
int signurl_sign(const struct signurl_keys *k, const struct signurl_scope *scope, int64_t exp,
                 unsigned uses, const char *minter, char *out, unsigned char id[SIGNURL_ID_BYTES],
                 char *err, size_t errlen);

/*
 * Verifies parsed link `p` against the request `scope` at `now_s`: returns
 * REASON_ALLOWED or URL_UNKNOWN_KEY, URL_SCOPE_MISMATCH, URL_BAD_SIGNATURE,
 * URL_EXPIRED (order as above). Thread-safe; allocates only for a canonical
 * string over 2 KiB.
 */
enum reason signurl_verify(const struct signurl_keys *k, const struct signurl_scope *scope,
                           const struct signurl_params *p, int64_t now_s);

/* The link id of a parsed link (SHA-256 of its signature, 16 bytes), and the
 * same as 32 lower-case hex digits plus NUL. */
void signurl_link_id(const struct signurl_params *p, unsigned char id[SIGNURL_ID_BYTES]);
void signurl_id_hex(const unsigned char id[SIGNURL_ID_BYTES], char out[2 * SIGNURL_ID_BYTES + 1]);

/* The minter id of a caller authenticated by issuer `issuer_name` (its config
 * name) with token claims `iss` and `sub` (either may be NULL: empty). `out`
 * holds SIGNURL_MINTER_MAX + 1 bytes. */
void signurl_minter_id(const char *issuer_name, const char *iss, const char *sub, char *out);
/* Whether link minter `minter` was minted through the sign endpoint by a
 * caller of config issuer `issuer_name`. */
bool signurl_minter_issuer_is(const char *minter, const char *issuer_name);

/* ---- single use ---------------------------------------------------------------- */

enum signurl_use {
    SIGNURL_USE_OK,          /* this forward is counted; go on */
    SIGNURL_USE_USED,        /* the link has no use left: url_used */
    SIGNURL_USE_UNAVAILABLE, /* the store cannot record it: 503, retryable */
};

/*
 * Where uses are counted. `consume` records one use of link `id`, which
 * allows `uses` (>= 1) forwards and stops being accepted at `until_s`
 * (unix seconds: exp + leeway, so the entry may be dropped then). It must be
 * atomic (two concurrent calls never both get the last use), thread-safe and
 * non-blocking. The in-memory store below is the implementation used without
 * "redis"; with it, uses are counted asynchronously by redis_link_use (the
 * request parks for the answer, so that path does not go through here).
 */
struct signurl_uses {
    enum signurl_use (*consume)(void *ctx, const unsigned char id[SIGNURL_ID_BYTES], unsigned uses,
                                int64_t until_s, int64_t now_s);
    void *ctx;
};

/* Seconds a shared use count outlives the link: instances whose clocks run
 * behind Redis's still find it until they stop accepting the link. */
#define SIGNURL_SHARED_GRACE_S 3600

#define SIGNURL_STORE_ENTRIES 65536 /* links with uses left to count, per process */

struct signurl_memstore;
/* A store of `entries` links (0: SIGNURL_STORE_ENTRIES; rounded up to a
 * power of two). Owned; signurl_memstore_free. */
struct signurl_memstore *signurl_memstore_new(size_t entries);
void signurl_memstore_free(struct signurl_memstore *s);
/* The interface over `s` (borrowed: valid while s is). */
struct signurl_uses signurl_memstore_uses(struct signurl_memstore *s);

/* ---- the sign endpoint's request ----------------------------------------------- */

struct signurl_mint_req {
    char method[16];
    char *target; /* owned: path and optional query, origin-form */
    unsigned ttl_s;
    unsigned uses;
};

/*
 * Parses a sign endpoint body: a JSON object with exactly "method" (an
 * upper-case method baton forwards), "path" (origin-form target, at most
 * 4096 bytes), "ttl_s" (1..604800) and optionally "uses" (0..1000, default
 * 1). Returns 0, or -1 with `err`. Release with signurl_mint_req_clear.
 */
int signurl_mint_parse(const char *body, size_t len, struct signurl_mint_req *out, char *err,
                       size_t errlen);
void signurl_mint_req_clear(struct signurl_mint_req *r);

#endif
