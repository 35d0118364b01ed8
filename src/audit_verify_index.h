/*
 * audit_verify_index.h: records that arrive in any order, from any number
 * of chains, some twice (Cloud Logging exports), put in chain order for the
 * verifier (docs/audit.md "Verify what Cloud Logging kept").
 *
 * Each record line is appended to a spool file (an unlinked temporary file
 * in $TMPDIR, or /tmp) and indexed by (chain, seq) in 32 bytes of memory;
 * the index is sorted, identical duplicates are dropped, two different
 * records with one (log id, seq) are a fork, and each chain's records are
 * read back from the spool in seq order and fed to audit_verifier_record.
 * Memory grows with the number of records, never with their bytes.
 */
#ifndef BATON_AUDIT_VERIFY_INDEX_H
#define BATON_AUDIT_VERIFY_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"

struct audit_index;

/* Owned (audit_index_free), or NULL with err when no spool file can be made. */
struct audit_index *audit_index_new(char *err, size_t errlen);
void audit_index_free(struct audit_index *ix);

/*
 * Adds a record line (len bytes, no newline; borrowed) found in input `file`
 * (an index into the names given to audit_index_verify) at line or entry
 * `no` (unit 'l' or 'e'). Returns 0; -1 with why when the line does not
 * begin as every record does ({"v":1,"seq":N,"prev":...,"log":...,): a
 * break for the caller to report); -2 with why on a spool write error.
 */
int audit_index_add(struct audit_index *ix, uint32_t file, char unit, uint64_t no, const char *line,
                    size_t len, char *why, size_t whylen);

/*
 * Feeds every chain, in log id order, its records in seq order, to v (one
 * audit_verifier_begin_chain each). `names[file]` names the inputs in
 * messages. Returns 0 (the verdict is v's), or -1 with err on a spool read
 * error.
 */
int audit_index_verify(struct audit_index *ix, struct audit_verifier *v, const char *const *names,
                       char *err, size_t errlen);

/* Records added, and identical duplicates dropped by audit_index_verify. */
uint64_t audit_index_records(const struct audit_index *ix);
uint64_t audit_index_duplicates(const struct audit_index *ix);

#endif
