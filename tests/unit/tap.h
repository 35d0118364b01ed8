/*
 * tap.h: the smallest Test Anything Protocol emitter the unit suites need.
 *
 * Each assertion prints one "ok N - name" or "not ok N - name" line; automake's
 * tap-driver.sh counts them. A suite ends with tap_done(), which prints the plan
 * and returns the process exit status (non-zero if anything failed), so a
 * crashing or short suite is also a failure.
 */
#ifndef BATON_TAP_H
#define BATON_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;
    printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond)
        tap_failed++;
    fflush(stdout);
    return cond;
}

/* Diagnostics, shown by the driver in the log; never counted. */
static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

#define ok(cond, ...) tap_ok(!!(cond), __VA_ARGS__)

#define is_int(got, want, ...)                                   \
    do {                                                         \
        long long g_ = (long long)(got), w_ = (long long)(want); \
        if (!tap_ok(g_ == w_, __VA_ARGS__))                      \
            tap_diag("  got %lld, want %lld", g_, w_);           \
    } while (0)

#define is_str(got, want, ...)                                                             \
    do {                                                                                   \
        const char *g_ = (got), *w_ = (want);                                              \
        int eq_ = (g_ && w_) ? strcmp(g_, w_) == 0 : g_ == w_;                             \
        if (!tap_ok(eq_, __VA_ARGS__))                                                     \
            tap_diag("  got \"%s\", want \"%s\"", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed)
        tap_diag("%d of %d failed", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}

#endif
