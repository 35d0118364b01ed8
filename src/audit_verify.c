/*
 * audit_verify.c: the streaming verifier behind `baton audit verify`.
 *
 * Input arrives in chunks (audit_verifier_feed), file after file; only the
 * current partial line is buffered (at most AUDIT_LINE_MAX bytes), so a log of
 * any size verifies in constant memory. Each line must be printable ASCII and
 * one JSON object (jansson, duplicate keys rejected) with the members of its
 * kind; then the chain is checked against the previous record: same log id,
 * seq one more, prev equal to the SHA-256 of the previous line's bytes.
 * Checkpoints must be byte-exact canonical lines and, with a public key, carry
 * a valid Ed25519 signature over (log id, seq, head, ts, key id). The first
 * anomaly stops verification and is classified (docs/audit.md "Verify").
 *
 * Records may also come one by one in chain order (audit_verifier_record,
 * for LogEntry exports: audit_verify_index.c) with an explicit start of each
 * chain. Either way a summary is kept per chain (audit_chain_summary), and
 * with a witness (audit_verify_witness.h) every witnessed record read is
 * compared with the witness's, and at the end every witnessed chain must be
 * in the inputs through its last witnessed record.
 */
#include "audit.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <jansson.h>

#include "audit_canon.h"
#include "audit_verify_witness.h"
#include "util.h"

struct loc {
    char file[256];
    char unit; /* 'l' line, 'e' entry, 0: no position */
    uint64_t line;
    uint64_t seq;
    bool has_seq;
};

struct audit_verifier {
    EVP_PKEY *pub; /* NULL: signatures not checked */
    char key_id[65];
    char *buf; /* the current partial line */
    size_t blen;
    char file[256];
    uint64_t line_no; /* complete lines seen in the current file */
    bool file_empty;  /* no line yet in the current file */
    bool done;
    /* the previous record of the chain */
    bool have;
    uint64_t seq;
    char hash[65];
    struct loc prev_loc;
    /* records after the last verified checkpoint (with a key) */
    uint64_t unsigned_count;
    struct loc unsigned_loc;
    /* a forward seq jump, classified with the next line */
    bool pend;
    struct loc pend_loc;
    uint64_t pend_expect;
    struct audit_verify_result res;
    /* options, chain summaries, records fed by chain */
    struct audit_verify_opts opts;
    struct audit_chain_summary *chains; /* the last one is the current chain's */
    size_t n_chains, cap_chains;
    bool by_chain; /* audit_verifier_record: one chain after another */
    char unit;     /* what line_no counts */
};

/* What a line says, once its form is checked. Strings are copies. */
struct parsed {
    uint64_t seq;
    size_t members;
    char prev[65], log[33], kind[16], ts[32], start[16], key_id[65], sig[129];
};

const char *audit_break_name(enum audit_break b)
{
    switch (b) {
    case AUDIT_OK:
        return "ok";
    case AUDIT_BREAK_MALFORMED:
        return "malformed";
    case AUDIT_BREAK_TORN:
        return "torn";
    case AUDIT_BREAK_TOO_LONG:
        return "too_long";
    case AUDIT_BREAK_EDITED:
        return "edited";
    case AUDIT_BREAK_MISSING:
        return "missing";
    case AUDIT_BREAK_REORDERED:
        return "reordered";
    case AUDIT_BREAK_INSERTED:
        return "inserted";
    case AUDIT_BREAK_SPLICED:
        return "spliced";
    case AUDIT_BREAK_BAD_START:
        return "bad_start";
    case AUDIT_BREAK_BAD_SIGNATURE:
        return "bad_signature";
    case AUDIT_BREAK_UNSIGNED_TAIL:
        return "unsigned_tail";
    case AUDIT_BREAK_EMPTY:
        return "empty";
    case AUDIT_BREAK_FORKED:
        return "forked";
    case AUDIT_BREAK_MISSING_CHAIN:
        return "missing_chain";
    }
    return "unknown";
}

static void here(const struct audit_verifier *v, struct loc *l, uint64_t seq, bool has_seq)
{
    snprintf(l->file, sizeof(l->file), "%s", v->file);
    l->unit = v->unit;
    l->line = v->line_no;
    l->seq = seq;
    l->has_seq = has_seq;
}

