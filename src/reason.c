/*
 * reason.c: the outcome table of reason.h, expanded once.
 */
#include "reason.h"

#include <string.h>

static const struct {
    const char *code;
    int status;
} reasons[REASON__COUNT] = {
#define REASON_ROW(name, code, status) {code, status},
    REASONS(REASON_ROW)
#undef REASON_ROW
};

const char *reason_code(enum reason r)
{
    return (unsigned)r < REASON__COUNT ? reasons[r].code : "internal_error";
}

int reason_status(enum reason r)
{
    return (unsigned)r < REASON__COUNT ? reasons[r].status : 500;
}

int reason_from_code(const char *code)
{
    for (int i = 0; i < REASON__COUNT; i++)
        if (strcmp(reasons[i].code, code) == 0)
            return i;
    return -1;
}

const char *decision_name(enum decision d)
{
    switch (d) {
    case DECISION_ALLOW:
        return "allow";
    case DECISION_DENY:
        return "deny";
    case DECISION_WOULD_DENY:
        return "would_deny";
    case DECISION_ERROR:
        return "error";
    }
    return "error";
}

unsigned reason_retry_after_s(enum reason r)
{
    switch (r) {
    case REASON_KEYS_UNAVAILABLE: /* the issuer's keys: retried from 1 s, backing off */
    case REASON_IDENTITY_UNAVAILABLE:
    case REASON_AUDIT_UNAVAILABLE:
        return 5;
    case REASON_IDENTITY_PERMISSION_DENIED: /* needs an IAM binding: an operator's fix */
    case REASON_IDENTITY_UNKNOWN_ACCOUNT:
        return 30;
    case REASON_RATE_LIMITED: /* the bucket computes the real value */
    case REASON_OVERLOADED:
    case REASON_DRAIN_ABORTED:    /* another instance takes the retry */
    case REASON_RATE_UNAVAILABLE: /* the shared limit's Redis, on_failure "deny" */
    case REASON_TOO_MANY_IN_FLIGHT:
    case REASON_ASSERTION_UNAVAILABLE: /* signing failed: should never happen */
        return 1;
    default:
        return 0;
    }
}
