/*
 * audit_writer.c: the audit log writer (audit.h, docs/audit.md): the queue
 * workers submit to and the writer thread. Record formats are audit_record.c's,
 * opening and recovery audit_open.c's.
 *
 * Request path: audit_submit formats the record body (audit_record.c: every
 * string escaped and capped, credentials never recorded) and appends it to a mutex-guarded list;
 * a counter of slots bounds what is queued or awaiting durability, and
 * audit_reserve takes a slot before the request is forwarded so the later
 * submit cannot fail for want of room.
 *
 * Waking the writer is not free (a futex wake for the submitter, a context
 * switch for the writer): per record, it cost more than the rest of a
 * cache-hit request. So with fsync batch or none, once the writer has found
 * records it lingers AUDIT_LINGER_NS before taking the next list, and
 * submitters signal it only when it sleeps idle (the first record after a
 * quiet spell) or the list reaches AUDIT_WAKE_RECORDS: under load it wakes at
 * most every AUDIT_LINGER_NS and writes what gathered in one write(2). With
 * fsync always a record wakes the writer at once (the response waits on it).
 * 5 ms: a wake-up is a context switch on a core that is serving requests;
 * at 55k requests/s, 1 ms cost ~0.6 us of CPU per request more than 5 or
 * 10 ms (same-run A/B, CPU time per request from /proc). A record is written
 * within 5 ms, half the default batch_ms. Peers buffer far longer: nginx's
 * access_log `flush=` is commonly seconds, Envoy's file access log flushes
 * every second.
 *
 * Writer thread: takes the whole list at each wake-up, gives each record its
 * `seq` and `prev` (SHA-256 of the previous line as written), appends the
 * lines to one buffer, writes it with one write(2), and fsyncs per mode
 * (always: before any callback; batch: within batch_ms or every
 * AUDIT_BATCH_RECORDS records; none: never, except at rotation and close).
 * The chain position, file size and counters form a `struct wstate` copied at
 * each successful write and fsync: a failed write or fsync truncates the file
 * back to the last good state, so what is on disk is always a clean chain, and
 * the records concerned are reported lost (callback ok=0). The next write that
 * succeeds starts with a `lost` record saying how many and why.
 *
 * Hashing: the writer hashes each line once, in the write buffer as it is
 * formatted (its SHA-256 is the next line's `prev`), and signs one short
 * message per checkpoint; a worker hashes nothing (the fingerprints a record
 * holds were computed before, README "Audit: what is hashed").
 *
 * Every file begins with an `open` (process start) or `rotate` record; the
 * chain runs unbroken across files and restarts (docs/audit.md "Genesis,
 * restart and rotation"). Checkpoints are Ed25519 signatures (OpenSSL, key
 * loaded once) over (log id, seq, head, ts, key id), written as records.
 */
#include "audit_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit_witness.h"
#include "log.h"
#include "util.h"

#define AUDIT_BATCH_RECORDS 1024     /* batch mode: fsync at least every N records */
#define AUDIT_LINGER_NS 5000000ull   /* batch/none under load: gather records this long */
#define AUDIT_WAKE_RECORDS 1024      /* ... or until this many are queued */
#define AUDIT_FLUSH_BYTES (1u << 20) /* write(2) when the buffer reaches this */
#define AUDIT_RETRY_MS 500           /* while failing: retry a write this often */
#define AUDIT_ROTATE_HOLD_S 60       /* after a failed rotation, keep the file this long */

/*
 * Items are recycled rather than freed: the writer hands those it is done
 * with back to the log (at most AUDIT_SPARE_ITEMS, 2 MB), and a submitting
 * thread takes one under the lock it holds anyway to queue its record, to
 * format its next record in: no malloc and no free per record (a free of
 * a block another thread allocated is glibc's costly kind). An item a thread
 * holds is freed when the thread exits.
 */
#define AUDIT_SPARE_ITEMS 1024

static __thread struct audit_item *tl_item; /* this thread's next item, owned */
static __thread bool tl_item_keyed;         /* tl_item_key is set: freed at exit */
static pthread_key_t tl_item_key;
static pthread_once_t tl_item_once = PTHREAD_ONCE_INIT;