static void brk(struct audit_verifier *v, enum audit_break kind, const struct loc *at,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void brk(struct audit_verifier *v, enum audit_break kind, const struct loc *at,
                const char *fmt, ...)
{
    va_list ap;
    if (v->done)
        return;
    v->done = true;
    v->res.kind = kind;
    snprintf(v->res.file, sizeof(v->res.file), "%s", at->file);
    v->res.unit = at->unit;
    v->res.line = at->line;
    v->res.seq = at->seq;
    v->res.has_seq = at->has_seq;
    va_start(ap, fmt);
    vsnprintf(v->res.message, sizeof(v->res.message), fmt, ap);
    va_end(ap);
}

static bool lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
static bool ts_form(const char *s)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != sizeof(pat) - 1)
        return false;
    for (size_t i = 0; pat[i]; i++)
        if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
            return false;
    return true;
}

/*
 * A strict JSON reader for one line: RFC 8259 values without insignificant
 * whitespace (the writer never writes any), member names of [a-z0-9_] only
 * (so no two spellings of one name), no duplicate member in any object, at
 * most JP_MAX_DEPTH levels and JP_MAX_MEMBERS members an object. Top-level
 * members are kept as raw slices; nothing is allocated.
 */
#define JP_MAX_DEPTH 16
#define JP_MAX_MEMBERS 64

struct slice {
    const char *p; /* strings: the bytes between the quotes, escapes as written */
    size_t n;
    char type; /* 's'tring, 'n'umber, 'o'bject, 'a'rray, 't'rue, 'f'alse, 'z' null */
};

struct jp {
    const char *p, *end;
    const char *err;
};

static bool jp_fail(struct jp *j, const char *why)
{
    if (!j->err)
        j->err = why;
    return false;
}

static bool jp_string(struct jp *j, struct slice *out)
{
    const char *s = ++j->p; /* past the opening quote */
    while (j->p < j->end) {
        char c = *j->p;
        if (c == '"') {
            *out = (struct slice){s, (size_t)(j->p - s), 's'};
            j->p++;
            return true;
        }
        if (c != '\\') {
            j->p++; /* bytes are printable ASCII, checked before */
            continue;
        }
        if (j->end - j->p < 2)
            break;
        c = j->p[1];
        if (c == 'u') {
            unsigned u = 0;
            if (j->end - j->p < 6)
                return jp_fail(j, "a \\u escape is cut short");
            for (int i = 2; i < 6; i++) {
                int h = hex_value((unsigned char)j->p[i]);
                if (h < 0)
                    return jp_fail(j, "a \\u escape is not 4 hex digits");
                u = u << 4 | (unsigned)h;
            }
            if (u >= 0xd800 && u <= 0xdfff)
                return jp_fail(j, "a \\u escape of a surrogate");
            j->p += 6;
        } else if (c && memchr("\"\\/bfnrt", c, 8)) {
            j->p += 2;
        } else {
            return jp_fail(j, "an invalid escape in a string");
        }
    }
    return jp_fail(j, "an unterminated string");
}

static bool jp_digits(struct jp *j)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static bool jp_number(struct jp *j, struct slice *out)
{
    const char *s = j->p;
    if (*j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (j->p >= j->end || *j->p < '1' || *j->p > '9' || !jp_digits(j))
        return jp_fail(j, "an invalid number");
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!jp_digits(j))
            return jp_fail(j, "an invalid number");
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!jp_digits(j))
            return jp_fail(j, "an invalid number");
    }
    *out = (struct slice){s, (size_t)(j->p - s), 'n'};
    return true;
}

static bool jp_object(struct jp *j, int depth, struct slice *keys, struct slice *vals,
                      size_t *count, struct slice *out);
static bool jp_array(struct jp *j, int depth, struct slice *out);

static bool jp_literal(struct jp *j, const char *word, char type, struct slice *out)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n))
        return jp_fail(j, "an invalid value");
    *out = (struct slice){j->p, n, type};
    j->p += n;
    return true;
}

static bool jp_value(struct jp *j, int depth, struct slice *out)
{
    if (j->p >= j->end)
        return jp_fail(j, "a value is missing");
    switch (*j->p) {
    case '"':
        return jp_string(j, out);
    case '{':
        return jp_object(j, depth + 1, NULL, NULL, NULL, out);
    case '[':
        return jp_array(j, depth + 1, out);
    case 't':
        return jp_literal(j, "true", 't', out);
    case 'f':
        return jp_literal(j, "false", 'f', out);
    case 'n':
        return jp_literal(j, "null", 'z', out);
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return jp_number(j, out);
        return jp_fail(j, "an invalid value");
    }
}

