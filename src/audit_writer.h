/*
 * audit_writer.h: inside the audit log (not a public API): the log's state,
 * shared by the writer thread (audit_writer.c) and opening (audit_open.c).
 */
#ifndef BATON_AUDIT_WRITER_H
#define BATON_AUDIT_WRITER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit.h"
#include "audit_record.h"

/* ------------------------------------------------------------------ the log */

struct audit_item {
    struct audit_item *next;
    void (*durable)(void *arg, int ok);
    void *arg;
    char *body; /* inline_body, or owned (a record longer than AUDIT_INLINE_BODY) */
    size_t len;
    char inline_body[]; /* AUDIT_INLINE_BODY bytes */
};

/* A typical record is 1-1.5 KB: item and body in one allocation, where a
 * separate body would cost a second malloc and free per request. */
#define AUDIT_INLINE_BODY 2048

struct ilist {
    struct audit_item *head, **tail;
    size_t n;
};

/* What the writer can roll back to: the chain position and the file size. */
struct wstate {
    uint64_t seq;              /* seq of the next line */
    char prev[65];             /* SHA-256 hex of the last line */
    uint64_t size;             /* bytes in the current file */
    uint64_t since_ckpt;       /* lines after the last checkpoint */
    uint64_t lost_recorded;    /* losses already told by `lost` records */
    uint64_t refused_recorded; /* refusals already told by `lost` records */
    bool marker_pending;       /* the file's first record (open/rotate) is still to write */
};

struct audit_log {
    /* configuration, immutable once open */
    char *path;
    bool to_stdout;
    enum cfg_fsync fsync;
    enum cfg_on_failure on_failure;
    struct audit_rh *rh; /* record_headers, decided once (audit_record.h) */
    size_t n_rh;
    uint64_t rotate_bytes;
    unsigned batch_ms, checkpoint_records, checkpoint_interval_s;
    size_t queue_cap;
    EVP_PKEY *key; /* NULL: no checkpoints */
    char *pub_pem;
    unsigned char pub_raw[32];
    char key_id[65];
    char log_id[33];

    /* the queue, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started;
    struct audit_item *qhead, **qtail;
    size_t qlen;
    bool writer_waiting;   /* idle: any new record wakes it */
    bool writer_lingering; /* gathering: only AUDIT_WAKE_RECORDS records wake it */
    bool stop, reopen_req;
    struct audit_item *spare; /* items the writer is done with (audit_writer.c) */
    size_t n_spare;

    /* shared counters */
    atomic_size_t slots; /* reserved, queued, or awaiting durability */
    atomic_bool failed;
    atomic_uint_fast64_t lost_queue;    /* submit-side losses the writer has not seen */
    atomic_uint_fast64_t refused_queue; /* reserve refusals the writer has not seen */
    atomic_uint_fast64_t st_written, st_markers, st_checkpoints, st_bytes, st_fsyncs, st_rotations,
        st_failures, st_lost, st_refused;

    /* writer thread only */
    int fd;
    struct wstate cur, committed, synced;
    bool need_truncate;      /* a failed write could not be cut back yet */
    bool failure_unrecorded; /* a failure no `lost` record tells yet */
    bool stdout_torn;
    uint64_t file_first_seq, file_marker_end;
    char *marker_body; /* the open/rotate record of the current file */
    struct sb out;     /* lines not yet written */
    size_t out_lines;
    struct ilist inbuf, unsynced; /* their records, and written ones awaiting fsync */
    uint64_t unsynced_since_ns, last_ckpt_ns, next_probe_ns, rotate_hold_ns, last_log_ns;
    uint64_t lost_total;    /* every loss so far */
    uint64_t refused_total; /* every refusal the writer has seen */
    int64_t lost_since_ms;
    char lost_error[128];

    /* witness: the open record and checkpoints, handed over once written */
    struct audit_witness *witness; /* owned, or NULL */
    bool witness_marker;           /* the pending marker is the open record */
    struct wnote {
        uint64_t seq;
        char *line; /* owned, without newline */
        size_t len;
    } * wnotes; /* formatted, not yet written */
    size_t n_wnotes, cap_wnotes, n_wsync;
    char *run_path;   /* the run marker (docs/audit.md), NULL for stdout */
    char started[32]; /* when this run opened the log */
};

static inline void ilist_init(struct ilist *l)
{
    l->head = NULL;
    l->tail = &l->head;
    l->n = 0;
}

/* audit_writer.c */
const char *audit_fsync_name(enum cfg_fsync f);
void audit_fsync_dir_of(const char *path);
const char *audit_base_name(const char *path);
/* Writes what a file or a batch must begin with (the marker, a lost record). */
void audit_w_prelude(struct audit_log *log);
/* Writes the buffer: 0, or -1 (the buffered records are lost). */
int audit_w_flush(struct audit_log *log);
/* fsync per mode (or whatever the mode with force): 0, or -1. */
int audit_w_sync(struct audit_log *log, bool force);
/* The writer thread's body; arg is the log. */
void *audit_writer_main(void *arg);

/* audit_open.c: (re)writes the run marker for the file now being written. */
void audit_write_run(struct audit_log *log);

#endif
