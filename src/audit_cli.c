/*
 * audit_cli.c: `baton audit verify FILE... [--pubkey PEM] [--witness DIR] [--live]
 * [--from-genesis]` and
 * `baton audit keygen --out PEM` (docs/spec.md "Command line", docs/audit.md).
 *
 * verify tells each file's kind from its first bytes: baton's JSON Lines, a
 * JSON array of LogEntry (`gcloud logging read --format=json`), or
 * newline-delimited LogEntry (a log sink's files). A set of JSON Lines only
 * streams through the audit verifier in fixed-size chunks, in the order
 * given; a set with a LogEntry file goes through the index
 * (audit_verify_index.h), records rebuilt from their LogEntry
 * (audit_logentry.h). It prints a summary (exit 0) or the first break as
 * FILE:LINE (or FILE:entry N): seq N: KIND: message (exit 1); usage, I/O
 * errors and input that is not one of the three kinds exit 2.
 * keygen writes a new Ed25519 private key (PKCS#8 PEM, mode 0600, never over an
 * existing file) and prints its public key and key id.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "audit_logentry.h"
#include "audit_verify_index.h"
#include "audit_verify_witness.h"
#include "cli.h"
#include "util.h"

#define CHUNK (1u << 20)
#define PUBKEY_FILE_MAX 65536

static void usage(FILE *out)
{
    fputs("usage: baton audit verify FILE... [--pubkey PEM] [--witness DIR] [--live] "
          "[--from-genesis]\n"
          "       baton audit keygen --out PEM\n",
          out);
}

#define PEEK_MAX 65536

enum in_kind { IN_LINES, IN_ARRAY, IN_NDJSON };

struct input {
    const char *name;
    enum in_kind kind;
    int fd;    /* stdin, a pipe, a FIFO: kept open after detection; else -1 */
    char *pre; /* with fd: the bytes read to detect its kind, fed first */
    size_t prelen;
};

static int open_input(const char *name)
{
    int fd = strcmp(name, "-") ? open(name, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0)
        fprintf(stderr, "baton: %s: %s\n", name, strerror(errno));
    return fd;
}

static ssize_t read_some(int fd, char *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

/*
 * What a file holds, from its first bytes: '[' a JSON array of LogEntry
 * (`gcloud logging read --format=json`); a line that begins as baton's
 * records do ({"v":), baton's JSON Lines; another object whose first line
 * names LogEntry members, newline-delimited LogEntry (a sink's files); any
 * other object, JSON Lines (whose verifier says what is wrong with it).
 * 0, or -1 (exit 2) with a message on stderr.
 */
static int detect(const char *name, const char *p, size_t n, enum in_kind *kind)
{
    static const char *const members[] = {"\"jsonPayload\"", "\"logName\"",      "\"insertId\"",
                                          "\"textPayload\"", "\"protoPayload\"", "\"resource\""};
    size_t i = 0, eol;

    if (n >= 3 && !memcmp(p, "\xef\xbb\xbf", 3))
        i = 3;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    *kind = IN_LINES;
    if (i == n || !memcmp(p, "{\"v\":", n < 5 ? n : 5))
        return 0; /* empty, or ours */
    if (p[i] == '[') {
        *kind = IN_ARRAY;
        return 0;
    }
    if (p[i] != '{') {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x21 && c <= 0x7e)
            fprintf(stderr,
                    "baton: %s: not JSON (it begins with '%c'): neither baton's JSON "
                    "Lines nor a Cloud Logging export\n",
                    name, c);
        else
            fprintf(stderr,
                    "baton: %s: not JSON (it begins with byte 0x%02x): neither baton's "
                    "JSON Lines nor a Cloud Logging export\n",
                    name, c);
        return -1;
    }
    for (eol = i; eol < n && p[eol] != '\n'; eol++)
        ;
    for (size_t m = 0; m < sizeof(members) / sizeof(members[0]); m++)
        if (memmem(p + i, eol - i, members[m], strlen(members[m])))
            *kind = IN_NDJSON;
    return 0;
}

/* Reads the first bytes of each input to tell its kind. A regular file is
 * read again from its start; anything else (stdin, a pipe such as
 * <(zcat ...)) cannot be, so it stays open and its first bytes are kept. */
