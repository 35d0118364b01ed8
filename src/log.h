/*
 * log.h: structured logs, one JSON object per line on stderr.
 *
 * The shape is the one Cloud Logging parses from a container's stderr:
 * `severity`, `message`, `time`, optional `httpRequest` and
 * `logging.googleapis.com/trace`, plus free-form fields. Callers pass fields
 * as pre-escaped JSON members through log_kv; never pass a token, a key or a
 * header value that could carry one.
 */
#ifndef BATON_LOG_H
#define BATON_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR };

/* Lines below `min` are dropped. Default LOG_INFO; $BATON_LOG_LEVEL=debug lowers it. */
void log_set_level(enum log_level min);

/*
 * Logs `message` (printf format). Thread-safe: one write(2) per line.
 * log_msg_fields adds `fields`, a string of JSON members without braces
 * (for example "\"issuer\":\"aws\",\"attempt\":3"), or NULL.
 */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_msg_fields(enum log_level lvl, const char *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends `s` (len bytes) JSON-escaped into `out` of size `cap`; returns the
 * length written (truncated at cap-1, always NUL-terminated). Non-ASCII and
 * control bytes become \u00XX, so the output is valid JSON whatever the input. */
size_t json_escape(char *out, size_t cap, const char *s, size_t len);

#endif