static bool jp_array(struct jp *j, int depth, struct slice *out)
{
    const char *s = j->p++;
    struct slice v;

    if (depth > JP_MAX_DEPTH)
        return jp_fail(j, "values nested too deep");
    if (j->p < j->end && *j->p == ']') {
        j->p++;
    } else {
        for (;;) {
            if (!jp_value(j, depth, &v))
                return false;
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == ']') {
                j->p++;
                break;
            }
            return jp_fail(j, "an array without , or ]");
        }
    }
    *out = (struct slice){s, (size_t)(j->p - s), 'a'};
    return true;
}

static bool name_chars(struct slice k)
{
    for (size_t i = 0; i < k.n; i++) {
        char c = k.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return k.n > 0;
}

/* keys/vals/count: where to keep the members (top level), or NULL. */
static bool jp_object(struct jp *j, int depth, struct slice *keys, struct slice *vals,
                      size_t *count, struct slice *out)
{
    struct slice local[JP_MAX_MEMBERS], k, v;
    const char *s = j->p++;
    size_t n = 0;

    if (depth > JP_MAX_DEPTH)
        return jp_fail(j, "values nested too deep");
    if (!keys)
        keys = local;
    if (j->p < j->end && *j->p == '}') {
        j->p++;
    } else {
        for (;;) {
            if (j->p >= j->end || *j->p != '"')
                return jp_fail(j, "a member name is missing");
            if (!jp_string(j, &k))
                return false;
            if (!name_chars(k))
                return jp_fail(j, "a member name is not [a-z0-9_]");
            for (size_t i = 0; i < n; i++)
                if (keys[i].n == k.n && !memcmp(keys[i].p, k.p, k.n))
                    return jp_fail(j, "a duplicate member");
            if (n == JP_MAX_MEMBERS)
                return jp_fail(j, "too many members");
            if (j->p >= j->end || *j->p != ':')
                return jp_fail(j, "a member without :");
            j->p++;
            if (!jp_value(j, depth, &v))
                return false;
            keys[n] = k;
            if (vals)
                vals[n] = v;
            n++;
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == '}') {
                j->p++;
                break;
            }
            return jp_fail(j, "an object without , or }");
        }
    }
    if (count)
        *count = n;
    *out = (struct slice){s, (size_t)(j->p - s), 'o'};
    return true;
}

struct top {
    struct slice keys[JP_MAX_MEMBERS], vals[JP_MAX_MEMBERS];
    size_t n;
};

static const struct slice *member(const struct top *t, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < t->n; i++)
        if (t->keys[i].n == len && !memcmp(t->keys[i].p, name, len))
            return &t->vals[i];
    return NULL;
}

/* Copies a string member of exactly `len` bytes (any length when len is 0,
 * up to cap-1) into out. */
static bool str_copy(const struct top *t, const char *name, size_t len, char *out, size_t cap)
{
    const struct slice *m = member(t, name);
    if (!m || m->type != 's' || (len && m->n != len) || m->n >= cap)
        return false;
    memcpy(out, m->p, m->n);
    out[m->n] = '\0';
    return true;
}

static bool is_type(const struct top *t, const char *name, char type)
{
    const struct slice *m = member(t, name);
    return m && m->type == type;
}

