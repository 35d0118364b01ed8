/*
 * audit_verify_index.c: the index and spool behind LogEntry verification
 * (audit_verify_index.h).
 *
 * 32 bytes a record: 1,000,000 records index in 32 MB whatever their size,
 * while their bytes wait in the spool file (the page cache's, not ours).
 * Chains are found by log id through an open-addressing table seeded at
 * random, so crafted log ids cannot make the lookups quadratic.
 */
#include "audit_verify_index.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "audit_canon.h"
#include "util.h"

struct ientry {
    uint64_t seq;
    uint64_t off; /* in the spool */
    uint32_t len;
    uint32_t chain; /* index into ids; after sorting, the chain's rank */
    uint32_t file;
    uint32_t no; /* line or entry number, saturated at UINT32_MAX */
};

struct audit_index {
    FILE *spool;
    uint64_t spool_size;
    struct ientry *e;
    size_t n, cap;
    char (*ids)[33]; /* log id per chain */
    uint32_t n_ids, cap_ids;
    uint32_t *table; /* chain index + 1, 0: empty */
    size_t table_cap;
    uint64_t seed;
    uint32_t last; /* chain of the last record added: runs are common */
    bool have_last;
    char *units; /* per input file: 'l' or 'e' */
    uint32_t n_units;
    uint64_t duplicates;
};

