/*
 * audit_verify_witness.c: reading a witness directory for `baton audit
 * verify --witness` (audit_verify_witness.h).
 *
 * The witness holds a copy of each chain's open record and checkpoints where
 * whoever can rewrite the logs cannot take it back (a Bucket-Locked Cloud
 * Storage bucket). Each file is read once, checked to be the record its path
 * names, and kept as its SHA-256; chains and their records are sorted so the
 * verifier finds (log id, seq) by binary search for every record it reads.
 */
#include "audit_verify_witness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "audit_canon.h"
#include "util.h"

struct wrec {
    uint64_t seq;
    unsigned char hash[32];
};

struct wchain {
    char log_id[33];
    char instance[256];
    uint64_t instance_seq; /* seq of the open record instance came from */
    struct wrec *recs;
    size_t n, cap;
};

struct audit_vwitness {
    char *dir;
    struct wchain *chains;
    size_t n, cap;
    uint64_t skipped;
};

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[n] == '\0';
}

/* "<20 digits>.json" -> seq */
static bool seq_name(const char *s, uint64_t *seq)
{
    uint64_t v = 0;
    if (strlen(s) != 25 || strcmp(s + 20, ".json"))
        return false;
    for (int i = 0; i < 20; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *seq = v;
    return true;
}

static int cmp_wrec(const void *a, const void *b)
{
    const struct wrec *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_chain(const void *a, const void *b)
{
    return strcmp(((const struct wchain *)a)->log_id, ((const struct wchain *)b)->log_id);
}

/* Reads one witness file into the chain. 0, or -1 with err. */
static int read_one(struct wchain *c, const char *path, uint64_t seq, char *err, size_t errlen)
{
    char *data = NULL, log_id[33];
    size_t len = 0;
    uint64_t s;
    int rc = -1;

    if (read_file_capped(path, AUDIT_LINE_MAX + 1, &data, &len) != 0) {
        errbuf_set(err, errlen, "--witness %s: %s", path,
                   errno == EFBIG ? "longer than a record" : strerror(errno));
        goto out;
    }
    if (len && data[len - 1] == '\n')
        len--;
    if (audit_canon_key(data, len, log_id, &s) != 0 || s != seq || strcmp(log_id, c->log_id) ||
        memchr(data, '\n', len)) {
        errbuf_set(err, errlen,
                   "--witness %s: not the record of log %s seq %" PRIu64
                   " (one record line, as the writer wrote it)",
                   path, c->log_id, seq);
        goto out;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->recs = xrealloc(c->recs, c->cap * sizeof(*c->recs));
    }
    c->recs[c->n].seq = seq;
    sha256_raw(data, len, c->recs[c->n].hash);
    c->n++;
    if (strstr(data, ",\"kind\":\"open\",") && (!c->instance[0] || seq < c->instance_seq)) {
        json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
        audit_canon_instance(j, c->instance, sizeof(c->instance));
        c->instance_seq = seq;
        json_decref(j);
    }
    rc = 0;
out:
    free(data);
    return rc;
}

struct audit_vwitness *audit_vwitness_load(const char *dir, char *err, size_t errlen)
{
    struct audit_vwitness *w = xcalloc(1, sizeof(*w));
    DIR *d = opendir(dir), *sub = NULL;
    struct dirent *e, *f;

    w->dir = xstrdup(dir);
    if (!d) {
        errbuf_set(err, errlen, "--witness %s: %s", dir, strerror(errno));
        goto fail;
    }
    while ((e = readdir(d))) {
        char *cdir;
        struct wchain *c;
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        if (strlen(e->d_name) != 32 || !all_hex(e->d_name, 32)) {
            w->skipped++;
            continue;
        }
        cdir = xasprintf("%s/%s", dir, e->d_name);
        sub = opendir(cdir);
        if (!sub) {
            if (errno == ENOTDIR) {
                w->skipped++;
                free(cdir);
                continue;
            }
            errbuf_set(err, errlen, "--witness %s: %s", cdir, strerror(errno));
            free(cdir);
            goto fail;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 8;
            w->chains = xrealloc(w->chains, w->cap * sizeof(*w->chains));
        }
        c = &w->chains[w->n++];
        memset(c, 0, sizeof(*c));
        memcpy(c->log_id, e->d_name, 33);
        while ((f = readdir(sub))) {
            uint64_t seq;
            char *path;
            int rc;
            if (f->d_name[0] == '.')
                continue;
            if (!seq_name(f->d_name, &seq)) {
                w->skipped++;
                continue;
            }
            path = xasprintf("%s/%s", cdir, f->d_name);
            rc = read_one(c, path, seq, err, errlen);
            free(path);
            if (rc != 0) {
                free(cdir);
                goto fail;
            }
        }
        closedir(sub);
        sub = NULL;
        free(cdir);
        if (!c->n) { /* an empty chain directory witnesses nothing */
            free(c->recs);
            w->n--;
            continue;
        }
        qsort(c->recs, c->n, sizeof(*c->recs), cmp_wrec);
    }
    closedir(d);
    qsort(w->chains, w->n, sizeof(*w->chains), cmp_chain);
    return w;
fail:
    if (sub)
        closedir(sub);
    if (d)
        closedir(d);
    audit_vwitness_free(w);
    return NULL;
}

void audit_vwitness_free(struct audit_vwitness *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->chains[i].recs);
    free(w->chains);
    free(w->dir);
    free(w);
}

static const struct wchain *find_chain(const struct audit_vwitness *w, const char *log_id)
{
    struct wchain key;
    snprintf(key.log_id, sizeof(key.log_id), "%s", log_id);
    return bsearch(&key, w->chains, w->n, sizeof(*w->chains), cmp_chain);
}

int audit_vwitness_compare(const struct audit_vwitness *w, const char *log_id, uint64_t seq,
                           const char *line, size_t len, char *path, size_t pathlen)
{
    const struct wchain *c = find_chain(w, log_id);
    struct wrec key = {.seq = seq}, *r;
    unsigned char h[32];

    if (!c)
        return 0;
    r = bsearch(&key, c->recs, c->n, sizeof(*c->recs), cmp_wrec);
    if (!r)
        return 0;
    sha256_raw(line, len, h);
    if (!memcmp(h, r->hash, sizeof(h)))
        return 1;
    audit_vwitness_path(w, (size_t)(c - w->chains), seq, path, pathlen);
    return -1;
}

size_t audit_vwitness_chains(const struct audit_vwitness *w)
{
    return w->n;
}

void audit_vwitness_chain(const struct audit_vwitness *w, size_t i,
                          struct audit_vwitness_chain *out)
{
    const struct wchain *c = &w->chains[i];
    out->log_id = c->log_id;
    out->instance = c->instance;
    out->first_seq = c->recs[0].seq;
    out->last_seq = c->recs[c->n - 1].seq;
    out->records = c->n;
}

void audit_vwitness_path(const struct audit_vwitness *w, size_t i, uint64_t seq, char *out,
                         size_t cap)
{
    snprintf(out, cap, "%s/%s/%020" PRIu64 ".json", w->dir, w->chains[i].log_id, seq);
}

uint64_t audit_vwitness_skipped(const struct audit_vwitness *w)
{
    return w->skipped;
}
