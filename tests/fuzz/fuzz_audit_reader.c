/*
 * fuzz_audit_reader.c: `baton audit verify`'s reader on arbitrary bytes.
 *
 * The input is one or more files separated by the byte 0x1e (which no audit
 * line may contain). The first byte chooses how the bytes are cut into feed
 * chunks (1..128 bytes, so line reassembly across chunks is exercised) and,
 * with its high bit, whether a public key is given (checkpoint signatures
 * checked, unsigned tails reported). The seeds are logs written by baton and
 * signed with the key below, whole, rotated, torn and tampered with.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "audit.h"

/* Public half of the key that signed the seed corpus (a test key, used nowhere else). */
static const char seed_pubkey[] = "-----BEGIN PUBLIC KEY-----\n"
                                  "MCowBQYDK2VwAyEAUTpoEfshvDS8q5RHz4tU2IsZPY6B2iZSd+5QbUR+meo=\n"
                                  "-----END PUBLIC KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct audit_verifier *v;
    const struct audit_verify_result *r;
    char err[64];
    size_t chunk, i = 1;
    int files = 0;

    if (size < 1)
        return 0;
    chunk = (size_t)(data[0] & 0x7f) + 1;
    v = audit_verifier_new(data[0] & 0x80 ? seed_pubkey : NULL,
                           data[0] & 0x80 ? sizeof(seed_pubkey) - 1 : 0, err, sizeof(err));
    if (!v)
        __builtin_trap(); /* the built-in key must load */
    while (i <= size) {
        const uint8_t *sep = i < size ? memchr(data + i, 0x1e, size - i) : NULL;
        size_t end = sep ? (size_t)(sep - data) : size;
        char name[16];
        memcpy(name, "file", 5);
        name[4] = (char)('0' + files % 10);
        name[5] = '\0';
        audit_verifier_begin_file(v, name);
        files++;
        for (size_t off = i; off < end; off += chunk)
            if (audit_verifier_feed(v, data + off, end - off < chunk ? end - off : chunk))
                break;
        audit_verifier_end_file(v);
        i = end + 1;
    }
    audit_verifier_finish(v);
    r = audit_verifier_result(v);
    /* invariants: a verdict names a kind; a success has records and a head */
    if (r->kind == AUDIT_OK && (!r->records || strlen(r->head) != 64))
        __builtin_trap();
    if (r->kind != AUDIT_OK && !r->message[0])
        __builtin_trap();
    audit_verifier_free(v);
    return 0;
}