static void tl_item_drop(void *unused)
{
    free(tl_item);
    tl_item = NULL;
}

static void tl_item_key_make(void)
{
    if (pthread_key_create(&tl_item_key, tl_item_drop) != 0)
        abort(); /* only at the process's key limit */
}

/* batch and group: fsync within batch_ms or every AUDIT_BATCH_RECORDS records */
static bool batch_timed(const struct audit_log *log)
{
    return log->fsync == FSYNC_BATCH || log->fsync == FSYNC_GROUP;
}

/* Remembers the line just formatted at out.buf + start (len bytes) for the
 * witness; handed over by w_flush once written, dropped if the write fails. */
static void w_witness_note(struct audit_log *log, uint64_t seq, size_t start, size_t len)
{
    if (!log->witness)
        return;
    if (log->n_wnotes == log->cap_wnotes) {
        log->cap_wnotes = log->cap_wnotes ? log->cap_wnotes * 2 : 4;
        log->wnotes = xrealloc(log->wnotes, log->cap_wnotes * sizeof(*log->wnotes));
    }
    log->wnotes[log->n_wnotes].seq = seq;
    log->wnotes[log->n_wnotes].line = xstrndup(log->out.buf.p + start, len);
    log->wnotes[log->n_wnotes].len = len;
    log->n_wnotes++;
}

/* Notes [0, n_wsync) are written and await their fsync; the rest are not
 * written yet. The witness only ever holds lines that are as durable as the
 * mode makes them: a line cut back after a failed write or fsync is dropped
 * (its seq will be reused), never witnessed. */
static void w_witness_take(struct audit_log *log, size_t n, bool put)
{
    for (size_t i = 0; i < n; i++) {
        if (put)
            audit_witness_put(log->witness, log->log_id, log->wnotes[i].seq, log->wnotes[i].line,
                              log->wnotes[i].len);
        free(log->wnotes[i].line);
    }
    if (n < log->n_wnotes)
        memmove(log->wnotes, log->wnotes + n, (log->n_wnotes - n) * sizeof(*log->wnotes));
    log->n_wnotes -= n;
    log->n_wsync = log->n_wsync > n ? log->n_wsync - n : 0;
}

/* After a write (ok or not). */
static void w_witness_written(struct audit_log *log, bool ok)
{
    if (!ok) {
        for (size_t i = log->n_wsync; i < log->n_wnotes; i++)
            free(log->wnotes[i].line); /* the unwritten ones */
        log->n_wnotes = log->n_wsync;
    } else if (log->fsync == FSYNC_NONE || log->to_stdout)
        w_witness_take(log, log->n_wnotes, true);
    else
        log->n_wsync = log->n_wnotes;
}

static void ilist_append(struct ilist *l, struct audit_item *it)
{
    it->next = NULL;
    *l->tail = it;
    l->tail = &it->next;
    l->n++;
}

static void ilist_concat(struct ilist *dst, struct ilist *src)
{
    if (!src->head)
        return;
    *dst->tail = src->head;
    dst->tail = src->tail;
    dst->n += src->n;
    ilist_init(src);
}

const char *audit_fsync_name(enum cfg_fsync f)
{
    return f == FSYNC_ALWAYS  ? "always"
           : f == FSYNC_BATCH ? "batch"
           : f == FSYNC_GROUP ? "group"
                              : "none";
}

/* Runs each record's callback and frees it; its slot is free again. */
static void w_ack(struct audit_log *log, struct ilist *l, int ok)
{
    struct audit_item *it = l->head, *next, *done = NULL;
    size_t n = l->n;

    for (; it; it = next) {
        next = it->next;
        if (it->durable)
            it->durable(it->arg, ok);
        if (it->body != it->inline_body) {
            free(it->body);
            it->body = it->inline_body;
        }
        it->next = done;
        done = it;
    }
    if (done) { /* back to the log for the next submits, the rest freed */
        pthread_mutex_lock(&log->mu);
        while (done && log->n_spare < AUDIT_SPARE_ITEMS) {
            it = done;
            done = it->next;
            it->next = log->spare;
            log->spare = it;
            log->n_spare++;
        }
        pthread_mutex_unlock(&log->mu);
        for (; done; done = next) {
            next = done->next;
            free(done);
        }
    }
    if (ok) {
        atomic_fetch_add(&log->st_written, n);
    } else if (n) {
        log->lost_total += n;
        atomic_fetch_add(&log->st_lost, n);
    }
    atomic_fetch_sub(&log->slots, n);
    ilist_init(l);
}