static int detect_input(struct input *in)
{
    int fd = open_input(in->name), rc = -1;
    char *buf = xmalloc(PEEK_MAX);
    size_t n = 0;
    struct stat st;

    in->fd = -1;
    if (fd < 0)
        goto out;
    while (n < PEEK_MAX) {
        ssize_t r = read_some(fd, buf + n, PEEK_MAX - n);
        if (r < 0) {
            fprintf(stderr, "baton: %s: %s\n", in->name, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (memchr(buf + n - (size_t)r, '\n', (size_t)r) && n > 8)
            break;
    }
    if (detect(in->name, buf, n, &in->kind) != 0)
        goto out;
    if (fd == STDIN_FILENO || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        in->fd = fd;
        fd = -1;
        in->pre = buf;
        in->prelen = n;
        buf = NULL;
    }
    rc = 0;
out:
    if (fd >= 0 && fd != STDIN_FILENO)
        close(fd);
    free(buf);
    return rc;
}

/* Reads an input from its start (stdin: the detected bytes first) and hands
 * each chunk to feed; returns feed's first nonzero, or -1 on a read error. */
static int read_input(struct input *in, char *buf, int (*feed)(void *, const char *, size_t),
                      void *arg)
{
    int fd = in->fd >= 0 ? in->fd : open_input(in->name), rc = 0;

    in->fd = -1; /* read once */
    if (fd < 0)
        return -1;
    if (in->prelen)
        rc = feed(arg, in->pre, in->prelen);
    while (!rc) {
        ssize_t n = read_some(fd, buf, CHUNK);
        if (n < 0) {
            fprintf(stderr, "baton: %s: %s\n", in->name, strerror(errno));
            rc = -1;
        } else if (n == 0) {
            break;
        } else {
            rc = feed(arg, buf, (size_t)n);
        }
    }
    if (fd != STDIN_FILENO)
        close(fd);
    return rc;
}

static int feed_verifier(void *arg, const char *data, size_t len)
{
    return audit_verifier_feed(arg, data, len);
}

/* ---- LogEntry and mixed sets: into the index ---- */

struct ingest {
    struct audit_index *ix;
    struct audit_verifier *v;
    struct audit_le_reader *le;
    uint32_t file;
    const char *name;
    char *rec;  /* a rebuilt record */
    char *line; /* JSON Lines: the partial line */
    size_t llen;
    uint64_t line_no;
    int status; /* 0, 1: a break (the verifier's), 2: bad input (printed) */
};

static void ingest_line(struct ingest *g, char unit, uint64_t no, const char *line, size_t len)
{
    char why[512];
    int r = audit_index_add(g->ix, g->file, unit, no, line, len, why, sizeof(why));
    if (r == -1) {
        audit_verifier_fail(g->v, AUDIT_BREAK_MALFORMED, g->name, unit, no, false, 0, "%s", why);
        g->status = 1;
    } else if (r == -2) {
        fprintf(stderr, "baton: %s\n", why);
        g->status = 2;
    }
}

static int on_entry(void *arg, const char *entry, size_t len, uint64_t no)
{
    struct ingest *g = arg;
    char why[512];
    size_t rlen;

    switch (audit_le_record(entry, len, g->rec, AUDIT_LINE_MAX + 1, &rlen, why, sizeof(why))) {
    case AUDIT_LE_OK:
        ingest_line(g, 'e', no, g->rec, rlen);
        break;
    case AUDIT_LE_NOT_ENTRY:
        fprintf(stderr, "baton: %s:entry %" PRIu64 ": %s\n", g->name, no, why);
        g->status = 2;
        break;
    case AUDIT_LE_BAD_RECORD:
        audit_verifier_fail(g->v, AUDIT_BREAK_MALFORMED, g->name, 'e', no, false, 0, "%s", why);
        g->status = 1;
        break;
    }
    return g->status;
}

static int feed_entries(void *arg, const char *data, size_t len)
{
    struct ingest *g = arg;
    char why[256];
    int r = audit_le_feed(g->le, data, len, on_entry, g, why, sizeof(why));
    if (r < 0) {
        fprintf(stderr, "baton: %s: %s: not %s\n", g->name, why,
                "a Cloud Logging export (a JSON array or newline-delimited LogEntry objects)");
        g->status = 2;
    }
    return g->status;
}

static int feed_lines(void *arg, const char *data, size_t len)
{
    struct ingest *g = arg;
    const char *p = data, *end = p + len;

    while (!g->status && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (g->llen + n > AUDIT_LINE_MAX) {
            audit_verifier_fail(g->v, AUDIT_BREAK_TOO_LONG, g->name, 'l', g->line_no + 1, false, 0,
                                "line longer than %d bytes", AUDIT_LINE_MAX);
            g->status = 1;
            break;
        }
        memcpy(g->line + g->llen, p, n);
        g->llen += n;
        if (!nl)
            break;
        g->line_no++;
        ingest_line(g, 'l', g->line_no, g->line, g->llen);
        g->llen = 0;
        p = nl + 1;
    }
    return g->status;
}

/* Reads every input into the index, then verifies it chain by chain.
 * 0 (the verdict is v's), or 2 (bad input, printed). */
static int verify_indexed(struct audit_verifier *v, struct input *in, size_t n, char *buf,
                          uint64_t *duplicates)
{
    struct ingest g = {0};
    const char **names = xcalloc(n, sizeof(*names));
    char err[256];
    int rc = 2;

    g.v = v;
    g.ix = audit_index_new(err, sizeof(err));
    if (!g.ix) {
        fprintf(stderr, "baton: audit verify: %s\n", err);
        goto out;
    }
    g.rec = xmalloc(AUDIT_LINE_MAX + 1);
    g.line = xmalloc(AUDIT_LINE_MAX);
    for (size_t i = 0; i < n && !g.status; i++) {
        int r;
        names[i] = in[i].name;
        g.file = (uint32_t)i;
        g.name = in[i].name;
        g.llen = 0;
        g.line_no = 0;
        audit_verifier_begin_file(v, in[i].name);
        if (in[i].kind == IN_LINES) {
            r = read_input(&in[i], buf, feed_lines, &g);
            if (!r && g.llen) {
                audit_verifier_fail(v, AUDIT_BREAK_TORN, in[i].name, 'l', g.line_no + 1, false, 0,
                                    "the last line has no newline (%zu bytes): an interrupted "
                                    "write",
                                    g.llen);
                g.status = 1;
            }
        } else {
            g.le = audit_le_new(in[i].kind == IN_ARRAY);
            r = read_input(&in[i], buf, feed_entries, &g);
            if (!r && !g.status && audit_le_end(g.le, err, sizeof(err)) != 0) {
                fprintf(stderr, "baton: %s: %s\n", in[i].name, err);
                g.status = 2;
            }
            audit_le_free(g.le);
            g.le = NULL;
        }
        if (r < 0)
            goto out;
    }
    if (g.status == 2)
        goto out;
    if (!g.status && audit_index_verify(g.ix, v, names, err, sizeof(err)) != 0) {
        fprintf(stderr, "baton: audit verify: %s\n", err);
        goto out;
    }
    *duplicates = audit_index_duplicates(g.ix);
    rc = 0;
out:
    audit_le_free(g.le);
    audit_index_free(g.ix);
    free(g.rec);
    free(g.line);
    free(names);
    return rc;
}

static void print_chain(const struct audit_chain_summary *c, bool signatures)
{
    printf("chain:    %s%s%s\n", c->log_id, c->instance[0] ? "  " : "", c->instance);
    if (c->from_genesis)
        printf("  seq:    %" PRIu64 "..%" PRIu64 " (from genesis), %" PRIu64 " records, %" PRIu64
               " requests\n",
               c->first_seq, c->last_seq, c->records, c->requests);
    else
        printf("  seq:    %" PRIu64 "..%" PRIu64 " NOT FROM GENESIS: records 0..%" PRIu64
               " are not in the inputs; %" PRIu64 " records, %" PRIu64 " requests\n",
               c->first_seq, c->last_seq, c->first_seq - 1, c->records, c->requests);
    printf("  time:   %s .. %s\n", c->first_ts, c->last_ts);
    printf("  head:   %s\n", c->head);
    if (c->unclean_stops)
        printf("  UNCLEAN STOP: %" PRIu64 " start(s) after a crash; records of the stopped run "
               "may be missing; the last: %s\n",
               c->unclean_stops, c->unclean);
    if (c->has_checkpoint && !c->unsigned_after)
        printf("  ended:  cleanly: its last record is a checkpoint%s (seq %" PRIu64 ", %s)\n",
               signatures ? ", signed" : "", c->checkpoint_seq, c->checkpoint_ts);
    else if (c->has_checkpoint)
        printf("  ended:  CUT: its last checkpoint is seq %" PRIu64 " (%s); %" PRIu64
               " record(s) after it are unsigned\n",
               c->checkpoint_seq, c->checkpoint_ts, c->unsigned_after);
    else
        printf("  ended:  CUT: no checkpoint; all %" PRIu64 " record(s) are unsigned\n",
               c->unsigned_after);
}

static void print_summary(const struct audit_verify_result *r, const struct audit_chain_summary *c,
                          size_t nc, const struct audit_vwitness *w, uint64_t duplicates, bool live)
{
    printf("verified: %" PRIu64 " file(s), %" PRIu64 " records (%" PRIu64 " requests, %" PRIu64
           " checkpoints, %" PRIu64 " open, %" PRIu64 " rotate, %" PRIu64 " lost), %" PRIu64
           " chain(s), %" PRIu64 " bytes\n",
           r->files, r->records, r->requests, r->checkpoints, r->opens, r->rotates, r->losts,
           r->chains, r->bytes);
    if (nc <= 1) { /* one chain: as before, its details below */
        printf("log:      %s\n", r->log_id);
        printf("seq:      %" PRIu64 "..%" PRIu64 " %s\n", r->first_seq, r->last_seq,
               r->from_genesis ? "(from genesis)" : "(earlier records are in files not given)");
        printf("time:     %s .. %s\n", r->first_ts, r->last_ts);
        printf("head:     %s\n", r->head);
    }
    if (r->signatures_checked && nc > 1)
        printf("signed:   every chain's checkpoints by key %s\n", r->key_id);
    else if (r->signatures_checked)
        printf("signed:   through seq %" PRIu64 " by key %s\n", r->signed_seq, r->key_id);
    else
        printf("signed:   not checked (no --pubkey); %" PRIu64 " checkpoints well-formed\n",
               r->checkpoints);
    for (size_t i = 0; i < nc; i++)
        print_chain(&c[i], r->signatures_checked);
    if (duplicates)
        printf("copies:   %" PRIu64 " identical duplicate record(s) dropped\n", duplicates);
    if (live && r->unsigned_records)
        printf("live:     %" PRIu64 " record(s) after their chain's last checkpoint, unsigned "
               "(--live)\n",
               r->unsigned_records);
    for (size_t i = 0; i < nc; i++)
        if (!c[i].from_genesis) {
            printf("WARNING:  %s chain(s) do not begin at genesis: their earlier records are "
                   "not in the inputs (--from-genesis makes that a failure)\n",
                   nc == 1 ? "the" : "some");
            break;
        }
    if (w)
        printf("witness:  %" PRIu64 " chain(s), %" PRIu64 " witnessed record(s) equal in the "
               "inputs%s\n",
               r->witness_chains, r->witnessed,
               audit_vwitness_skipped(w) ? " (files not of the layout skipped)" : "");
}

static int verify(int argc, char **argv)
{
    const char *pubkey = NULL, *witness_dir = NULL;
    char *pem = NULL, *buf = NULL, err[512] = "";
    size_t pemlen = 0, nfiles = 0, nc;
    struct audit_verifier *v = NULL;
    struct audit_vwitness *w = NULL;
    struct audit_verify_opts opts = {0};
    struct input *in = NULL;
    const struct audit_verify_result *r;
    const struct audit_chain_summary *chains;
    uint64_t duplicates = 0;
    bool indexed = false, saw_stdin = false;
    int rc = 2, f = 0;

    in = xcalloc((size_t)argc, sizeof(*in));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pubkey") || !strcmp(argv[i], "--witness")) {
            if (++i == argc) {
                usage(stderr);
                goto out;
            }
            *(argv[i - 1][2] == 'p' ? &pubkey : &witness_dir) = argv[i];
        } else if (!strcmp(argv[i], "--live")) {
            opts.live = true;
        } else if (!strcmp(argv[i], "--from-genesis")) {
            opts.from_genesis = true;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "baton: audit verify: unknown option %s\n", argv[i]);
            usage(stderr);
            goto out;
        } else {
            if (!strcmp(argv[i], "-")) {
                if (saw_stdin) {
                    fprintf(stderr, "baton: audit verify: - (stdin) given twice\n");
                    goto out;
                }
                saw_stdin = true;
            }
            in[nfiles++].name = argv[i];
        }
    }
    if (!nfiles) {
        usage(stderr);
        goto out;
    }
    if (pubkey && read_file_capped(pubkey, PUBKEY_FILE_MAX, &pem, &pemlen) != 0) {
        fprintf(stderr, "baton: --pubkey %s: %s\n", pubkey, strerror(errno));
        goto out;
    }
    v = audit_verifier_new(pem, pemlen, err, sizeof(err));
    if (!v) {
        fprintf(stderr, "baton: --pubkey %s: %s\n", pubkey, err);
        goto out;
    }
    if (witness_dir && !(w = audit_vwitness_load(witness_dir, err, sizeof(err)))) {
        fprintf(stderr, "baton: %s\n", err);
        goto out;
    }
    opts.witness = w;
    audit_verifier_set(v, &opts);
    for (size_t i = 0; i < nfiles; i++) {
        if (detect_input(&in[i]) != 0)
            goto out;
        indexed |= in[i].kind != IN_LINES;
    }
    buf = xmalloc(CHUNK);
    if (indexed) {
        if (verify_indexed(v, in, nfiles, buf, &duplicates) != 0)
            goto out;
    } else {
        /* baton's JSON Lines only: streamed in the order given, as written */
        for (size_t i = 0; i < nfiles && !f; i++) {
            audit_verifier_begin_file(v, in[i].name);
            f = read_input(&in[i], buf, feed_verifier, v);
            if (f < 0)
                goto out;
            if (!f)
                f = audit_verifier_end_file(v);
        }
    }
    audit_verifier_finish(v);
    r = audit_verifier_result(v);
    chains = audit_verifier_chains(v, &nc);
    if (r->kind == AUDIT_OK) {
        print_summary(r, chains, nc, w, duplicates, opts.live);
        rc = 0;
    } else {
        if (r->unit == 'e')
            printf("%s:entry %" PRIu64 ": ", r->file, r->line);
        else if (r->unit && r->line)
            printf("%s:%" PRIu64 ": ", r->file, r->line);
        else
            printf("%s: ", r->file);
        if (r->has_seq)
            printf("seq %" PRIu64 ": ", r->seq);
        printf("%s: %s\n", audit_break_name(r->kind), r->message);
        printf("%" PRIu64 " records read before the break\n", r->records);
        rc = 1;
    }
