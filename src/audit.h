/*
 * audit.h: the tamper-evident audit log (docs/spec.md "Audit record", docs/audit.md).
 *
 * One JSON line per request. The request path formats a record's body and
 * queues it without touching disk; one writer thread numbers it (`seq`),
 * chains it (`prev` = SHA-256 hex of the previous line's exact bytes), writes
 * it, makes it durable per the fsync mode, and tells the request through a
 * callback. Ed25519-signed checkpoint records bind the chain's head every N
 * records, every T seconds, at rotation and at close. A streaming verifier
 * (audit_verifier_*, audit_verify.c) checks a set of files in constant memory.
 *
 * Threading: audit_reserve, audit_submit, audit_release, audit_healthy and
 * audit_stats are safe from any number of threads. audit_reopen is safe from
 * any thread but is not async-signal-safe (call it from an event loop's signal
 * callback). audit_open and audit_close are called once each by one thread.
 */
#ifndef BATON_AUDIT_H
#define BATON_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "reason.h"

/* Format version, the `v` member of every line. */
#define AUDIT_FORMAT_VERSION 1
/* No line is longer than this (newline excluded): the writer caps every field
 * so a record fits, and the verifier refuses longer lines. */
#define AUDIT_LINE_MAX 65536
/* `prev` of the first record of a new chain (seq 0). */
#define AUDIT_GENESIS_PREV "0000000000000000000000000000000000000000000000000000000000000000"
/* At most this many record_headers (and recorded occurrences); values are
 * cut at AUDIT_HEADER_VALUE_MAX escaped bytes. */
#define AUDIT_MAX_RECORD_HEADERS CONFIG_MAX_RECORD_HEADERS
#define AUDIT_HEADER_VALUE_MAX 512

struct audit_log;

/* A header to record: `name` is the configured spelling (NUL-terminated),
 * `value` a slice of the request (value_len bytes, not NUL-terminated).
 * Headers not named in the log's record_headers are skipped. */
struct audit_header {
    const char *name;
    const char *value;
    size_t value_len;
};

/*
 * One request, as the server knows it when the response is done. Every
 * pointer is borrowed for the duration of audit_submit only (the body is
 * formatted before it returns). A NULL string is written as JSON null; a
 * `(ptr, len)` field with ptr NULL likewise. docs/audit.md maps each field to
 * its JSON member.
 */
/* What the caller already found of a record's User-Agent, so that one
 * redact_is_credential serves the record and the access log (conn.c):
 * UNJUDGED (0, a zeroed record) leaves it to the record's formatter. */
enum { AUDIT_UA_UNJUDGED, AUDIT_UA_PLAIN, AUDIT_UA_CREDENTIAL };

struct audit_record {
    int64_t ts_ms;          /* when the request head was complete, ms since the epoch (UTC) */
    const char *request_id; /* baton's own id for the request: never the client's */
    enum decision decision;
    enum reason reason;            /* written as reason_code() */
    int status;                    /* HTTP status sent; 0: none (connection lost) -> null */
    const char *step;              /* NULL: no route */
    bool dry_run;                  /* the step's mode was dry_run */
    const char *policy_file;       /* file name of the step policy, NULL: no route */
    const char *policy_sha256;     /* hex SHA-256 of its content */
    int worker;                    /* worker thread index; -1: not a worker -> null */
    const char *client_request_id; /* the client's valid X-Request-Id, forwarded; NULL -> null */
    struct {
        bool verified; /* the token passed authentication; the fields below
                                   are then verified claims, else best-effort hints */
        const char *iss, *sub, *audience, *jti, *aws_account;
        const char *token_sha256; /* hex SHA-256 of the token bytes; NULL: no token */
    } caller;                     /* `caller` is null when token_sha256 and iss are NULL */
    struct {
        const char *method;
        size_t method_len;
        const char *path; /* canonical path, or the raw target when it was refused */
        size_t path_len;
        const char *query; /* without '?'; values of secret-looking parameters are redacted */
        size_t query_len;
        const char *client; /* peer address "ip:port" (NUL-terminated) */
        const char *user_agent;
        size_t user_agent_len;
        /* AUDIT_UA_*: whether the caller found user_agent credential-shaped */
        int user_agent_judged;
        uint64_t bytes_in; /* request body bytes received */
        const struct audit_header *headers;
        size_t n_headers;
    } request;
    struct {
        const char *name;     /* NULL: nothing was forwarded -> `upstream` is null */
        int status;           /* 0: no response -> null */
        int64_t latency_ms;   /* < 0: unknown -> null */
        uint64_t bytes;       /* response body bytes received from the upstream */
        const char *identity; /* service account the token was minted for, "default"
                                   (baton's own identity) or "none" */
        const char *audience; /* audience of the minted token */
    } upstream;
    uint64_t bytes_out;            /* response body bytes sent to the client */
    int64_t duration_ms;           /* request head complete to response done; < 0 -> null */
    struct {                       /* a signed URL (signurl.h) minted or used; written
                                   as "link" only when op is set */
        const char *op;            /* "mint" | "use" */
        const char *id;            /* link id, 32 hex (never the signature); NULL: none
                                   (a refused mint, a malformed link) */
        const char *method, *path; /* what the link is for (path: with its query) */
        size_t path_len;
        const char *kid, *minter;
        int64_t exp;   /* unix seconds */
        unsigned uses; /* 0: any number until exp */
    } link;
};