/* Logs at most once a second while failing, so a full disk does not flood stderr. */
static void w_log_failure(struct audit_log *log, const char *what, int err)
{
    uint64_t now = mono_ns();
    if (log->last_log_ns && now - log->last_log_ns < 1000000000u)
        return;
    log->last_log_ns = now;
    log_msg(LOG_ERROR, "audit: %s %s failed: %s (%" PRIu64 " records lost so far)", what, log->path,
            strerror(err), log->lost_total);
}

/* Called as a loss happens, before it is counted: starts the period the
 * next `lost` record describes. */
static void w_note_loss(struct audit_log *log)
{
    if (!log->failure_unrecorded && log->lost_total == log->cur.lost_recorded &&
        log->refused_total == log->cur.refused_recorded)
        log->lost_since_ms = now_ms();
}

static void w_fail(struct audit_log *log, const char *what, int err)
{
    w_note_loss(log);
    log->failure_unrecorded = true;
    snprintf(log->lost_error, sizeof(log->lost_error), "%s: %s", what, strerror(err));
    atomic_fetch_add(&log->st_failures, 1);
    atomic_store(&log->failed, true);
    log->next_probe_ns = mono_ns() + AUDIT_RETRY_MS * 1000000ull;
    w_log_failure(log, what, err);
}

/* Cuts the file back to `size` after a failed write or fsync. */
static void w_truncate(struct audit_log *log, uint64_t size)
{
    if (log->to_stdout)
        return;
    log->need_truncate = ftruncate(log->fd, (off_t)size) != 0;
}

/* Ends the line just formatted at out.buf + start (len bytes, no newline):
 * chains it and advances the state. */
static void w_line_done(struct audit_log *log, size_t start, size_t len)
{
    sha256_hex(log->out.buf.p + start, len, log->cur.prev);
    log->out.buf.p[start + len] = '\n';
    log->out.buf.len = start + len + 1;
    log->out.buf.p[log->out.buf.len] = '\0';
    log->out_lines++;
    log->cur.seq++;
    log->cur.size += len + 1;
    log->cur.since_ckpt++;
}

static void w_append_body(struct audit_log *log, const char *body, size_t blen)
{
    size_t start = log->out.buf.len;
    int p;

    sb_reserve(&log->out, AUDIT_PREFIX_MAX + blen + 2);
    p = audit_line_prefix(log->out.buf.p + start, AUDIT_PREFIX_MAX, log->cur.seq, log->cur.prev,
                          log->log_id);
    if (p < 0)
        abort(); /* prev and log are fixed-length hex: 149 bytes at most */
    memcpy(log->out.buf.p + start + p, body, blen);
    log->out.buf.p[start + p + blen] = '}';
    w_line_done(log, start, (size_t)p + blen + 1);
}

static void w_checkpoint(struct audit_log *log)
{
    char ts[32], msg[512], sig_hex[129];
    unsigned char sig[64];
    size_t siglen = sizeof(sig), mlen, start, n;
    EVP_MD_CTX *ctx = NULL;

    if (!log->key)
        return;
    audit_fmt_ts(now_ms(), ts);
    mlen = audit_checkpoint_message(msg, sizeof(msg), log->log_id, log->cur.seq, log->cur.prev, ts,
                                    log->key_id);
    ctx = EVP_MD_CTX_new();
    if (!mlen || !ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, log->key) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg, mlen) != 1 ||
        siglen != sizeof(sig))
        goto fail;
    hex_encode(sig, sizeof(sig), sig_hex);
    start = log->out.buf.len;
    sb_reserve(&log->out, 512);
    n = audit_checkpoint_line(log->out.buf.p + start, 510, log->log_id, log->cur.seq, log->cur.prev,
                              ts, log->key_id, sig_hex);
    if (!n)
        goto fail;
    w_witness_note(log, log->cur.seq, start, n);
    w_line_done(log, start, n);
    log->cur.since_ckpt = 0;
    atomic_fetch_add(&log->st_checkpoints, 1);
    goto out;