/* An unsigned decimal of at most 2^63-1 without sign, fraction or exponent. */
static bool uint_member(const struct top *t, const char *name, uint64_t *out)
{
    const struct slice *m = member(t, name);
    uint64_t v = 0;
    if (!m || m->type != 'n' || m->n > 19 || (m->n > 1 && m->p[0] == '0'))
        return false;
    for (size_t i = 0; i < m->n; i++) {
        if (m->p[i] < '0' || m->p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(m->p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = v;
    return true;
}

/* Parses and checks one line's form. 0, or -1 with `why`. */
static int parse_line(const char *line, size_t len, struct parsed *p, char *why, size_t whylen)
{
    struct top top, *t = &top;
    struct jp j = {line, line + len, NULL};
    struct slice whole;
    uint64_t v, n;
    int rc = -1;

    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(why, whylen, "byte 0x%02x at column %zu is not printable ASCII", c, i + 1);
            return -1;
        }
    }
    if (!len || line[0] != '{') {
        snprintf(why, whylen, "not a JSON object");
        return -1;
    }
    if (!jp_object(&j, 1, t->keys, t->vals, &t->n, &whole) || j.p != j.end) {
        snprintf(why, whylen, "invalid JSON at column %zu: %s", (size_t)(j.p - line) + 1,
                 j.err ? j.err : "bytes after the object");
        goto out;
    }
    p->members = t->n;
    if (!uint_member(t, "v", &v) || v != AUDIT_FORMAT_VERSION) {
        snprintf(why, whylen, "\"v\" is not %d", AUDIT_FORMAT_VERSION);
        goto out;
    }
    if (!uint_member(t, "seq", &p->seq)) {
        snprintf(why, whylen, "\"seq\" is not a non-negative integer");
        goto out;
    }
    if (!str_copy(t, "prev", 64, p->prev, sizeof(p->prev)) || !lower_hex(p->prev, 64) ||
        !str_copy(t, "log", 32, p->log, sizeof(p->log)) || !lower_hex(p->log, 32)) {
        snprintf(why, whylen, "\"prev\" or \"log\" is not lowercase hex of the right length");
        goto out;
    }
    if (!str_copy(t, "ts", 0, p->ts, sizeof(p->ts)) || !ts_form(p->ts)) {
        snprintf(why, whylen, "\"ts\" is not a UTC timestamp with milliseconds");
        goto out;
    }
    if (!str_copy(t, "kind", 0, p->kind, sizeof(p->kind))) {
        snprintf(why, whylen, "\"kind\" is missing");
        goto out;
    }
    if (!strcmp(p->kind, "request")) {
        if (!is_type(t, "decision", 's') || !is_type(t, "reason", 's') ||
            !member(t, "request_id") || !is_type(t, "request", 'o')) {
            snprintf(why, whylen, "request record without decision, reason, request_id or request");
            goto out;
        }
    } else if (!strcmp(p->kind, "open")) {
        if (!str_copy(t, "start", 0, p->start, sizeof(p->start)) ||
            (strcmp(p->start, "genesis") && strcmp(p->start, "restart"))) {
            snprintf(why, whylen, "open record without start genesis or restart");
            goto out;
        }
    } else if (!strcmp(p->kind, "rotate")) {
        if (!is_type(t, "cause", 's')) {
            snprintf(why, whylen, "rotate record without cause");
            goto out;
        }
    } else if (!strcmp(p->kind, "lost")) {
        if (!uint_member(t, "count", &n)) {
            snprintf(why, whylen, "lost record without count");
            goto out;
        }
    } else if (!strcmp(p->kind, "checkpoint")) {
        if (!str_copy(t, "key_id", 64, p->key_id, sizeof(p->key_id)) || !lower_hex(p->key_id, 64) ||
            !str_copy(t, "sig", 128, p->sig, sizeof(p->sig)) || !lower_hex(p->sig, 128) ||
            t->n != 8) {
            snprintf(why, whylen, "checkpoint without key_id and sig, or with other members");
            goto out;
        }
    } else {
        snprintf(why, whylen, "unknown kind");
        goto out;
    }
    rc = 0;
out:
    return rc;
}

static void unhex(const char *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = s[2 * i] <= '9' ? s[2 * i] - '0' : s[2 * i] - 'a' + 10;
        int lo = s[2 * i + 1] <= '9' ? s[2 * i + 1] - '0' : s[2 * i + 1] - 'a' + 10;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
}

/* A checkpoint's form, key and signature. Returns 0, or breaks. */
static int check_checkpoint(struct audit_verifier *v, const struct parsed *p, const char *line,
                            size_t len, const struct loc *at)
{
    const char *key_id = p->key_id, *sig_hex = p->sig;
    char canon[640], msg[512];
    unsigned char sig[64];
    size_t clen, mlen;
    EVP_MD_CTX *ctx = NULL;
    int ok;

    clen = audit_checkpoint_line(canon, sizeof(canon), p->log, p->seq, p->prev, p->ts, key_id,
                                 sig_hex);
    if (clen != len || memcmp(canon, line, len)) {
        brk(v, AUDIT_BREAK_EDITED, at, "checkpoint is not in the form the writer writes: edited");
        return -1;
    }
    if (!v->pub)
        return 0;
    if (strcmp(key_id, v->key_id)) {
        brk(v, AUDIT_BREAK_BAD_SIGNATURE, at,
            "checkpoint signed by key %.16s..., not by the "
            "--pubkey key %.16s...",
            key_id, v->key_id);
        return -1;
    }
    mlen = audit_checkpoint_message(msg, sizeof(msg), p->log, p->seq, p->prev, p->ts, key_id);
    unhex(sig_hex, sig, sizeof(sig));
    ctx = EVP_MD_CTX_new();
    ok = ctx && mlen && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, v->pub) == 1 &&
         EVP_DigestVerify(ctx, sig, sizeof(sig), (const unsigned char *)msg, mlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        brk(v, AUDIT_BREAK_BAD_SIGNATURE, at,
            "checkpoint signature does not verify: a record up to here was edited, inserted or "
            "removed and the chain recomputed, or the checkpoint was forged");
        return -1;
    }
    return 0;
}