out:
    if (pem)
        OPENSSL_cleanse(pem, pemlen);
    free(pem);
    free(buf);
    for (size_t i = 0; in && i < nfiles; i++) {
        free(in[i].pre);
        if (in[i].fd > STDIN_FILENO)
            close(in[i].fd);
    }
    free(in);
    audit_vwitness_free(w);
    audit_verifier_free(v);
    return rc;
}

static int keygen(int argc, char **argv)
{
    const char *out = NULL;
    EVP_PKEY *key = NULL;
    FILE *f = NULL;
    unsigned char raw[32];
    size_t rawlen = sizeof(raw);
    char key_id[65];
    int fd = -1, rc = 2;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            usage(stderr);
            goto done;
        }
    }
    if (!out) {
        usage(stderr);
        goto done;
    }
    rc = 1;
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!key || EVP_PKEY_get_raw_public_key(key, raw, &rawlen) != 1) {
        fprintf(stderr, "baton: audit keygen: key generation failed\n");
        goto done;
    }
    fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "baton: audit keygen: %s: %s%s\n", out, strerror(errno),
                errno == EEXIST ? " (never overwritten: remove it first)" : "");
        goto done;
    }
    f = fdopen(fd, "w");
    if (!f) {
        fprintf(stderr, "baton: audit keygen: %s: %s\n", out, strerror(errno));
        goto done;
    }
    fd = -1;
    if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0) {
        fprintf(stderr, "baton: audit keygen: writing %s failed\n", out);
        (void)unlink(out);
        goto done;
    }
    sha256_hex(raw, rawlen, key_id);
    if (PEM_write_PUBKEY(stdout, key) != 1)
        goto done;
    printf("key_id: %s\n", key_id);
    rc = 0;
done:
    if (f && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "baton: audit keygen: closing %s failed\n", out);
        rc = 1;
    }
    if (fd >= 0)
        close(fd);
    EVP_PKEY_free(key);
    return rc;
}

int cmd_audit(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "verify"))
        return verify(argc - 1, argv + 1);
    if (!strcmp(argv[1], "keygen"))
        return keygen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "baton: audit: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