fail:
    atomic_fetch_add(&log->st_failures, 1);
    log_msg(LOG_ERROR, "audit: signing a checkpoint failed");
out:
    log->last_ckpt_ns = mono_ns(); /* on failure too: retried at the next interval */
    EVP_MD_CTX_free(ctx);
}

/* Writes what a file or a batch must begin with: the file's open/rotate
 * record, then a `lost` record when records were lost since the last one. */
void audit_w_prelude(struct audit_log *log)
{
    uint64_t q = atomic_exchange(&log->lost_queue, 0);
    uint64_t r = atomic_exchange(&log->refused_queue, 0);

    if (q || r) {
        w_note_loss(log);
        log->lost_total += q;
        log->refused_total += r;
        if (!log->failure_unrecorded && !atomic_load(&log->failed))
            snprintf(log->lost_error, sizeof(log->lost_error), "queue full");
    }
    if (log->cur.marker_pending) {
        size_t start = log->out.buf.len;
        uint64_t seq = log->cur.seq;
        w_append_body(log, log->marker_body, strlen(log->marker_body));
        if (log->witness_marker)
            w_witness_note(log, seq, start, log->out.buf.len - start - 1);
        log->cur.marker_pending = false;
        log->file_marker_end = log->cur.size;
    }
    if (log->failure_unrecorded || log->lost_total > log->cur.lost_recorded ||
        log->refused_total > log->cur.refused_recorded) {
        struct sb b = {0};
        char ts[32], since[32];
        audit_fmt_ts(now_ms(), ts);
        audit_fmt_ts(log->lost_since_ms, since);
        sb_fmt(&b,
               "\"kind\":\"lost\",\"ts\":\"%s\",\"count\":%" PRIu64 ",\"refused\":%" PRIu64
               ",\"since\":\"%s\",\"error\":",
               ts, log->lost_total - log->cur.lost_recorded,
               log->refused_total - log->cur.refused_recorded, since);
        sb_cstr(&b, log->lost_error, sizeof(log->lost_error));
        w_append_body(log, b.buf.p, b.buf.len);
        buf_free(&b.buf);
        log->cur.lost_recorded = log->lost_total;
        log->cur.refused_recorded = log->refused_total;
        log->failure_unrecorded = false;
    }
}

/* Writes the buffer. On failure the file is cut back to the last good write
 * and the buffered records are lost. */
int audit_w_flush(struct audit_log *log)
{
    size_t off = 0, markers;
    int err;

    if (!log->out.buf.len)
        return 0;
    if (log->need_truncate) {
        w_truncate(log, log->committed.size);
        if (log->need_truncate) {
            err = errno;
            goto fail;
        }
    }
    if (log->stdout_torn) { /* end the torn piece so the next line stands alone */
        if (write(log->fd, "\n", 1) != 1) {
            err = errno;
            goto fail;
        }
        log->stdout_torn = false;
    }
    while (off < log->out.buf.len) {
        ssize_t n = write(log->fd, log->out.buf.p + off, log->out.buf.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            goto fail;
        }
        off += (size_t)n;
    }
    markers = log->out_lines - log->inbuf.n;
    atomic_fetch_add(&log->st_bytes, log->out.buf.len);
    atomic_fetch_add(&log->st_markers, markers);
    buf_truncate(&log->out.buf, 0);
    log->out_lines = 0;
    w_witness_written(log, true);
    if (log->committed.seq == log->synced.seq)
        log->unsynced_since_ns = mono_ns(); /* the first line awaiting fsync */
    log->committed = log->cur;
    if (log->fsync == FSYNC_NONE || log->to_stdout) {
        log->synced = log->committed; /* nothing promised beyond the write */
        w_ack(log, &log->inbuf, 1);
    } else {
        ilist_concat(&log->unsynced, &log->inbuf);
    }
    if (atomic_exchange(&log->failed, false))
        log_msg(LOG_WARNING, "audit: writing %s again (%" PRIu64 " records lost in all)", log->path,
                log->lost_total);
    return 0;
fail:
    if (log->to_stdout && off)
        log->stdout_torn = true;
    else
        w_truncate(log, log->committed.size);
    buf_truncate(&log->out.buf, 0);
    log->out_lines = 0;
    w_witness_written(log, false);
    log->cur = log->committed;
    w_note_loss(log);
    w_ack(log, &log->inbuf, 0);
    w_fail(log, "write to", err);
    return -1;
}

