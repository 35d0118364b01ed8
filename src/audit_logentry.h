/*
 * audit_logentry.h: audit records as Cloud Logging gives them back
 * (docs/audit.md "Verify what Cloud Logging kept").
 *
 * Two shapes, both streamed: `gcloud logging read --format=json` writes one
 * JSON array of LogEntry objects (pretty-printed, newest first); a log sink
 * to Cloud Storage writes newline-delimited LogEntry objects (any order,
 * some twice). The splitter cuts either into one LogEntry's text at a time
 * without holding more than that entry (at most AUDIT_LE_ENTRY_MAX bytes);
 * audit_le_record then rebuilds the record line baton wrote from the entry's
 * jsonPayload (audit_canon.h).
 */
#ifndef BATON_AUDIT_LOGENTRY_H
#define BATON_AUDIT_LOGENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Cloud Logging refuses entries over 256 KB; an export pretty-prints them
 * (indentation), so allow four times that. */
#define AUDIT_LE_ENTRY_MAX (1u << 20)

struct audit_le_reader;

/*
 * Called with each whole top-level object: `entry` (len bytes, borrowed for
 * the call), `no` its 1-based position in the input. Returns 0 to go on, or
 * nonzero to stop (audit_le_feed then returns 1).
 */
typedef int (*audit_le_cb)(void *arg, const char *entry, size_t len, uint64_t no);

/* A splitter: `array` for a JSON array of objects, else a sequence of objects
 * separated by whitespace (newline-delimited). Owned; audit_le_free. */
struct audit_le_reader *audit_le_new(bool array);
/*
 * Feeds the next bytes. Returns 0 to go on, 1 when the callback stopped it,
 * -1 when the bytes are not of the shape (why: what and where, e.g. "entry 3
 * is not a JSON object", "an entry longer than 1 MiB").
 */
int audit_le_feed(struct audit_le_reader *r, const void *data, size_t len, audit_le_cb cb,
                  void *arg, char *why, size_t whylen);
/* The input ended: 0, or -1 with why (an unterminated entry or array). */
int audit_le_end(struct audit_le_reader *r, char *why, size_t whylen);
void audit_le_free(struct audit_le_reader *r);

enum audit_le_status {
    AUDIT_LE_OK = 0,
    AUDIT_LE_NOT_ENTRY,  /* not JSON, not an object, not LogEntry-shaped, no jsonPayload */
    AUDIT_LE_BAD_RECORD, /* a jsonPayload that cannot be a record baton wrote */
};

/*
 * Rebuilds the record line from one LogEntry's text: its jsonPayload, plus
 * the members Cloud Logging lifts out of a payload into the entry when they
 * show it held them (a severity other than DEFAULT, httpRequest,
 * sourceLocation, operation: a record never holds one, so each makes the
 * record fail), in the canonical form. Writes the line (no newline) into
 * out (cap bytes), its length in *len.
 */
enum audit_le_status audit_le_record(const char *entry, size_t elen, char *out, size_t cap,
                                     size_t *len, char *why, size_t whylen);

#endif
