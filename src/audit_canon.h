/*
 * audit_canon.h: the canonical form of an audit record (docs/audit.md
 * "Canonical form").
 *
 * The writer's line is a function of the record's JSON value alone: members
 * in a fixed order per kind (and per nested object), no whitespace, integers
 * in plain decimal (each within +-(2^53-1), so a double holds it exactly),
 * strings with `"` and `\` escaped by a backslash, bytes 0x00-0x1f and
 * 0x7f-0xff as `\u00xx` (lowercase hex) and every other byte as itself. So
 * a record that came back through a system that keeps only the value
 * (Cloud Logging's jsonPayload, a protobuf Struct: members in any order,
 * every number a double) can be rebuilt into the exact bytes the writer
 * hashed, and verified as written.
 */
#ifndef BATON_AUDIT_CANON_H
#define BATON_AUDIT_CANON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The largest magnitude of a number in a record: 2^53-1, the largest
 * integer below which every integer is a double (RFC 7493 section 2.2). */
#define AUDIT_NUMBER_MAX INT64_C(9007199254740991)

struct sb;
struct audit_record;
struct audit_fmt;
struct audit_member;

/* How the writer puts a member's value (after its `"name":`); false leaves the
 * member out of this record. audit_record.c's, for request records. */
typedef bool audit_put_fn(struct sb *b, const struct audit_record *r, const struct audit_fmt *f,
                          const struct audit_member *self);

/*
 * A member of a record in canonical order: its name and, for an object, its
 * own members (a table ending with a NULL name). The request record's table
 * is the writer's own (audit_request_members, audit_record.c): the writer
 * formats from it and the canonical form orders by it, so they cannot drift.
 * The tables of the other kinds are audit_canon.c's, with put NULL.
 */
/* Room for a member's rendered key: a member name is at most 27 bytes (a
 * longer one does not compile), so the writer copies a key whole. */
#define AUDIT_MEMBER_KEY 32

struct audit_member {
    const char *name;
    const struct audit_member *sub; /* its members when it is an object, else NULL */
    audit_put_fn *put;              /* NULL outside the request record */
    char key[AUDIT_MEMBER_KEY];     /* `,"name":`, rendered at compile time */
    size_t key_len;
};

#define AUDIT_MEMBER(name, sub, put)                                                     \
    {                                                                                    \
        name, sub, put, ",\"" name "\":",                                                \
            sizeof(",\"" name "\":") - 1 + 0 * sizeof(char[sizeof(name) <= 28 ? 1 : -1]) \
    }
#define AUDIT_MEMBERS_END       \
    {                           \
        NULL, NULL, NULL, "", 0 \
    }

/* The members of a request record after those every record has (v, seq,
 * prev, log, kind, ts), in the order written. */
extern const struct audit_member audit_request_members[];

/*
 * Writes the canonical line of `rec` (borrowed: a record's JSON value, as
 * jansson parsed it) into out (cap bytes, no newline, NUL-terminated), its
 * length in *len. Returns 0, or -1 with why (the value cannot be a record
 * baton wrote: an unknown kind or member, a number that is not an integer
 * or out of range, a character above U+00FF, a nested object where none
 * belongs, a line longer than cap-1).
 */
int audit_canon_record(const json_t *rec, char *out, size_t cap, size_t *len, char *why,
                       size_t whylen);

/*
 * Reads the log id and seq from a line in the canonical form's fixed prefix
 * `{"v":1,"seq":N,"prev":"<64 hex>","log":"<32 hex>",` (N without leading
 * zeros, at most AUDIT_NUMBER_MAX). Returns 0, or -1 when the line does not
 * begin so. Nothing else of the line is checked.
 */
int audit_canon_key(const char *line, size_t len, char log_id[33], uint64_t *seq);

/*
 * Describes the instance an `open` record names, as "name=value ..." from its
 * `instance` object (service, revision, configuration, id, host, pid,
 * started; null members left out), or from its host and pid when it has
 * none. Strings are cut and control bytes shown as '?'. Writes "" when
 * there is nothing to say; never fails.
 */
void audit_canon_instance(const json_t *open_rec, char *out, size_t cap);
/* The same for any object's scalar members (an open record's unclean_stop). */
void audit_canon_describe(const json_t *obj, char *out, size_t cap);

#endif
