/*
 * fuzz_logentry.c: the Cloud Logging export reader on arbitrary bytes: the
 * splitter (a JSON array, or newline-delimited objects) and, for each entry,
 * the LogEntry-to-record rebuild in the canonical form.
 *
 * The first byte chooses the shape (high bit: array) and how the bytes are
 * cut into feed chunks (1..128 bytes, so entries spanning chunks are
 * exercised). Invariants: an entry handed over is at most AUDIT_LE_ENTRY_MAX
 * bytes and starts with '{'; a rebuilt record is printable ASCII, and
 * rebuilding it from its own parse gives the same bytes (the form is a
 * fixed point). Seeds: exports of a short signed log as gcloud and a sink
 * write them, and broken ones.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "audit_canon.h"
#include "audit_logentry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char rec[AUDIT_LINE_MAX + 1], again[AUDIT_LINE_MAX + 1];

static int on_entry(void *arg, const char *entry, size_t len, uint64_t no)
{
    char why[256];
    size_t rlen, alen;
    (void)arg;
    if (!len || len > AUDIT_LE_ENTRY_MAX || entry[0] != '{' || !no)
        __builtin_trap();
    if (audit_le_record(entry, len, rec, sizeof(rec), &rlen, why, sizeof(why)) == AUDIT_LE_OK) {
        json_t *j;
        if (rlen >= sizeof(rec))
            __builtin_trap();
        for (size_t i = 0; i < rlen; i++)
            if ((unsigned char)rec[i] < 0x20 || (unsigned char)rec[i] > 0x7e)
                __builtin_trap();
        j = json_loadb(rec, rlen, JSON_REJECT_DUPLICATES, NULL);
        if (!j || audit_canon_record(j, again, sizeof(again), &alen, why, sizeof(why)) != 0 ||
            alen != rlen || memcmp(rec, again, rlen))
            __builtin_trap();
        json_decref(j);
    } else if (!why[0]) {
        __builtin_trap(); /* a refusal says why */
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct audit_le_reader *r;
    char why[256];
    size_t chunk;
    int rc = 0;

    if (size < 1)
        return 0;
    chunk = (size_t)(data[0] & 0x7f) + 1;
    r = audit_le_new(data[0] & 0x80);
    for (size_t off = 1; off < size && !rc; off += chunk) {
        why[0] = '\0';
        rc = audit_le_feed(r, data + off, size - off < chunk ? size - off : chunk, on_entry, NULL,
                           why, sizeof(why));
        if (rc < 0 && !why[0])
            __builtin_trap();
    }
    if (!rc && audit_le_end(r, why, sizeof(why)) != 0 && !why[0])
        __builtin_trap();
    audit_le_free(r);
    return 0;
}
