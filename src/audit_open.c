/*
 * audit_open.c: opening the audit log (audit.h, docs/audit.md "Genesis,
 * restart and rotation", "Unclean stops"): the signing key, the file's tail
 * (a torn last line cut, the chain continued from the last record, or from
 * the file logrotate moved aside), the run marker that makes a crash
 * visible at the next start, and the open record written durably before the
 * writer thread starts.
 */
#include "audit_writer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "log.h"
#include "util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define AUDIT_KEY_FILE_MAX 65536

/* ----------------------------------------------------- open: key and tail */

static int load_key(struct audit_log *log, const char *path, char *err, size_t errlen)
{
    size_t rawlen = sizeof(log->pub_raw);
    BIO *out = NULL;
    BUF_MEM *mem;
    char why[600];
    int rc = -1;

    /* the key that makes the log trustworthy: refused when others can read it */
    log->key = read_private_key_file(path, AUDIT_KEY_FILE_MAX, EVP_PKEY_ED25519, why, sizeof(why));
    if (!log->key) {
        errbuf_set(err, errlen, "audit signing_key %s", why);
        goto out;
    }
    if (EVP_PKEY_get_raw_public_key(log->key, log->pub_raw, &rawlen) != 1 || rawlen != 32)
        goto bad;
    sha256_hex(log->pub_raw, sizeof(log->pub_raw), log->key_id);
    out = BIO_new(BIO_s_mem());
    if (!out || PEM_write_bio_PUBKEY(out, log->key) != 1)
        goto bad;
    BIO_get_mem_ptr(out, &mem);
    log->pub_pem = xstrndup(mem->data, mem->length);
    rc = 0;
    goto out;
bad:
    errbuf_set(err, errlen, "audit signing_key %s: cannot derive its public key", path);
out:
    BIO_free(out);
    return rc;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

/* Parses a line of ours enough to continue after it: seq and log id (and its
 * ts into ts_out when not NULL, "" when it has none). */
static int parse_tail_record_ts(const char *line, size_t len, uint64_t *seq, char log_id[33],
                                char ts_out[32])
{
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *v, *s, *l, *ts;
    int rc = -1;

    if (!json_is_object(root))
        goto out;
    v = json_object_get(root, "v");
    s = json_object_get(root, "seq");
    l = json_object_get(root, "log");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_FORMAT_VERSION ||
        !json_is_integer(s) || json_integer_value(s) < 0 || !json_is_string(l) ||
        json_string_length(l) != 32 || !is_hex(json_string_value(l), 32))
        goto out;
    *seq = (uint64_t)json_integer_value(s);
    memcpy(log_id, json_string_value(l), 33);
    if (ts_out) {
        ts = json_object_get(root, "ts");
        snprintf(ts_out, 32, "%s",
                 json_is_string(ts) && json_string_length(ts) < 32 ? json_string_value(ts) : "");
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static int parse_tail_record(const char *line, size_t len, uint64_t *seq, char log_id[33])
{
    return parse_tail_record_ts(line, len, seq, log_id, NULL);
}

struct tail {
    char ts[32];   /* of the last complete record, "" if it has none */
    uint64_t seq;  /* of the last complete record */
    char prev[65]; /* its hash */
    char log_id[33];
    uint64_t keep; /* bytes up to and including its newline */
    uint64_t torn; /* bytes after it without a newline */
    char torn_sha256[65];
    bool found; /* a complete record exists */
};

/* Finds the last complete line of `fd` (size bytes) and what follows it. */
static int read_tail(int fd, uint64_t size, const char *name, bool allow_torn, struct tail *t,
                     char *err, size_t errlen)
{
    uint64_t window = size < 2 * (AUDIT_LINE_MAX + 1ull) ? size : 2 * (AUDIT_LINE_MAX + 1ull);
    uint64_t base = size - window;
    char *buf = xmalloc(window + 1);
    size_t got = 0;
    ssize_t n;
    const char *nl, *start;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    while (got < window) {
        n = pread(fd, buf + got, window - got, (off_t)(base + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errbuf_set(err, errlen, "audit log %s: reading its tail: %s", name,
                       n < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)n;
    }
    nl = memrchr(buf, '\n', window);
    if (!nl) {
        if (base != 0) {
            errbuf_set(err, errlen, "audit log %s: no newline in its last %" PRIu64 " bytes", name,
                       window);
            goto out;
        }
        t->keep = 0; /* only a torn first line */
    } else {
        t->keep = base + (uint64_t)(nl - buf) + 1;
    }
    t->torn = size - t->keep;
    if (t->torn) {
        if (!allow_torn) {
            errbuf_set(err, errlen, "audit log %s: last line has no newline (torn)", name);
            goto out;
        }
        sha256_hex(buf + (t->keep - base), t->torn, t->torn_sha256);
    }
    if (!nl) {
        rc = 0;
        goto out;
    }
    start = nl;
    while (start > buf && start[-1] != '\n')
        start--;
    if (start == buf && base != 0) {
        errbuf_set(err, errlen, "audit log %s: last line longer than %d bytes", name,
                   AUDIT_LINE_MAX);
        goto out;
    }
    if (parse_tail_record_ts(start, (size_t)(nl - start), &t->seq, t->log_id, t->ts) != 0) {
        errbuf_set(err, errlen,
                   "audit log %s: its last line is not an audit record; move the file aside to "
                   "start a new chain",
                   name);
        goto out;
    }
    sha256_hex(start, (size_t)(nl - start), t->prev);
    t->found = true;
    rc = 0;
out:
    free(buf);
    return rc;
}

/* seq of the first record in fd, for the name the file gets at rotation. */
static uint64_t first_seq(int fd, uint64_t fallback)
{
    char *buf = xmalloc(AUDIT_LINE_MAX + 1);
    ssize_t n = pread(fd, buf, AUDIT_LINE_MAX + 1, 0);
    char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
    uint64_t seq = fallback;
    char id[33];

    if (!nl || parse_tail_record(buf, (size_t)(nl - buf), &seq, id) != 0)
        seq = fallback;
    free(buf);
    return seq;
}

/*
 * Where the chain went when the path holds no record: the file next to it
 * (named path.<anything>: baton's path.<20 digits>, logrotate's path.1 or
 * path-DATE) whose last record has the highest seq, of log `want_log` when
 * not NULL. Files that are not audit logs (compressed ones, say) are skipped.
 * Covers a stop (crash or not) between logrotate's rename and SIGUSR1.
 * Returns the owned path and fills *t, or NULL.
 */
static char *best_sibling(const char *path, const char *want_log, struct tail *t)
{
    char *copy = xstrdup(path), *dir = dirname(copy), *best = NULL;
    const char *base = audit_base_name(path);
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *e;
    char err[256];

    memset(t, 0, sizeof(*t));
    while (d && (e = readdir(d))) {
        struct tail c;
        struct stat st;
        char *full;
        int fd;
        if (strncmp(e->d_name, base, blen) || (e->d_name[blen] != '.' && e->d_name[blen] != '-') ||
            !e->d_name[blen + 1])
            continue;
        full = xasprintf("%s/%s", dir, e->d_name);
        fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
            read_tail(fd, (uint64_t)st.st_size, full, true, &c, err, sizeof(err)) == 0 && c.found &&
            (!want_log || !strcmp(c.log_id, want_log)) && (!best || c.seq > t->seq)) {
            free(best);
            best = full;
            full = NULL;
            *t = c;
        }
        if (fd >= 0)
            close(fd);
        free(full);
    }
    if (d)
        closedir(d);
    free(copy);
    return best;
}

/* ------------------------------------------------------------ run marker */

/*
 * The run marker, `.<file>.baton-run` next to the log: written when a run
 * starts (and at each rotation), removed when it stops cleanly. Finding it at
 * start means the previous run did not close the log: it crashed, was
 * SIGKILLed, or the machine lost power. It holds what the next open record
 * needs to declare that: the run's log id, pid, start, fsync mode and the
 * first seq of the file it was writing.
 */
struct prev_run {
    bool found;      /* a marker was there: an unclean stop */
    char log_id[33]; /* "" when unknown (a marker cut short) */
    int64_t pid;     /* -1: unknown */
    char started[32], fsync[16];
    uint64_t file_first_seq;
    bool has_first_seq;
};

static char *run_path_of(const char *path)
{
    char *copy = xstrdup(path), *dir = dirname(copy);
    char *rp = xasprintf("%s/.%s.baton-run", dir, audit_base_name(path));
    free(copy);
    return rp;
}

static void read_run(const char *rp, struct prev_run *pr)
{
    char buf[1024];
    int fd = open(rp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;
    json_t *j, *v;

    memset(pr, 0, sizeof(*pr));
    pr->pid = -1;
    if (fd < 0)
        return;
    pr->found = true;
    n = read(fd, buf, sizeof(buf));
    close(fd);
    j = n > 0 ? json_loadb(buf, (size_t)n, 0, NULL) : NULL;
    if ((v = json_object_get(j, "log")) && json_is_string(v) && json_string_length(v) == 32 &&
        is_hex(json_string_value(v), 32))
        memcpy(pr->log_id, json_string_value(v), 33);
    if ((v = json_object_get(j, "pid")) && json_is_integer(v))
        pr->pid = json_integer_value(v);
    if ((v = json_object_get(j, "started")) && json_is_string(v) && json_string_length(v) < 32)
        memcpy(pr->started, json_string_value(v), json_string_length(v) + 1);
    if ((v = json_object_get(j, "fsync")) && json_is_string(v) && json_string_length(v) < 16)
        memcpy(pr->fsync, json_string_value(v), json_string_length(v) + 1);
    if ((v = json_object_get(j, "file_first_seq")) && json_is_integer(v) &&
        json_integer_value(v) >= 0) {
        pr->file_first_seq = (uint64_t)json_integer_value(v);
        pr->has_first_seq = true;
    }
    json_decref(j);
}

/* (Re)writes the marker for the file now being written; failures are logged
 * only (the marker makes a crash visible, it does not keep records). */
void audit_write_run(struct audit_log *log)
{
    char *tmp;
    int fd;
    struct sb b = {0};

    if (!log->run_path)
        return;
    tmp = xasprintf("%s.tmp", log->run_path);
    sb_fmt(&b,
           "{\"log\":\"%s\",\"pid\":%ld,\"started\":\"%s\",\"fsync\":\"%s\","
           "\"file_first_seq\":%" PRIu64 "}\n",
           log->log_id, (long)getpid(), log->started, audit_fsync_name(log->fsync),
           log->file_first_seq);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0 || write(fd, b.buf.p, b.buf.len) != (ssize_t)b.buf.len || fsync(fd) != 0 ||
        rename(tmp, log->run_path) != 0) {
        log_msg(LOG_WARNING, "audit: cannot write the run marker %s: %s", log->run_path,
                strerror(errno));
        (void)unlink(tmp);
    } else {
        audit_fsync_dir_of(log->run_path);
    }
    if (fd >= 0)
        close(fd);
    free(tmp);
    buf_free(&b.buf);
}

static int open_file(struct audit_log *log, const struct prev_run *pr, const char *now,
                     struct sb *marker, struct sb *unclean, char *err, size_t errlen)
{
    struct stat st;
    struct tail t;
    char *sibling = NULL;
    int sfd = -1, rc = -1;
    bool created, missing = false;

    log->fd = open(log->path, O_RDWR | O_APPEND | O_CLOEXEC);
    created = log->fd < 0 && errno == ENOENT;
    if (created)
        log->fd = open(log->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log->fd < 0 || fstat(log->fd, &st) != 0) {
        errbuf_set(err, errlen, "audit log %s: %s", log->path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errbuf_set(err, errlen, "audit log %s: not a regular file", log->path);
        goto out;
    }
    memset(&t, 0, sizeof(t));
    if (st.st_size > 0 &&
        read_tail(log->fd, (uint64_t)st.st_size, log->path, true, &t, err, errlen) != 0)
        goto out;
    if (t.torn) {
        if (ftruncate(log->fd, (off_t)t.keep) != 0 || fsync(log->fd) != 0) {
            errbuf_set(err, errlen, "audit log %s: cutting its torn last line: %s", log->path,
                       strerror(errno));
            goto out;
        }
        log_msg(LOG_WARNING, "audit: %s ended with a torn line of %" PRIu64 " bytes; cut",
                log->path, t.torn);
    }
    log->cur.size = t.keep;
    if (t.found) {
        log->file_first_seq = first_seq(log->fd, t.seq + 1);
    } else {
        uint64_t torn = t.torn;
        char torn_sha[65];
        memcpy(torn_sha, t.torn_sha256, sizeof(torn_sha));
        sibling = best_sibling(log->path, pr->log_id[0] ? pr->log_id : NULL, &t);
        if (!sibling && pr->log_id[0])
            sibling = best_sibling(log->path, NULL, &t);
        if (sibling && t.torn) {
            /* the renamed file ends torn (a crash mid-write): cut it, as the path's own */
            sfd = open(sibling, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
            if (sfd < 0 || ftruncate(sfd, (off_t)t.keep) != 0 || fsync(sfd) != 0) {
                errbuf_set(err, errlen, "audit log %s: cutting its torn last line: %s", sibling,
                           strerror(errno));
                goto out;
            }
            log_msg(LOG_WARNING, "audit: %s ended with a torn line of %" PRIu64 " bytes; cut",
                    sibling, t.torn);
            if (!torn) {
                torn = t.torn;
                memcpy(torn_sha, t.torn_sha256, sizeof(torn_sha));
            }
        }
        if (pr->found && pr->log_id[0] && pr->has_first_seq &&
            (!sibling || strcmp(t.log_id, pr->log_id) || t.seq < pr->file_first_seq)) {
            /* The file the crashed run was writing is gone (moved elsewhere,
             * compressed, deleted): continuing from an older file would fork
             * the chain. A new chain starts; the open record declares the gap. */
            log_msg(LOG_ERROR,
                    "audit: the file log %s was writing from seq %" PRIu64 " is not "
                    "next to %s (moved, compressed or deleted?): a new chain starts "
                    "and its open record declares the gap",
                    pr->log_id, pr->file_first_seq, log->path);
            missing = true;
            t.found = false;
        }
        t.torn = torn;
        memcpy(t.torn_sha256, torn_sha, sizeof(torn_sha));
    }
    if (t.found) {
        if (t.seq == UINT64_MAX) {
            errbuf_set(err, errlen, "audit log %s: seq exhausted", log->path);
            goto out;
        }
        log->cur.seq = t.seq + 1;
        memcpy(log->cur.prev, t.prev, sizeof(t.prev));
        memcpy(log->log_id, t.log_id, sizeof(t.log_id));
    }
    if (!t.found || log->cur.size == 0)
        log->file_first_seq = log->cur.seq;
    sb_fmt(marker, ",\"torn_bytes\":%" PRIu64 ",\"torn_sha256\":", t.torn);
    sb_cstr(marker, t.torn ? t.torn_sha256 : NULL, CAP_HASH);
    sb_lit(marker, ",\"prev_file\":");
    sb_cstr(marker, sibling && t.found ? audit_base_name(sibling) : NULL, CAP_FILE);
    if (pr->found) {
        /* docs/audit.md "Unclean stops": what the stopped run may have lost,
         * until `now`, the open record's own time */
        sb_lit(unclean, "{\"log\":");
        sb_cstr(unclean, pr->log_id[0] ? pr->log_id : t.found ? t.log_id : NULL, CAP_HASH);
        sb_lit(unclean, ",\"pid\":");
        sb_int_or_null(unclean, pr->pid >= 0, pr->pid);
        sb_lit(unclean, ",\"started\":");
        sb_cstr(unclean, pr->started[0] ? pr->started : NULL, 32);
        sb_lit(unclean, ",\"fsync\":");
        sb_cstr(unclean, pr->fsync[0] ? pr->fsync : NULL, 16);
        sb_lit(unclean, ",\"last_seq\":");
        sb_int_or_null(unclean, t.found, (int64_t)t.seq);
        sb_lit(unclean, ",\"last_ts\":");
        sb_cstr(unclean, t.found && t.ts[0] ? t.ts : NULL, 32);
        sb_lit(unclean, ",\"missing_from_seq\":");
        sb_int_or_null(unclean, missing, (int64_t)pr->file_first_seq);
        sb_lit(unclean, ",\"window_from\":");
        sb_cstr(unclean, t.found && t.ts[0] ? t.ts : pr->started[0] ? pr->started : NULL, 32);
        sb_lit(unclean, ",\"window_to\":");
        sb_cstr(unclean, now, 32);
        sb_lit(unclean, "}");
    }
    if (created)
        audit_fsync_dir_of(log->path);
    rc = t.found ? 1 : 0;
out:
    if (sfd >= 0)
        close(sfd);
    free(sibling);
    return rc;
}

static int check_headers(const struct cfg_audit *cfg, char *err, size_t errlen)
{
    if (cfg->n_record_headers > AUDIT_MAX_RECORD_HEADERS) {
        errbuf_set(err, errlen, "audit record_headers: at most %d names", AUDIT_MAX_RECORD_HEADERS);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_record_headers; i++) {
        const char *h = cfg->record_headers[i];
        size_t n = strlen(h);
        if (!n || n > CAP_HNAME ||
            strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789!#$%&'*+-.^_`|~") != n) {
            errbuf_set(err, errlen, "audit record_headers: \"%.64s\" is not a header name", h);
            return -1;
        }
        if (config_header_is_secret(h, n)) {
            errbuf_set(err, errlen,
                       "audit record_headers: \"%s\" may carry a credential and is never recorded",
                       h);
            return -1;
        }
    }
    return 0;
}

struct audit_log *audit_open(const struct cfg_audit *cfg, char *err, size_t errlen)
{
    return audit_open_with(cfg, NULL, err, errlen);
}

/* A Cloud Run variable for the open record's instance, NULL when unset. */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

struct audit_log *audit_open_with(const struct cfg_audit *cfg, const struct audit_open_opts *opts,
                                  char *err, size_t errlen)
{
    struct audit_log *log = xcalloc(1, sizeof(*log));
    struct sb marker = {0}, unclean = {0};
    struct prev_run pr;
    pthread_condattr_t ca;
    char ts[32], host[256] = "";
    unsigned char rnd[16];
    int cont = 0;

    log->fd = -1;
    log->witness = opts ? opts->witness : NULL;
    memset(&pr, 0, sizeof(pr));
    audit_fmt_ts(now_ms(), log->started);
    pthread_mutex_init(&log->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->cv, &ca);
    pthread_condattr_destroy(&ca);
    log->qtail = &log->qhead;
    ilist_init(&log->inbuf);
    ilist_init(&log->unsynced);

    if (!cfg->path || !*cfg->path) {
        errbuf_set(err, errlen, "audit path is empty");
        goto fail;
    }
    if (check_headers(cfg, err, errlen) != 0)
        goto fail;
    log->path = xstrdup(cfg->path);
    log->to_stdout = !strcmp(cfg->path, "-");
    log->fsync = cfg->fsync;
    log->on_failure = cfg->on_failure;
    log->n_rh = cfg->n_record_headers;
    log->rh = xcalloc(log->n_rh + 1, sizeof(*log->rh));
    for (size_t i = 0; i < log->n_rh; i++)
        audit_rh_init(&log->rh[i], cfg->record_headers[i]);
    log->rotate_bytes = cfg->rotate_bytes;
    log->batch_ms = cfg->batch_ms ? cfg->batch_ms : 10;
    log->checkpoint_records = cfg->checkpoint_records ? cfg->checkpoint_records : 1000;
    log->checkpoint_interval_s = cfg->checkpoint_interval_s ? cfg->checkpoint_interval_s : 60;
    log->queue_cap = cfg->queue_records ? cfg->queue_records : 65536;
    if (cfg->signing_key && load_key(log, cfg->signing_key, err, errlen) != 0)
        goto fail;

    memcpy(log->cur.prev, AUDIT_GENESIS_PREV, sizeof(log->cur.prev));
    audit_fmt_ts(now_ms(), ts); /* the open record's time, and an unclean stop's window_to */
    if (log->to_stdout) {
        log->fd = STDOUT_FILENO;  /* a pipe: no tail to read, each start is a new chain */
        signal(SIGPIPE, SIG_IGN); /* a closed pipe must be EPIPE, not death */
        sb_lit(&marker, ",\"torn_bytes\":0,\"torn_sha256\":null,\"prev_file\":null");
    } else {
        signal(SIGXFSZ, SIG_IGN); /* a file size limit must be EFBIG, not death */
        log->run_path = run_path_of(log->path);
        read_run(log->run_path, &pr);
        cont = open_file(log, &pr, ts, &marker, &unclean, err, errlen);
        if (cont < 0)
            goto fail;
    }
    if (!cont) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            errbuf_set(err, errlen, "audit: no randomness for a log id");
            goto fail;
        }
        hex_encode(rnd, sizeof(rnd), log->log_id);
    }

    /* The open record: first in the file, written and fsynced before serving. */
    {
        struct sb m = {0};
        (void)gethostname(host, sizeof(host) - 1);
        sb_fmt(&m, "\"kind\":\"open\",\"ts\":\"%s\",\"start\":\"%s\",\"baton\":", ts,
               cont ? "restart" : "genesis");
        sb_cstr(&m, PACKAGE_VERSION, 64);
        sb_lit(&m, ",\"host\":");
        sb_cstr(&m, host, 256);
        sb_fmt(&m,
               ",\"pid\":%ld,\"fsync\":\"%s\",\"on_failure\":\"%s\",\"key_id\":", (long)getpid(),
               audit_fsync_name(log->fsync), log->on_failure == ON_FAILURE_DENY ? "deny" : "allow");
        sb_cstr(&m, log->key ? log->key_id : NULL, CAP_HASH);
        sb_put(&m, marker.buf.p, marker.buf.len);
        /* docs/audit.md "The open record": which instance this chain is */
        sb_lit(&m, ",\"instance\":{\"service\":");
        sb_cstr(&m, env_or_null("K_SERVICE"), CAP_NAME);
        sb_lit(&m, ",\"revision\":");
        sb_cstr(&m, env_or_null("K_REVISION"), CAP_NAME);
        sb_lit(&m, ",\"configuration\":");
        sb_cstr(&m, env_or_null("K_CONFIGURATION"), CAP_NAME);
        sb_lit(&m, ",\"id\":");
        sb_cstr(&m, opts && opts->instance_id && *opts->instance_id ? opts->instance_id : NULL,
                CAP_NAME);
        sb_lit(&m, ",\"host\":");
        sb_cstr(&m, host, 256);
        sb_fmt(&m, ",\"pid\":%ld,\"started\":\"%s\"}", (long)getpid(), log->started);
        sb_lit(&m, ",\"unclean_stop\":");
        if (unclean.buf.len)
            sb_put(&m, unclean.buf.p, unclean.buf.len);
        else
            sb_lit(&m, "null");
        log->marker_body = m.buf.p;
    }
    log->witness_marker = true;
    log->cur.marker_pending = true;
    log->committed = log->synced = log->cur;
    log->last_ckpt_ns = mono_ns();
    audit_w_prelude(log);
    if (audit_w_flush(log) != 0 || audit_w_sync(log, true) != 0) {
        errbuf_set(err, errlen, "audit log %s: cannot write: %s", log->path, log->lost_error);
        goto fail;
    }
    if (pthread_create(&log->thread, NULL, audit_writer_main, log) != 0) {
        errbuf_set(err, errlen, "audit: cannot start the writer thread");
        goto fail;
    }
    log->thread_started = true;
    log->witness_marker = false; /* the next markers are rotate records */
    audit_write_run(log); /* this run is open: a crash from now on is declared at the next start */
    buf_free(&marker.buf);
    buf_free(&unclean.buf);
    return log;
fail:
    buf_free(&marker.buf);
    buf_free(&unclean.buf);
    free(log->run_path);
    log->run_path = NULL; /* the previous run's marker stays: it is not ours to remove */
    audit_close(log);
    return NULL;
}
