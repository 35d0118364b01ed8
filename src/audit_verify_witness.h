/*
 * audit_verify_witness.h: a witness directory as `baton audit verify
 * --witness DIR` reads it (docs/audit.md "Witness").
 *
 * Layout: DIR/<log id, 32 hex>/<seq, 20 digits>.json, each file the exact
 * line of one record (an `open` record or a checkpoint), with or without its
 * newline: the directory the writer's witness fills, or a local copy of the
 * bucket (`gcloud storage cp -r gs://BUCKET/PREFIX DIR`). Other names are
 * counted and skipped. Only each record's SHA-256 is kept in memory.
 */
#ifndef BATON_AUDIT_VERIFY_WITNESS_H
#define BATON_AUDIT_VERIFY_WITNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct audit_vwitness;

/* Reads DIR. Owned (audit_vwitness_free), or NULL with err: DIR unreadable, a
 * witness file unreadable, longer than a record, not a record, or naming
 * another log id or seq than its path. */
struct audit_vwitness *audit_vwitness_load(const char *dir, char *err, size_t errlen);
void audit_vwitness_free(struct audit_vwitness *w);

/* Compares a record of the inputs with the witness: 0 when the witness has
 * no record at (log_id, seq), 1 when it has an equal one, -1 when its record
 * differs (its file's path written into path). */
int audit_vwitness_compare(const struct audit_vwitness *w, const char *log_id, uint64_t seq,
                           const char *line, size_t len, char *path, size_t pathlen);

struct audit_vwitness_chain {
    const char *log_id;   /* borrowed, valid until audit_vwitness_free */
    const char *instance; /* from its lowest witnessed open record, "" if none */
    uint64_t first_seq, last_seq, records;
};
size_t audit_vwitness_chains(const struct audit_vwitness *w);
void audit_vwitness_chain(const struct audit_vwitness *w, size_t i,
                          struct audit_vwitness_chain *out);
/* The path of the witness file of (chain i, seq), into out. */
void audit_vwitness_path(const struct audit_vwitness *w, size_t i, uint64_t seq, char *out,
                         size_t cap);
/* Files in DIR that are not of the layout (skipped). */
uint64_t audit_vwitness_skipped(const struct audit_vwitness *w);

#endif