static void resolve_pending(struct audit_verifier *v, bool has_next, uint64_t next_seq)
{
    if (!v->pend)
        return;
    v->pend = false;
    if (has_next && next_seq == v->pend_expect)
        brk(v, AUDIT_BREAK_REORDERED, &v->pend_loc,
            "seq %" PRIu64 " comes before seq %" PRIu64 ": records out of order", v->pend_loc.seq,
            next_seq);
    else
        brk(v, AUDIT_BREAK_MISSING, &v->pend_loc,
            "records %" PRIu64 "..%" PRIu64 " are missing before this one", v->pend_expect,
            v->pend_loc.seq - 1);
}

static void unsigned_tail(struct audit_verifier *v, const char *what)
{
    brk(v, AUDIT_BREAK_UNSIGNED_TAIL, &v->unsigned_loc,
        "%" PRIu64 " record(s) from seq %" PRIu64 " to %" PRIu64 " are not covered by a "
        "checkpoint%s: the tail may have been truncated or forged",
        v->unsigned_count, v->unsigned_loc.seq, v->seq, what);
}

/* Ends the current chain: its unsigned tail is a break, or with --live a
 * figure of the summary. */
static void end_chain(struct audit_verifier *v, const char *what)
{
    if (v->pub && v->unsigned_count) {
        if (v->opts.live)
            v->res.unsigned_records += v->unsigned_count;
        else
            unsigned_tail(v, what);
    }
    v->unsigned_count = 0;
}

static struct audit_chain_summary *new_chain(struct audit_verifier *v, const struct parsed *p,
                                             bool genesis)
{
    struct audit_chain_summary *c;
    if (v->n_chains == v->cap_chains) {
        v->cap_chains = v->cap_chains ? 2 * v->cap_chains : 8;
        v->chains = xrealloc(v->chains, v->cap_chains * sizeof(*v->chains));
    }
    c = &v->chains[v->n_chains++];
    memset(c, 0, sizeof(*c));
    memcpy(c->log_id, p->log, sizeof(c->log_id));
    c->first_seq = p->seq;
    c->from_genesis = genesis;
    return c;
}

/* Adds an accepted record to its chain's summary. */
static void chain_add(struct audit_verifier *v, const struct parsed *p, const char *line,
                      size_t len, const char *hash)
{
    struct audit_chain_summary *c = &v->chains[v->n_chains - 1];
    c->last_seq = p->seq;
    c->records++;
    memcpy(c->head, hash, sizeof(c->head));
    if (!c->first_ts[0] || strcmp(p->ts, c->first_ts) < 0)
        snprintf(c->first_ts, sizeof(c->first_ts), "%s", p->ts);
    if (strcmp(p->ts, c->last_ts) > 0)
        snprintf(c->last_ts, sizeof(c->last_ts), "%s", p->ts);
    if (!strcmp(p->kind, "checkpoint")) {
        c->has_checkpoint = true;
        c->checkpoint_seq = p->seq;
        snprintf(c->checkpoint_ts, sizeof(c->checkpoint_ts), "%s", p->ts);
        c->unsigned_after = 0;
        return;
    }
    c->unsigned_after++;
    if (!strcmp(p->kind, "request")) {
        c->requests++;
    } else if (!strcmp(p->kind, "open")) {
        json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *unclean = json_object_get(j, "unclean_stop");
        audit_canon_instance(j, c->instance, sizeof(c->instance));
        if (json_is_object(unclean)) {
            c->unclean_stops++;
            audit_canon_describe(unclean, c->unclean, sizeof(c->unclean));
        }
        json_decref(j);
    }
}