struct audit_index *audit_index_new(char *err, size_t errlen)
{
    struct audit_index *ix = xcalloc(1, sizeof(*ix));
    const char *dir = getenv("TMPDIR");
    char *path = xasprintf("%s/baton-verify-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);

    if (fd < 0 || !(ix->spool = fdopen(fd, "w+"))) {
        errbuf_set(err, errlen, "a spool file in %s: %s", dir && *dir ? dir : "/tmp",
                   strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        free(path);
        free(ix);
        return NULL;
    }
    unlink(path); /* gone with the process, however it ends */
    free(path);
    if (RAND_bytes((unsigned char *)&ix->seed, sizeof(ix->seed)) != 1)
        ix->seed = (uint64_t)mono_ns();
    return ix;
}

void audit_index_free(struct audit_index *ix)
{
    if (!ix)
        return;
    if (ix->spool)
        fclose(ix->spool);
    free(ix->e);
    free(ix->ids);
    free(ix->table);
    free(ix->units);
    free(ix);
}

static uint64_t hash_id(uint64_t seed, const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (int i = 0; i < 32; i++) {
        h ^= (unsigned char)id[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static void table_put(struct audit_index *ix, uint32_t chain)
{
    size_t mask = ix->table_cap - 1, i = hash_id(ix->seed, ix->ids[chain]) & mask;
    while (ix->table[i])
        i = (i + 1) & mask;
    ix->table[i] = chain + 1;
}

static uint32_t chain_of(struct audit_index *ix, const char *id)
{
    size_t mask, i;

    if (ix->have_last && !memcmp(ix->ids[ix->last], id, 32))
        return ix->last;
    if ((size_t)ix->n_ids * 2 >= ix->table_cap) {
        ix->table_cap = ix->table_cap ? 2 * ix->table_cap : 64;
        free(ix->table);
        ix->table = xcalloc(ix->table_cap, sizeof(*ix->table));
        for (uint32_t c = 0; c < ix->n_ids; c++)
            table_put(ix, c);
    }
    mask = ix->table_cap - 1;
    for (i = hash_id(ix->seed, id) & mask; ix->table[i]; i = (i + 1) & mask)
        if (!memcmp(ix->ids[ix->table[i] - 1], id, 32))
            goto found;
    if (ix->n_ids == ix->cap_ids) {
        ix->cap_ids = ix->cap_ids ? 2 * ix->cap_ids : 16;
        ix->ids = xrealloc(ix->ids, ix->cap_ids * sizeof(*ix->ids));
    }
    memcpy(ix->ids[ix->n_ids], id, 33);
    ix->table[i] = ++ix->n_ids;
found:
    ix->last = ix->table[i] - 1;
    ix->have_last = true;
    return ix->last;
}

int audit_index_add(struct audit_index *ix, uint32_t file, char unit, uint64_t no, const char *line,
                    size_t len, char *why, size_t whylen)
{
    char id[33];
    uint64_t seq;
    struct ientry *e;

    if (audit_canon_key(line, len, id, &seq) != 0) {
        snprintf(why, whylen,
                 "not a record: it does not begin with v 1, seq, prev and log "
                 "(\"{\\\"v\\\":1,\\\"seq\\\":N,\\\"prev\\\":...,\\\"log\\\":...,\")");
        return -1;
    }
    if (len > AUDIT_LINE_MAX) {
        snprintf(why, whylen, "a record longer than %d bytes", AUDIT_LINE_MAX);
        return -1;
    }
    if (fwrite(line, 1, len, ix->spool) != len) {
        snprintf(why, whylen, "writing the spool file: %s", strerror(errno));
        return -2;
    }
    while (ix->n_units <= file) {
        ix->units = xrealloc(ix->units, ix->n_units + 1);
        ix->units[ix->n_units++] = 'l';
    }
    ix->units[file] = unit;
    if (ix->n == ix->cap) {
        ix->cap = ix->cap ? 2 * ix->cap : 4096;
        ix->e = xrealloc(ix->e, ix->cap * sizeof(*ix->e));
    }
    e = &ix->e[ix->n++];
    e->seq = seq;
    e->off = ix->spool_size;
    e->len = (uint32_t)len;
    e->chain = chain_of(ix, id);
    e->file = file;
    e->no = no > UINT32_MAX ? UINT32_MAX : (uint32_t)no;
    ix->spool_size += len;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct ientry *x = a, *y = b;
    if (x->chain != y->chain)
        return x->chain < y->chain ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->no < y->no ? -1 : x->no > y->no;
}

static int cmp_rank(const void *a, const void *b, void *ids)
{
    const char(*id)[33] = ids;
    return strcmp(id[*(const uint32_t *)a], id[*(const uint32_t *)b]);
}

static int read_back(struct audit_index *ix, const struct ientry *e, char *buf, char *err,
                     size_t errlen)
{
    size_t got = 0;
    while (got < e->len) {
        ssize_t n = pread(fileno(ix->spool), buf + got, e->len - got, (off_t)(e->off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errbuf_set(err, errlen, "reading the spool file: %s",
                       n < 0 ? strerror(errno) : "it shrank");
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

int audit_index_verify(struct audit_index *ix, struct audit_verifier *v, const char *const *names,
                       char *err, size_t errlen)
{
    uint32_t *order = NULL, *rank = NULL;
    char *a = NULL, *b = NULL;
    const struct ientry *kept = NULL;
    uint32_t chain = UINT32_MAX;
    int rc = -1;

    if (fflush(ix->spool) != 0) {
        errbuf_set(err, errlen, "writing the spool file: %s", strerror(errno));
        goto out;
    }
    /* chains in log id order: rank each, then sort records by (rank, seq) */
    order = xcalloc(ix->n_ids + 1, sizeof(*order));
    rank = xcalloc(ix->n_ids + 1, sizeof(*rank));
    for (uint32_t c = 0; c < ix->n_ids; c++)
        order[c] = c;
    qsort_r(order, ix->n_ids, sizeof(*order), cmp_rank, ix->ids);
    for (uint32_t r = 0; r < ix->n_ids; r++)
        rank[order[r]] = r;
    for (size_t i = 0; i < ix->n; i++)
        ix->e[i].chain = rank[ix->e[i].chain];
    qsort(ix->e, ix->n, sizeof(*ix->e), cmp_entry);

    a = xmalloc(AUDIT_LINE_MAX + 1);
    b = xmalloc(AUDIT_LINE_MAX + 1);
    for (size_t i = 0; i < ix->n; i++) {
        const struct ientry *e = &ix->e[i];
        char unit = ix->units[e->file];
        if (kept && e->chain == kept->chain && e->seq == kept->seq) {
            if (read_back(ix, e, b, err, errlen) != 0)
                goto out;
            if (e->len == kept->len && !memcmp(a, b, e->len)) {
                ix->duplicates++;
                continue;
            }
            audit_verifier_fail(v, AUDIT_BREAK_FORKED, names[e->file], unit, e->no, true, e->seq,
                                "two different records with seq %" PRIu64 " of log %s: this one "
                                "and %s:%s%" PRIu32 "; one of them was forged or edited",
                                e->seq, ix->ids[order[e->chain]], names[kept->file],
                                ix->units[kept->file] == 'e' ? "entry " : "", kept->no);
            rc = 0;
            goto out;
        }
        if (e->chain != chain) {
            chain = e->chain;
            if (audit_verifier_begin_chain(v))
                break;
        }
        if (read_back(ix, e, a, err, errlen) != 0)
            goto out;
        kept = e;
        if (audit_verifier_record(v, names[e->file], unit, e->no, a, e->len))
            break;
    }
    rc = 0;
out:
    free(order);
    free(rank);
    free(a);
    free(b);
    return rc;
}

uint64_t audit_index_records(const struct audit_index *ix)
{
    return ix->n;
}

uint64_t audit_index_duplicates(const struct audit_index *ix)
{
    return ix->duplicates;
}
