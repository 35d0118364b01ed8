/*
 * ready.h: the start gate of `baton serve`: no traffic before ready.
 *
 * Cloud Run routes requests to an instance as soon as its startup probe
 * passes, and the default probe is a TCP connect to the serving port. So the
 * serving sockets are bound at start but put into the listening state only
 * once baton is ready (the /readyz verdict: every issuer's keys loaded once,
 * every (identity, audience) token minted, the audit log writable), or once
 * `ready_timeout_ms` has passed, after which baton serves and whatever is
 * still missing fails closed with a retryable 503. While it waits the gate
 * logs what it waits for (after READY_LOG_FIRST_MS, then every
 * READY_LOG_EVERY_MS). It opens once per process: reloads never close or
 * re-gate the listeners.
 *
 * Threads: everything on the background event_base's thread.
 */
#ifndef BATON_READY_H
#define BATON_READY_H

#include <stdbool.h>

#include "admin.h"

struct event_base;
struct ready_gate;

#define READY_POLL_MS 5         /* readiness is looked at this often while waiting */
#define READY_LOG_FIRST_MS 1000 /* a healthy start is ready long before: no line */
#define READY_LOG_EVERY_MS 5000

/*
 * Called once, on bg's thread, when the gate opens: `ready` true when baton
 * became ready, false when ready_timeout_ms passed first (`missing` then
 * names what is still missing, borrowed for the call).
 */
typedef void (*ready_open_fn)(void *arg, bool ready, const char *missing);

/*
 * Starts watching readiness through admin_ready(deps) on `bg`. `deps` is
 * copied; its pointers are borrowed and must outlive the gate. `timeout_ms`
 * 0 opens at the first look, ready or not. Returns an owned gate
 * (ready_gate_free), never NULL (allocation failure aborts).
 */
struct ready_gate *ready_gate_start(struct event_base *bg, const struct admin_deps *deps,
                                    unsigned timeout_ms, ready_open_fn open, void *arg);

/* True once the gate opened. */
bool ready_gate_opened(const struct ready_gate *g);

/* Stops watching (the open callback never runs after this). NULL is a no-op. */
void ready_gate_free(struct ready_gate *g);

/*
 * Test helper and log text: what a /readyz JSON document (`doc`, `len`
 * bytes) says is missing, as "issuer aws keys (connect: ...), Google identity
 * (...), the audit log", into `out` (always terminated). Empty when nothing is.
 */
void ready_missing(const char *doc, size_t len, char *out, size_t cap);

#endif