/* fsync per mode (or whatever the mode with force). On failure the file is
 * cut back to the last fsync and the records written since are lost. */
int audit_w_sync(struct audit_log *log, bool force)
{
    int err;

    if (log->to_stdout)
        return 0;
    if (!force && log->fsync == FSYNC_NONE)
        return 0;
    if (!force && log->synced.seq == log->committed.seq && log->synced.size == log->committed.size)
        return 0; /* every line written is fsynced already */
    if (fsync(log->fd) != 0) {
        err = errno;
        w_truncate(log, log->synced.size);
        log->cur = log->committed = log->synced;
        w_witness_take(log, log->n_wnotes, false);
        w_note_loss(log);
        w_ack(log, &log->unsynced, 0);
        w_fail(log, "fsync of", err);
        return -1;
    }
    atomic_fetch_add(&log->st_fsyncs, 1);
    log->synced = log->committed;
    w_witness_take(log, log->n_wsync, true);
    w_ack(log, &log->unsynced, 1);
    return 0;
}

/* Write, then fsync when the mode wants it now. */
static int w_commit(struct audit_log *log)
{
    if (audit_w_flush(log) != 0)
        return -1;
    if (log->fsync == FSYNC_ALWAYS)
        return audit_w_sync(log, false);
    if (batch_timed(log) && log->unsynced.n >= AUDIT_BATCH_RECORDS)
        return audit_w_sync(log, false);
    return 0;
}