/* A queue slot held for one request; see audit_reserve. Caller-allocated. */
struct audit_reservation {
    bool slot;
};

struct audit_stats {
    uint64_t queue_depth; /* slots reserved or queued now */
    uint64_t written;     /* request records written */
    uint64_t markers;     /* open, rotate, lost and checkpoint records written */
    uint64_t checkpoints; /* of which checkpoints */
    uint64_t bytes;       /* bytes written, newlines included */
    uint64_t fsyncs;
    uint64_t rotations;
    uint64_t failures; /* write, fsync, open or rename errors */
    uint64_t lost;     /* records never written (write failure, or queue full with allow) */
    uint64_t refused;  /* audit_reserve refusals (deny) */
    bool healthy;
    /* the witness (audit_witness.h); all 0 without one */
    uint64_t witness_written, witness_existing, witness_conflicts, witness_failures,
        witness_dropped, witness_pending;
};

struct audit_witness;

/* At close, the witness gets this long to take the final checkpoint: with
 * Cloud Run's 10 s between SIGTERM and SIGKILL and the default 8 s drain,
 * 1.5 s keeps the whole shutdown inside the window. */
#define AUDIT_WITNESS_CLOSE_MS 1500u

/* What audit_open_with adds to audit_open. */
struct audit_open_opts {
    const char *instance_id;       /* the metadata server's instance id (borrowed), NULL: none */
    struct audit_witness *witness; /* taken over, even on failure; NULL: none */
};

/*
 * Opens (or creates) the log, continues the chain from its last record or
 * starts a new one, writes an `open` record durably, and starts the writer
 * thread. A torn last line is truncated (and described in the open record).
 * Fails (NULL, message in err) when the file cannot be opened or written, its
 * last complete line is not an audit record, the signing key is not an Ed25519
 * PEM private key, or a record_headers entry names a secret-bearing header
 * (Authorization, Cookie, any name with token, key, secret, auth, cookie,
 * session, password, credential, signature or assertion in it).
 * Sets SIGXFSZ to ignored, so a file size limit is a write error (EFBIG), and
 * for path "-" SIGPIPE, so a closed stdout is a write error (EPIPE).
 * `cfg` is copied; the returned log is owned, freed by audit_close.
 */
struct audit_log *audit_open(const struct cfg_audit *cfg, char *err, size_t errlen);

/*
 * As audit_open, and: the open record's `instance` carries opts->instance_id
 * (K_SERVICE, K_REVISION and K_CONFIGURATION come from the environment), and
 * the open record and every checkpoint, once durable per the fsync mode, are
 * handed to opts->witness. For a file, a run marker next to it
 * (`.<file>.baton-run`) is written now and removed by audit_close: finding
 * one at open means the previous run stopped uncleanly, which the open
 * record's `unclean_stop` declares (docs/audit.md "Unclean stops"). opts may
 * be NULL.
 */
struct audit_log *audit_open_with(const struct cfg_audit *cfg, const struct audit_open_opts *opts,
                                  char *err, size_t errlen);

/*
 * Reserves a queue slot before the request is forwarded. Returns 0, or -1 when
 * the request must be refused (503 audit_unavailable, nothing forwarded): with
 * on_failure "deny", the log is failing or the queue is full. With "allow" it
 * always returns 0, and rsv->slot says whether a slot was obtained.
 */
int audit_reserve(struct audit_log *log, struct audit_reservation *rsv);
/* Gives back an unused reservation (a request that will not be recorded). */
void audit_release(struct audit_log *log, struct audit_reservation *rsv);

/*
 * Formats `rec` (borrowed, only during the call) and queues it; never waits on
 * disk. `rsv` is a reservation from audit_reserve (consumed) or NULL (a slot
 * is taken if one is free). Returns 0 when queued: `durable(arg, ok)` then
 * runs once on the writer thread, ok=1 after the record is written and, with
 * fsync always or batch, fsynced; ok=0 when it was lost. Returns -1 when no
 * slot was available (counted as lost; `durable` is not called). `durable`
 * may be NULL; it must not block or call back into this log.
 */
