/*
 * server.h: `baton serve` (cmd_serve in cli.h); the admin listener it
 * starts has its own header, admin.h.
 *
 * server.c owns the process lifecycle (workers, listeners, signals, reload,
 * drain); conn.c (conn.h) the client side of every request: the guard, the
 * pipeline of docs/spec.md "One request, in order", error responses and the one
 * audit record per routed request. proxy.c does the upstream side.
 */
#ifndef BATON_SERVER_H
#define BATON_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#endif