void audit_fsync_dir_of(const char *path)
{
    char *copy = xstrdup(path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(copy);
}

const char *audit_base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Closes the current file with a checkpoint and continues the chain in a new
 * one at `path`: after renaming the current file to path.<first seq> (cause
 * "size"), or after logrotate moved it (cause "reopen"). */
static void w_rotate(struct audit_log *log, const char *cause)
{
    char *rotated = NULL;
    struct sb m = {0};
    char ts[32];
    int nfd = -1, err = 0;
    struct stat st;
    bool by_size = !strcmp(cause, "size");

    if (log->cur.marker_pending || (by_size && log->cur.size <= log->file_marker_end))
        return; /* nothing but the marker in this file */
    audit_w_prelude(log);
    if (log->cur.since_ckpt)
        w_checkpoint(log);
    if (audit_w_flush(log) != 0 || audit_w_sync(log, true) != 0)
        return;
    if (by_size) {
        rotated = xasprintf("%s.%020" PRIu64, log->path, log->file_first_seq);
        if (renameat2(AT_FDCWD, log->path, AT_FDCWD, rotated, RENAME_NOREPLACE) != 0) {
            err = errno;
            goto fail;
        }
    }
    nfd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (nfd < 0) {
        err = errno;
        goto fail;
    }
    if (fstat(nfd, &st) != 0 || st.st_size != 0) {
        err = EEXIST; /* someone else's file is at the path: do not write into it */
        goto fail;
    }
    audit_fsync_dir_of(log->path);
    close(log->fd);
    log->fd = nfd;
    nfd = -1;
    audit_fmt_ts(now_ms(), ts);
    sb_fmt(&m, "\"kind\":\"rotate\",\"ts\":\"%s\",\"cause\":\"%s\",\"prev_file\":", ts, cause);
    sb_cstr(&m, rotated ? audit_base_name(rotated) : NULL, CAP_FILE);
    free(log->marker_body);
    log->marker_body = m.buf.p;
    log->cur.size = 0;
    log->cur.marker_pending = true;
    log->committed = log->synced = log->cur;
    log->file_first_seq = log->cur.seq;
    log->file_marker_end = 0;
    atomic_fetch_add(&log->st_rotations, 1);
    audit_write_run(log); /* a crash now must look for this file */
    audit_w_prelude(log);
    goto out;
fail:
    /* The chain goes on in the file we have; try again later. */
    atomic_fetch_add(&log->st_failures, 1);
    log_msg(LOG_ERROR, "audit: rotating %s (%s) failed: %s; writing on in the current file",
            log->path, cause, strerror(err));
    log->rotate_hold_ns = mono_ns() + AUDIT_ROTATE_HOLD_S * 1000000000ull;
    if (rotated && nfd < 0 && access(log->path, F_OK) != 0)
        (void)rename(rotated, log->path); /* renamed but no new file: put it back */
out:
    if (nfd >= 0)
        close(nfd);
    free(rotated);
}

static void w_reopen(struct audit_log *log)
{
    struct stat a, b;
    if (log->to_stdout)
        return;
    if (fstat(log->fd, &a) == 0 && stat(log->path, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return; /* still the file at the path: nothing to do */
    log->rotate_hold_ns = 0;
    w_rotate(log, "reopen");
    (void)w_commit(log);
}

static void w_put(struct audit_log *log, struct audit_item *it)
{
    if (log->rotate_bytes && !log->to_stdout && mono_ns() >= log->rotate_hold_ns &&
        log->cur.size > log->file_marker_end &&
        log->cur.size + it->len + AUDIT_PREFIX_MAX > log->rotate_bytes) {
        w_rotate(log, "size");
    }
    audit_w_prelude(log);
    w_append_body(log, it->body, it->len);
    ilist_append(&log->inbuf, it);
    if (log->key && log->cur.since_ckpt >= log->checkpoint_records)
        w_checkpoint(log);
    if (log->out.buf.len >= AUDIT_FLUSH_BYTES)
        (void)w_commit(log);
}

/* The next time the writer must wake without new records (mono ns), 0: none. */
static uint64_t w_deadline(const struct audit_log *log)
{
    uint64_t d = UINT64_MAX;
    if (batch_timed(log) && log->committed.seq != log->synced.seq) {
        uint64_t t = log->unsynced_since_ns + log->batch_ms * 1000000ull;
        d = t < d ? t : d;
    }
    if (log->key) { /* a heartbeat even when nothing was written (docs/audit.md) */
        uint64_t t = log->last_ckpt_ns + log->checkpoint_interval_s * 1000000000ull;
        d = t < d ? t : d;
    }
    if (atomic_load(&log->failed) && log->next_probe_ns < d)
        d = log->next_probe_ns;
    return d == UINT64_MAX ? 0 : d;
}

/* Work due on time rather than on records: batch fsync, timed checkpoint,
 * and a retry while failing (the retry writes the pending `lost` record). */
static void w_timers(struct audit_log *log)
{
    uint64_t now = mono_ns();

    if (batch_timed(log) && log->committed.seq != log->synced.seq &&
        now >= log->unsynced_since_ns + log->batch_ms * 1000000ull)
        (void)audit_w_sync(log, false);
    if (log->key && now >= log->last_ckpt_ns + log->checkpoint_interval_s * 1000000000ull) {
        audit_w_prelude(log);
        w_checkpoint(log);
        (void)w_commit(log);
    }
    if (atomic_load(&log->failed) && now >= log->next_probe_ns) {
        log->next_probe_ns = now + AUDIT_RETRY_MS * 1000000ull;
        audit_w_prelude(log);
        if (audit_w_flush(log) == 0 && log->fsync != FSYNC_NONE)
            (void)audit_w_sync(log, false);
    }
}

static void w_batch(struct audit_log *log, struct audit_item *items)
{
    while (items) {
        struct audit_item *next = items->next;
        w_put(log, items);
        items = next;
    }
    (void)w_commit(log);
    w_timers(log);
}

void *audit_writer_main(void *arg)
{
    struct audit_log *log = arg;
    struct audit_item *items;
    bool stop, reopen;

    bool linger = false;

    pthread_mutex_lock(&log->mu);
    for (;;) {
        if (linger) {
            /* the last list had records: let the next one gather (header comment) */
            uint64_t until = mono_ns() + AUDIT_LINGER_NS, d = w_deadline(log);
            struct timespec ts;
            if (d && d < until)
                until = d;
            ts.tv_sec = (time_t)(until / 1000000000u);
            ts.tv_nsec = (long)(until % 1000000000u);
            log->writer_lingering = true;
            while (!log->stop && !log->reopen_req && log->qlen < AUDIT_WAKE_RECORDS)
                if (pthread_cond_timedwait(&log->cv, &log->mu, &ts) == ETIMEDOUT)
                    break;
            log->writer_lingering = false;
        }
        while (!log->qhead && !log->stop && !log->reopen_req) {
            uint64_t d = w_deadline(log);
            log->writer_waiting = true;
            if (!d) {
                pthread_cond_wait(&log->cv, &log->mu);
            } else {
                struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
                if (mono_ns() >= d ||
                    pthread_cond_timedwait(&log->cv, &log->mu, &ts) == ETIMEDOUT) {
                    log->writer_waiting = false;
                    break;
                }
            }
            log->writer_waiting = false;
        }
        items = log->qhead;
        log->qhead = NULL;
        log->qtail = &log->qhead;
        log->qlen = 0;
        linger = items && log->fsync != FSYNC_ALWAYS;
        stop = log->stop;
        reopen = log->reopen_req;
        log->reopen_req = false;
        pthread_mutex_unlock(&log->mu);

        if (reopen)
            w_reopen(log);
        w_batch(log, items);

        pthread_mutex_lock(&log->mu);
        if (stop && !log->qhead)
            break;
    }
    pthread_mutex_unlock(&log->mu);

    /* close: every record is written; seal the chain with a checkpoint, also
     * when a heartbeat just did: the last line of a clean stop is a checkpoint */
    audit_w_prelude(log);
    if (log->key)
        w_checkpoint(log);
    (void)audit_w_flush(log);
    (void)audit_w_sync(log, true); /* whatever the mode: a clean stop is durable */
    w_ack(log, &log->unsynced, 0); /* nothing is left here unless stdout */
    return NULL;
}

/* ------------------------------------------------------------ request path */

static bool take_slot(struct audit_log *log)
{
    size_t cur = atomic_load(&log->slots);
    while (cur < log->queue_cap)
        if (atomic_compare_exchange_weak(&log->slots, &cur, cur + 1))
            return true;
    return false;
}

int audit_reserve(struct audit_log *log, struct audit_reservation *rsv)
{
    rsv->slot = false;
    if (log->on_failure == ON_FAILURE_DENY && atomic_load(&log->failed))
        goto refuse;
    rsv->slot = take_slot(log);
    if (!rsv->slot && log->on_failure == ON_FAILURE_DENY)
        goto refuse;
    return 0;
refuse:
    atomic_fetch_add(&log->st_refused, 1);
    atomic_fetch_add(&log->refused_queue, 1);
    return -1;
}

void audit_release(struct audit_log *log, struct audit_reservation *rsv)
{
    if (rsv->slot)
        atomic_fetch_sub(&log->slots, 1);
    rsv->slot = false;
}

int audit_submit(struct audit_log *log, struct audit_reservation *rsv,
                 const struct audit_record *rec, void (*durable)(void *arg, int ok), void *arg)
{
    struct audit_item *it;
    bool have = rsv && rsv->slot;

    if (rsv)
        rsv->slot = false;
    if (!have && !take_slot(log)) {
        atomic_fetch_add(&log->st_lost, 1);
        atomic_fetch_add(&log->lost_queue, 1);
        return -1;
    }
    {
        struct sb b = {0};
        it = tl_item ? tl_item : xmalloc(sizeof(*it) + AUDIT_INLINE_BODY);
        tl_item = NULL;
        it->next = NULL;
        it->durable = durable;
        it->arg = arg;
        buf_init_on(&b.buf, it->inline_body, AUDIT_INLINE_BODY);
        audit_record_format(&b, rec, log->rh, log->n_rh);
        it->body = b.buf.p;
        it->len = b.buf.len;
    }
    pthread_mutex_lock(&log->mu);
    *log->qtail = it;
    log->qtail = &it->next;
    log->qlen++;
    if (log->writer_waiting || (log->writer_lingering && log->qlen >= AUDIT_WAKE_RECORDS))
        pthread_cond_signal(&log->cv);
    if (log->spare) { /* this thread's next record goes in it */
        tl_item = log->spare;
        log->spare = tl_item->next;
        log->n_spare--;
    }
    pthread_mutex_unlock(&log->mu);
    if (tl_item && !tl_item_keyed) {
        pthread_once(&tl_item_once, tl_item_key_make);
        tl_item_keyed = pthread_setspecific(tl_item_key, &tl_item_keyed) == 0;
    }
    return 0;
}

bool audit_healthy(const struct audit_log *log)
{
    return !atomic_load(&((struct audit_log *)log)->failed);
}

void audit_reopen(struct audit_log *log)
{
    pthread_mutex_lock(&log->mu);
    log->reopen_req = true;
    pthread_cond_signal(&log->cv);
    pthread_mutex_unlock(&log->mu);
}

void audit_stats(const struct audit_log *clog, struct audit_stats *out)
{
    struct audit_log *log = (struct audit_log *)clog; /* atomics are read-only here */
    out->queue_depth = atomic_load(&log->slots);
    out->written = atomic_load(&log->st_written);
    out->markers = atomic_load(&log->st_markers);
    out->checkpoints = atomic_load(&log->st_checkpoints);
    out->bytes = atomic_load(&log->st_bytes);
    out->fsyncs = atomic_load(&log->st_fsyncs);
    out->rotations = atomic_load(&log->st_rotations);
    out->failures = atomic_load(&log->st_failures);
    out->lost = atomic_load(&log->st_lost);
    out->refused = atomic_load(&log->st_refused);
    out->healthy = !atomic_load(&log->failed);
    {
        struct audit_witness_stats ws;
        audit_witness_stats(log->witness, &ws);
        out->witness_written = ws.written;
        out->witness_existing = ws.existing;
        out->witness_conflicts = ws.conflicts;
        out->witness_failures = ws.failures;
        out->witness_dropped = ws.dropped;
        out->witness_pending = ws.pending;
    }
}

const char *audit_public_key_pem(const struct audit_log *log)
{
    return log->pub_pem;
}

int audit_public_key_raw(const struct audit_log *log, unsigned char out[32])
{
    if (!log->key)
        return -1;
    memcpy(out, log->pub_raw, 32);
    return 0;
}

const char *audit_key_id(const struct audit_log *log)
{
    return log->key ? log->key_id : NULL;
}

const char *audit_log_id(const struct audit_log *log)
{
    return log->log_id;
}

void audit_close(struct audit_log *log)
{
    if (!log)
        return;
    if (log->thread_started) {
        pthread_mutex_lock(&log->mu);
        log->stop = true;
        pthread_cond_signal(&log->cv);
        pthread_mutex_unlock(&log->mu);
        pthread_join(log->thread, NULL);
        if (log->run_path && unlink(log->run_path) == 0)
            audit_fsync_dir_of(log->run_path); /* a clean stop: the next start says so */
    }
    /* the final checkpoint was handed over last: let it reach the witness */
    audit_witness_free(log->witness, AUDIT_WITNESS_CLOSE_MS);
    log->witness = NULL;
    w_witness_take(log, log->n_wnotes, false);
    free(log->wnotes);
    free(log->run_path);
    if (log->fd >= 0 && !log->to_stdout)
        close(log->fd);
    w_ack(log, &log->inbuf, 0);
    w_ack(log, &log->unsynced, 0);
    while (log->spare) {
        struct audit_item *it = log->spare;
        log->spare = it->next;
        free(it);
    }
    for (size_t i = 0; i < log->n_rh; i++)
        audit_rh_free(&log->rh[i]);
    free(log->rh);
    free(log->path);
    free(log->marker_body);
    buf_free(&log->out.buf);
    free(log->pub_pem);
    EVP_PKEY_free(log->key);
    pthread_cond_destroy(&log->cv);
    pthread_mutex_destroy(&log->mu);
    free(log);
}