int audit_submit(struct audit_log *log, struct audit_reservation *rsv,
                 const struct audit_record *rec, void (*durable)(void *arg, int ok), void *arg);

/* False while records cannot be written (until a retry succeeds). */
bool audit_healthy(const struct audit_log *log);

/* Asks the writer to reopen `path` (after logrotate renamed it): it closes the
 * old file with a checkpoint and continues the chain in the new one. No-op when
 * the path still names the open file, and for stdout. */
void audit_reopen(struct audit_log *log);

void audit_stats(const struct audit_log *log, struct audit_stats *out);

/* The Ed25519 public key checkpoints are signed with, as SPKI PEM (borrowed,
 * valid until audit_close), or NULL without a signing key. */
const char *audit_public_key_pem(const struct audit_log *log);
/* The raw 32-byte key and its id (hex SHA-256 of the raw key, the `key_id`
 * of checkpoints). Return 0, or -1 without a signing key. */
int audit_public_key_raw(const struct audit_log *log, unsigned char out[32]);
const char *audit_key_id(const struct audit_log *log);
/* The chain's `log` id (32 hex), fixed from audit_open to audit_close and
 * kept across rotations (borrowed, valid until audit_close; any thread). */
const char *audit_log_id(const struct audit_log *log);

/*
 * Drains the queue (every submitted record is written and its callback run),
 * writes a final checkpoint, fsyncs whatever the mode, closes the file and
 * frees the log. Call after every worker stopped submitting. NULL is a no-op.
 */
void audit_close(struct audit_log *log);

/* ---- record format, shared by the writer, the verifier and the tests ---- */

/*
 * The body of a request record (the members after `log`, without the closing
 * brace), as the writer will put it on the line. Header names must be in
 * `allowed` (case-insensitive) and not secret-bearing; values are capped at
 * AUDIT_HEADER_VALUE_MAX escaped bytes and redacted when they look like a
 * credential. Returns an owned string; *len is its length.
 */
char *audit_record_body(const struct audit_record *rec, char *const *allowed, size_t n_allowed,
                        size_t *len);

/*
 * The bytes a checkpoint signs: "baton-audit-checkpoint/1\n" then log id,
 * seq, head (the checkpoint's prev), ts and key_id, each on its own line.
 * Returns the length written into out (cap at least 256), or 0 when a field
 * is too long.
 */
size_t audit_checkpoint_message(char *out, size_t cap, const char *log_id, uint64_t seq,
                                const char *head, const char *ts, const char *key_id);

/*
 * A whole checkpoint line (without newline) as the writer writes it and the
 * verifier expects it byte for byte. `sig_hex` is the 128-hex Ed25519
 * signature of audit_checkpoint_message. Returns its length, 0 if cap is short.
 */
size_t audit_checkpoint_line(char *out, size_t cap, const char *log_id, uint64_t seq,
                             const char *prev, const char *ts, const char *key_id,
                             const char *sig_hex);

/* ---- streaming verifier (audit_verify.c) ---- */

enum audit_break {
    AUDIT_OK = 0,
    AUDIT_BREAK_MALFORMED,     /* not a JSON object, or a member missing or mistyped */
    AUDIT_BREAK_TORN,          /* a line without its newline at the end of a file */
    AUDIT_BREAK_TOO_LONG,      /* a line longer than AUDIT_LINE_MAX */
    AUDIT_BREAK_EDITED,        /* a record's bytes no longer hash to the next `prev` */
    AUDIT_BREAK_MISSING,       /* seq jumps forward: records removed */
    AUDIT_BREAK_REORDERED,     /* records out of order */
    AUDIT_BREAK_INSERTED,      /* seq repeats or goes back: a record added */
    AUDIT_BREAK_SPLICED,       /* a record of another log (log id differs) */
    AUDIT_BREAK_BAD_START,     /* a file set that does not begin at an open or rotate record */
    AUDIT_BREAK_BAD_SIGNATURE, /* a checkpoint that does not verify with --pubkey */
    AUDIT_BREAK_UNSIGNED_TAIL, /* records after the last checkpoint, with --pubkey */
    AUDIT_BREAK_EMPTY,         /* no record at all */
    AUDIT_BREAK_FORKED, /* two different records with one seq (inputs, or input and witness) */
    AUDIT_BREAK_MISSING_CHAIN, /* --witness: a witnessed chain absent from the inputs */
};

/* Stable name of a break kind ("edited", "unsigned_tail", ...). */
const char *audit_break_name(enum audit_break b);