static void on_line(struct audit_verifier *v, const char *line, size_t len)
{
    struct parsed p;
    struct loc at;
    char why[200], h[65];
    bool first_in_file = v->file_empty, genesis;

    v->file_empty = false;
    v->res.bytes += len + 1;
    if (parse_line(line, len, &p, why, sizeof(why)) != 0) {
        resolve_pending(v, false, 0);
        here(v, &at, 0, false);
        brk(v, AUDIT_BREAK_MALFORMED, &at, "%s", why);
        return;
    }
    if (v->pend) {
        resolve_pending(v, true, p.seq);
        return;
    }
    here(v, &at, p.seq, true);
    genesis = !strcmp(p.start, "genesis");
    if (genesis && (p.seq != 0 || strcmp(p.prev, AUDIT_GENESIS_PREV))) {
        brk(v, AUDIT_BREAK_EDITED, &at, "a genesis record must have seq 0 and a prev of zeros");
        return;
    }
    if (!v->have || genesis) {
        if (!v->have && !genesis && strcmp(p.kind, "open") && strcmp(p.kind, "rotate")) {
            if (v->by_chain)
                brk(v, AUDIT_BREAK_BAD_START, &at,
                    "log %s begins with a %s record, not an open or rotate record: records "
                    "before it are missing",
                    p.log, p.kind);
            else
                brk(v, AUDIT_BREAK_BAD_START, &at,
                    "the files begin with a %s record, not an open or rotate record: records "
                    "before it are missing",
                    p.kind);
            return;
        }
        if (!genesis && v->opts.from_genesis) {
            brk(v, AUDIT_BREAK_BAD_START, &at,
                "log %s begins at seq %" PRIu64 " (a %s record), not at its genesis: records "
                "0..%" PRIu64 " are not in the inputs (--from-genesis)",
                p.log, p.seq, p.kind, p.seq - 1);
            return;
        }
        if (v->have && !strcmp(p.log, v->res.log_id)) {
            brk(v, AUDIT_BREAK_REORDERED, &at,
                "the genesis record of this log after its seq %" PRIu64
                ": files or records out of order",
                v->seq);
            return;
        }
        if (v->have && !first_in_file) {
            brk(v, AUDIT_BREAK_INSERTED, &at, "a genesis record inside a file: inserted");
            return;
        }
        if (v->have) {
            end_chain(v, " before a new chain begins");
            if (v->done)
                return;
        }
        if (!v->have) {
            v->res.first_seq = p.seq;
            v->res.from_genesis = genesis;
        }
        v->res.chains++;
        snprintf(v->res.log_id, sizeof(v->res.log_id), "%s", p.log);
        new_chain(v, &p, genesis);
    } else {
        uint64_t expect = v->seq + 1;
        if (strcmp(p.log, v->res.log_id)) {
            brk(v, AUDIT_BREAK_SPLICED, &at, "record of log %s inside log %s: spliced", p.log,
                v->res.log_id);
            return;
        }
        if (p.seq == expect && strcmp(p.prev, v->hash)) {
            brk(v, AUDIT_BREAK_EDITED, &v->prev_loc,
                "this record no longer hashes to the prev of seq %" PRIu64 " (%s:%" PRIu64
                "): it, or that prev, was edited",
                p.seq, at.file, at.line);
            return;
        }
        if (p.seq > expect) {
            v->pend = true;
            v->pend_loc = at;
            v->pend_expect = expect;
            return;
        }
        if (p.seq < expect) {
            brk(v, AUDIT_BREAK_INSERTED, &at,
                "seq %" PRIu64 " after seq %" PRIu64 ": a record repeats or was inserted", p.seq,
                v->seq);
            return;
        }
    }
    if (!strcmp(p.kind, "checkpoint")) {
        if (check_checkpoint(v, &p, line, len, &at) != 0)
            return;
        v->res.checkpoints++;
        if (v->pub) {
            v->res.signed_seq = p.seq;
            v->unsigned_count = 0;
        }
    } else {
        if (v->pub && !v->unsigned_count++)
            v->unsigned_loc = at;
        if (!strcmp(p.kind, "request"))
            v->res.requests++;
        else if (!strcmp(p.kind, "open"))
            v->res.opens++;
        else if (!strcmp(p.kind, "rotate"))
            v->res.rotates++;
        else
            v->res.losts++;
    }
    sha256_hex(line, len, h);
    if (v->opts.witness) {
        char wpath[512];
        int w = audit_vwitness_compare(v->opts.witness, p.log, p.seq, line, len, wpath,
                                       sizeof(wpath));
        if (w < 0) {
            brk(v, AUDIT_BREAK_FORKED, &at,
                "this record differs from the witness's record of seq %" PRIu64 " (%s): the "
                "log was rewritten after the witness saw it",
                p.seq, wpath);
            return;
        }
        v->res.witnessed += (uint64_t)w;
    }
    chain_add(v, &p, line, len, h);
    v->have = true;
    v->seq = p.seq;
    memcpy(v->hash, h, sizeof(h));
    v->prev_loc = at;
    v->res.records++;
    v->res.last_seq = p.seq;
    memcpy(v->res.head, h, sizeof(h));
    if (!v->res.first_ts[0] || strcmp(p.ts, v->res.first_ts) < 0)
        snprintf(v->res.first_ts, sizeof(v->res.first_ts), "%s", p.ts);
    if (strcmp(p.ts, v->res.last_ts) > 0)
        snprintf(v->res.last_ts, sizeof(v->res.last_ts), "%s", p.ts);
}

