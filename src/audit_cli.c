/*
 * audit_cli.c: `baton audit verify FILE... [--pubkey PEM]` and
 * `baton audit keygen --out PEM` (docs/spec.md "Command line", docs/audit.md).
 *
 * verify streams each file (or stdin for "-") through the audit verifier in
 * fixed-size chunks and prints a summary (exit 0) or the first break as
 * FILE:LINE: seq N: KIND: message (exit 1); usage and I/O errors exit 2.
 * keygen writes a new Ed25519 private key (PKCS#8 PEM, mode 0600, never over an
 * existing file) and prints its public key and key id.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit.h"
#include "cli.h"
#include "util.h"

#define CHUNK (1u << 20)
#define PUBKEY_FILE_MAX 65536

static void usage(FILE *out)
{
    fputs("usage: baton audit verify FILE... [--pubkey PEM]\n"
          "       baton audit keygen --out PEM\n",
          out);
}

/* Feeds one file; returns 0 (go on), 1 (break found), or -1 (I/O error). */
static int feed_file(struct audit_verifier *v, const char *name, char *buf)
{
    int fd = strcmp(name, "-") ? open(name, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    int rc = 0;
    ssize_t n;

    if (fd < 0) {
        fprintf(stderr, "baton: %s: %s\n", name, strerror(errno));
        return -1;
    }
    audit_verifier_begin_file(v, name);
    for (;;) {
        n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "baton: %s: %s\n", name, strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0) {
            rc = audit_verifier_end_file(v);
            break;
        }
        if (audit_verifier_feed(v, buf, (size_t)n)) {
            rc = 1;
            break;
        }
    }
    if (fd != STDIN_FILENO)
        close(fd);
    return rc;
}

static void print_summary(const struct audit_verify_result *r)
{
    printf("verified: %" PRIu64 " file(s), %" PRIu64 " records (%" PRIu64 " requests, %" PRIu64
           " checkpoints, %" PRIu64 " open, %" PRIu64 " rotate, %" PRIu64 " lost), %" PRIu64
           " chain(s), %" PRIu64 " bytes\n",
           r->files, r->records, r->requests, r->checkpoints, r->opens, r->rotates, r->losts,
           r->chains, r->bytes);
    printf("log:      %s\n", r->log_id);
    printf("seq:      %" PRIu64 "..%" PRIu64 " %s\n", r->first_seq, r->last_seq,
           r->from_genesis ? "(from genesis)" : "(earlier records are in files not given)");
    printf("time:     %s .. %s\n", r->first_ts, r->last_ts);
    printf("head:     %s\n", r->head);
    if (r->signatures_checked)
        printf("signed:   through seq %" PRIu64 " by key %s\n", r->signed_seq, r->key_id);
    else
        printf("signed:   not checked (no --pubkey); %" PRIu64 " checkpoints well-formed\n",
               r->checkpoints);
}

static int verify(int argc, char **argv)
{
    const char *pubkey = NULL;
    char *pem = NULL, *buf = NULL, err[256] = "";
    size_t pemlen = 0, nfiles = 0;
    struct audit_verifier *v = NULL;
    const struct audit_verify_result *r;
    int rc = 2, f;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pubkey")) {
            if (++i == argc) {
                usage(stderr);
                goto out;
            }
            pubkey = argv[i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "baton: audit verify: unknown option %s\n", argv[i]);
            usage(stderr);
            goto out;
        } else {
            nfiles++;
        }
    }
    if (!nfiles) {
        usage(stderr);
        goto out;
    }
    if (pubkey && read_file_capped(pubkey, PUBKEY_FILE_MAX, &pem, &pemlen) != 0) {
        fprintf(stderr, "baton: --pubkey %s: %s\n", pubkey, strerror(errno));
        goto out;
    }
    v = audit_verifier_new(pem, pemlen, err, sizeof(err));
    if (!v) {
        fprintf(stderr, "baton: --pubkey %s: %s\n", pubkey, err);
        goto out;
    }
    buf = xmalloc(CHUNK);
    f = 0;
    for (int i = 1; i < argc && !f; i++) {
        if (!strcmp(argv[i], "--pubkey")) {
            i++;
            continue;
        }
        f = feed_file(v, argv[i], buf);
    }
    if (f < 0)
        goto out;
    audit_verifier_finish(v);
    r = audit_verifier_result(v);
    if (r->kind == AUDIT_OK) {
        print_summary(r);
        rc = 0;
    } else {
        if (r->has_seq)
            printf("%s:%" PRIu64 ": seq %" PRIu64 ": %s: %s\n", r->file, r->line, r->seq,
                   audit_break_name(r->kind), r->message);
        else
            printf("%s:%" PRIu64 ": %s: %s\n", r->file, r->line, audit_break_name(r->kind),
                   r->message);
        printf("%" PRIu64 " records read before the break\n", r->records);
        rc = 1;
    }
out:
    if (pem)
        OPENSSL_cleanse(pem, pemlen);
    free(pem);
    free(buf);
    audit_verifier_free(v);
    return rc;
}

static int keygen(int argc, char **argv)
{
    const char *out = NULL;
    EVP_PKEY *key = NULL;
    FILE *f = NULL;
    unsigned char raw[32];
    size_t rawlen = sizeof(raw);
    char key_id[65];
    int fd = -1, rc = 2;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else {
            usage(stderr);
            goto done;
        }
    }
    if (!out) {
        usage(stderr);
        goto done;
    }
    rc = 1;
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!key || EVP_PKEY_get_raw_public_key(key, raw, &rawlen) != 1) {
        fprintf(stderr, "baton: audit keygen: key generation failed\n");
        goto done;
    }
    fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "baton: audit keygen: %s: %s%s\n", out, strerror(errno),
                errno == EEXIST ? " (never overwritten: remove it first)" : "");
        goto done;
    }
    f = fdopen(fd, "w");
    if (!f) {
        fprintf(stderr, "baton: audit keygen: %s: %s\n", out, strerror(errno));
        goto done;
    }
    fd = -1;
    if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0) {
        fprintf(stderr, "baton: audit keygen: writing %s failed\n", out);
        (void)unlink(out);
        goto done;
    }
    sha256_hex(raw, rawlen, key_id);
    if (PEM_write_PUBKEY(stdout, key) != 1)
        goto done;
    printf("key_id: %s\n", key_id);
    rc = 0;
done:
    if (f && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "baton: audit keygen: closing %s failed\n", out);
        rc = 1;
    }
    if (fd >= 0)
        close(fd);
    EVP_PKEY_free(key);
    return rc;
}

int cmd_audit(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "verify"))
        return verify(argc - 1, argv + 1);
    if (!strcmp(argv[1], "keygen"))
        return keygen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "baton: audit: unknown subcommand \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