struct audit_verify_result {
    enum audit_break kind; /* AUDIT_OK when everything verified */
    char file[256];        /* where the break is (file name as given, cut) */
    uint64_t line;         /* 1-based line number in that file, 0: none */
    uint64_t seq;          /* seq of the record concerned */
    bool has_seq;
    char message[512]; /* what is wrong, in words */
    /* summary, valid whatever the outcome (up to the break) */
    uint64_t files, records, requests, checkpoints, opens, rotates, losts, chains;
    uint64_t bytes;
    uint64_t first_seq, last_seq;
    bool from_genesis; /* the set starts with a genesis record */
    char log_id[33];
    char first_ts[32], last_ts[32];
    char head[65];       /* SHA-256 hex of the last line */
    uint64_t signed_seq; /* seq of the last verified checkpoint */
    bool signatures_checked;
    char key_id[65];           /* of the --pubkey key, "" without */
    char unit;                 /* what `line` counts: 'l' lines, 'e' LogEntry entries, 0 none */
    uint64_t unsigned_records; /* --live: records after their chain's last checkpoint */
    uint64_t witnessed;        /* --witness: records found equal to the witness's */
    uint64_t witness_chains;
};

/* What the verifier learned of one chain (a log id), in the order met. */
struct audit_chain_summary {
    char log_id[33];
    char instance[256]; /* from its last open record ("host=... pid=..."), "" if none */
    uint64_t first_seq, last_seq, records, requests;
    bool from_genesis; /* it begins with its genesis record (seq 0) */
    char first_ts[32], last_ts[32];
    char head[65];       /* SHA-256 hex of its last record */
    bool has_checkpoint; /* a checkpoint was read (signed with --pubkey) */
    uint64_t checkpoint_seq;
    char checkpoint_ts[32];
    uint64_t unsigned_after; /* records after its last checkpoint (all of them without one) */
    uint64_t unclean_stops;  /* open records that declare an unclean stop before them */
    char unclean[256];       /* the last one's unclean_stop members, "name=value ..." */
};

/* Verify options; see audit_verifier_set. */
struct audit_verify_opts {
    bool live;         /* records after the last checkpoint are reported, not a break */
    bool from_genesis; /* every chain must begin at seq 0 */
    const struct audit_vwitness *witness; /* borrowed, valid until audit_verifier_free; or NULL */
};

struct audit_verifier;

/*
 * A verifier; `pubkey_pem` (len bytes, borrowed) is an Ed25519 public (or
 * private) key PEM, or NULL: checkpoints are then checked for form but not
 * signature, and no unsigned tail is reported. NULL with err on a bad key.
 */
struct audit_verifier *audit_verifier_new(const char *pubkey_pem, size_t len, char *err,
                                          size_t errlen);
/* Starts the next file of the set, named `name` in messages (copied). */
void audit_verifier_begin_file(struct audit_verifier *v, const char *name);
/* Feeds the next bytes of the current file. Returns 0 to go on, 1 once a break
 * was found (further input is ignored). Memory stays within AUDIT_LINE_MAX. */
int audit_verifier_feed(struct audit_verifier *v, const void *data, size_t len);
/* Ends the current file (a last line without newline is torn). 0 / 1 as feed. */
int audit_verifier_end_file(struct audit_verifier *v);
/* Ends the set (unsigned tail, empty set). 0 when verified, 1 on a break. */
int audit_verifier_finish(struct audit_verifier *v);
/* Borrowed, valid until audit_verifier_free. */
const struct audit_verify_result *audit_verifier_result(const struct audit_verifier *v);
void audit_verifier_free(struct audit_verifier *v);

struct audit_vwitness;
/* Sets the options (copied) before the first record. */
void audit_verifier_set(struct audit_verifier *v, const struct audit_verify_opts *o);
/* The chains read so far, in the order met (*n of them); borrowed, valid
 * until the next call into v. */
const struct audit_chain_summary *audit_verifier_chains(const struct audit_verifier *v, size_t *n);
/*
 * Records in chain order rather than as file bytes (LogEntry exports,
 * audit_verify_index.c): begin_chain ends the chain before (its unsigned
 * tail, a pending gap) and starts one with no record before it; record feeds
 * one record line (len bytes, no newline; borrowed) found at `file` (copied),
 * line or entry `no` (unit 'l' or 'e'). 0 to go on, 1 once a break was found.
 */
int audit_verifier_begin_chain(struct audit_verifier *v);
int audit_verifier_record(struct audit_verifier *v, const char *file, char unit, uint64_t no,
                          const char *line, size_t len);
/* Records a break found outside the verifier (a fork between duplicates, an
 * unreadable record); the first break wins. */
void audit_verifier_fail(struct audit_verifier *v, enum audit_break kind, const char *file,
                         char unit, uint64_t no, bool has_seq, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

#endif