struct audit_verifier *audit_verifier_new(const char *pubkey_pem, size_t len, char *err,
                                          size_t errlen)
{
    struct audit_verifier *v = xcalloc(1, sizeof(*v));
    unsigned char raw[32];
    size_t rawlen = sizeof(raw);
    BIO *in = NULL;

    v->buf = xmalloc(AUDIT_LINE_MAX);
    v->file_empty = true;
    if (pubkey_pem) {
        in = BIO_new_mem_buf(pubkey_pem, (int)len);
        v->pub = in ? PEM_read_bio_PUBKEY(in, NULL, NULL, NULL) : NULL;
        if (!v->pub && in) { /* a private key PEM: its public half */
            BIO_free(in);
            in = BIO_new_mem_buf(pubkey_pem, (int)len);
            v->pub = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
        }
        BIO_free(in);
        if (!v->pub || EVP_PKEY_get_id(v->pub) != EVP_PKEY_ED25519 ||
            EVP_PKEY_get_raw_public_key(v->pub, raw, &rawlen) != 1 || rawlen != 32) {
            snprintf(err, errlen, "not a PEM Ed25519 public key");
            audit_verifier_free(v);
            return NULL;
        }
        sha256_hex(raw, sizeof(raw), v->key_id);
        memcpy(v->res.key_id, v->key_id, sizeof(v->key_id));
        v->res.signatures_checked = true;
    }
    return v;
}

void audit_verifier_begin_file(struct audit_verifier *v, const char *name)
{
    snprintf(v->file, sizeof(v->file), "%s", name);
    v->unit = 'l';
    v->line_no = 0;
    v->blen = 0;
    v->file_empty = true;
    v->res.files++;
}

int audit_verifier_feed(struct audit_verifier *v, const void *data, size_t len)
{
    const char *p = data, *end = p + len;

    while (!v->done && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (v->blen + n > AUDIT_LINE_MAX) {
            struct loc at;
            resolve_pending(v, false, 0);
            v->line_no++;
            here(v, &at, 0, false);
            brk(v, AUDIT_BREAK_TOO_LONG, &at, "line longer than %d bytes", AUDIT_LINE_MAX);
            break;
        }
        if (!nl) {
            memcpy(v->buf + v->blen, p, n);
            v->blen += n;
            break;
        }
        v->line_no++;
        if (v->blen) {
            memcpy(v->buf + v->blen, p, n);
            on_line(v, v->buf, v->blen + n);
            v->blen = 0;
        } else {
            on_line(v, p, n);
        }
        p = nl + 1;
    }
    return v->done;
}

int audit_verifier_end_file(struct audit_verifier *v)
{
    if (!v->done && v->blen) {
        struct loc at;
        resolve_pending(v, false, 0);
        v->line_no++;
        here(v, &at, 0, false);
        brk(v, AUDIT_BREAK_TORN, &at,
            "the last line has no newline (%zu bytes): an interrupted write", v->blen);
    }
    v->blen = 0;
    return v->done;
}

static const struct audit_chain_summary *chain_of(const struct audit_verifier *v,
                                                  const char *log_id)
{
    for (size_t i = 0; i < v->n_chains; i++)
        if (!strcmp(v->chains[i].log_id, log_id))
            return &v->chains[i];
    return NULL;
}

