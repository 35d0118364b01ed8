/*
 * test_audit_format_plain.c: audit_record.h's string check built without
 * SSE2 (AUDIT_RECORD_NO_SIMD), so that test_audit_format compares the plain
 * word fallback with the same strings as the SSE2 path it takes on x86-64.
 */
#define AUDIT_RECORD_NO_SIMD 1
#include "audit_record.h"

bool plain_json_copy(char *d, const char *s, size_t n);

bool plain_json_copy(char *d, const char *s, size_t n)
{
    return json_copy_plain(d, s, n);
}
