/*
 * log.c: JSON-lines logging to stderr in the shape Cloud Logging understands.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static enum log_level min_level = LOG_INFO;

void log_set_level(enum log_level min)
{
    min_level = min;
}

static const char *severity(enum log_level lvl)
{
    switch (lvl) {
    case LOG_DEBUG:
        return "DEBUG";
    case LOG_INFO:
        return "INFO";
    case LOG_WARNING:
        return "WARNING";
    case LOG_ERROR:
        return "ERROR";
    }
    return "DEFAULT";
}

size_t json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[7];
        size_t n;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c >= 0x7f) {
            tmp[0] = '\\';
            tmp[1] = 'u';
            tmp[2] = '0';
            tmp[3] = '0';
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 15];
            n = 6;
        } else {
            tmp[0] = (char)c;
            n = 1;
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

static void emit(enum log_level lvl, const char *fields, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void emit(enum log_level lvl, const char *fields, const char *fmt, va_list ap)
{
    char msg[2048], esc[4096], line[8192], ts[40];
    struct timespec now;
    struct tm tm;
    int n;

    if (lvl < min_level)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    json_escape(esc, sizeof(esc), msg, strlen(msg));
    n = snprintf(
        line, sizeof(line), "{\"severity\":\"%s\",\"time\":\"%s.%03ldZ\",\"message\":\"%s\"%s%s}\n",
        severity(lvl), ts, now.tv_nsec / 1000000, esc, fields ? "," : "", fields ? fields : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) { /* keep it one valid line even when cut */
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    (void)!write(STDERR_FILENO, line, (size_t)n);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(lvl, NULL, fmt, ap);
    va_end(ap);
}

void log_msg_fields(enum log_level lvl, const char *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(lvl, fields, fmt, ap);
    va_end(ap);
}