/* Every witnessed chain is in the inputs, through its last witnessed record. */
static void witness_finish(struct audit_verifier *v)
{
    const struct audit_vwitness *w = v->opts.witness;
    size_t n = audit_vwitness_chains(w);

    v->res.witness_chains = n;
    for (size_t i = 0; i < n && !v->done; i++) {
        struct audit_vwitness_chain wc;
        const struct audit_chain_summary *c;
        struct loc at = {.unit = 0};
        audit_vwitness_chain(w, i, &wc);
        c = chain_of(v, wc.log_id);
        if (!c) {
            audit_vwitness_path(w, i, wc.last_seq, at.file, sizeof(at.file));
            brk(v, AUDIT_BREAK_MISSING_CHAIN, &at,
                "log %s%s%s%s is in the witness (%" PRIu64 " record(s), seq %" PRIu64 "..%" PRIu64
                ") but not in the inputs: the chain was deleted, or its file or "
                "export left out",
                wc.log_id, wc.instance[0] ? " (" : "", wc.instance, wc.instance[0] ? ")" : "",
                wc.records, wc.first_seq, wc.last_seq);
        } else if (c->last_seq < wc.last_seq) {
            audit_vwitness_path(w, i, wc.last_seq, at.file, sizeof(at.file));
            at.seq = wc.last_seq;
            at.has_seq = true;
            brk(v, AUDIT_BREAK_MISSING, &at,
                "log %s ends at seq %" PRIu64 " in the inputs, but the witness holds its record "
                "of seq %" PRIu64 ": records %" PRIu64 "..%" PRIu64 " (at least) were deleted",
                wc.log_id, c->last_seq, wc.last_seq, c->last_seq + 1, wc.last_seq);
        } else if (c->first_seq > wc.first_seq) {
            audit_vwitness_path(w, i, wc.first_seq, at.file, sizeof(at.file));
            at.seq = wc.first_seq;
            at.has_seq = true;
            brk(v, AUDIT_BREAK_MISSING, &at,
                "log %s begins at seq %" PRIu64 " in the inputs, but the witness holds its "
                "record of seq %" PRIu64 ": records %" PRIu64 "..%" PRIu64 " (at least) were "
                "deleted",
                wc.log_id, c->first_seq, wc.first_seq, wc.first_seq, c->first_seq - 1);
        }
    }
}

int audit_verifier_finish(struct audit_verifier *v)
{
    if (v->done)
        return 1;
    resolve_pending(v, false, 0);
    if (!v->done && !v->res.records) {
        struct loc at;
        here(v, &at, 0, false);
        brk(v, AUDIT_BREAK_EMPTY, &at, "no records");
    }
    if (!v->done)
        end_chain(v, "");
    if (!v->done && v->opts.witness)
        witness_finish(v);
    return v->done;
}

const struct audit_verify_result *audit_verifier_result(const struct audit_verifier *v)
{
    return &v->res;
}

void audit_verifier_free(struct audit_verifier *v)
{
    if (!v)
        return;
    EVP_PKEY_free(v->pub);
    free(v->buf);
    free(v->chains);
    free(v);
}

void audit_verifier_set(struct audit_verifier *v, const struct audit_verify_opts *o)
{
    v->opts = *o;
}

const struct audit_chain_summary *audit_verifier_chains(const struct audit_verifier *v, size_t *n)
{
    *n = v->n_chains;
    return v->chains;
}

int audit_verifier_begin_chain(struct audit_verifier *v)
{
    v->by_chain = true;
    if (v->done)
        return 1;
    resolve_pending(v, false, 0);
    if (v->have && !v->done)
        end_chain(v, "");
    v->have = false;
    return v->done;
}

int audit_verifier_record(struct audit_verifier *v, const char *file, char unit, uint64_t no,
                          const char *line, size_t len)
{
    if (v->done)
        return 1;
    snprintf(v->file, sizeof(v->file), "%s", file);
    v->unit = unit;
    v->line_no = no;
    v->file_empty = false;
    on_line(v, line, len);
    return v->done;
}

void audit_verifier_fail(struct audit_verifier *v, enum audit_break kind, const char *file,
                         char unit, uint64_t no, bool has_seq, uint64_t seq, const char *fmt, ...)
{
    struct loc at;
    char msg[512];
    va_list ap;

    snprintf(at.file, sizeof(at.file), "%s", file);
    at.unit = unit;
    at.line = no;
    at.seq = seq;
    at.has_seq = has_seq;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    brk(v, kind, &at, "%s", msg);
}
