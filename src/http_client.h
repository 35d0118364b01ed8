/*
 * http_client.h: every outbound HTTP call baton makes (key sets, discovery,
 * Google tokens) goes through here; this is the only module that includes curl.
 *
 * One `struct http_client` wraps a libcurl multi handle driven by one libevent
 * `event_base` (curl_multi_socket_action on socket events and one timer), so
 * any number of calls run concurrently on that base's thread without blocking
 * it. Completion callbacks run on that thread, never from inside
 * http_client_submit. Connections are reused between calls of one client.
 *
 * Safety rules every call gets, whatever the caller asks:
 *  - only the http and https protocols, and no redirect unless the request
 *    sets max_redirects (each hop is re-checked by the rules below; request
 *    headers are dropped when a redirect changes the origin);
 *  - https with peer and host verification (TLS 1.2 or later);
 *  - plain http only when the request sets allow_http AND the URL's host is a
 *    loopback address (127.0.0.0/8, ::1, "localhost"), or when it sets
 *    allow_metadata_http AND the host is the GCE metadata server
 *    ("metadata.google.internal" or 169.254.169.254, which only answers plain
 *    http, on a link-local address no one else can take on a Google host); the
 *    address actually connected to is checked again when the socket opens;
 *  - a cap on the response body (aborted as soon as it is exceeded, error
 *    too_big) and on the response headers, and a total time limit.
 *
 * Threads: a client and its calls belong to the thread running its base:
 * http_client_new/free, submit and cancel are called there (or before the
 * loop runs). http_fetch_sync is self-contained and callable from any thread.
 */
#ifndef BATON_HTTP_CLIENT_H
#define BATON_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct http_client;
struct http_call;

#define HTTP_DEFAULT_TIMEOUT_MS 5000u
#define HTTP_DEFAULT_MAX_BODY (1024u * 1024u)
#define HTTP_MAX_HEADER_BYTES (64u * 1024u) /* response header block, per response */
#define HTTP_MAX_REDIRECTS 5u               /* max_redirects above this is lowered to it */

/* Why a call produced no usable response. */
enum http_error {
    HTTP_ERR_NONE = 0, /* a response arrived; its status may still be any code */
    HTTP_ERR_REFUSED,  /* URL not allowed: bad syntax, scheme, plain http off loopback */
    HTTP_ERR_CONNECT,  /* name resolution or TCP connection failed */
    HTTP_ERR_TIMEOUT,  /* the total time limit passed */
    HTTP_ERR_TOO_BIG,  /* body over max_body, or headers over HTTP_MAX_HEADER_BYTES */
    HTTP_ERR_TLS,      /* TLS handshake or certificate verification failed */
    HTTP_ERR_HTTP,     /* malformed or truncated response, too many redirects */
    HTTP_ERR_INTERNAL, /* curl or libevent refused to set the call up */
};

/* "none", "refused", "connect", "timeout", "too_big", "tls", "http", "internal". */
const char *http_error_name(enum http_error e);

/* One request. Every pointer is borrowed for the duration of the submit call
 * only: the client copies what it keeps. */
struct http_request {
    const char *method;         /* NULL: GET, or POST when body is set */
    const char *url;            /* absolute http(s) URL */
    const char *const *headers; /* n_headers "Name: value" lines (no CR/LF) */
    size_t n_headers;
    const void *body; /* NULL: none */
    size_t body_len;
    unsigned timeout_ms;      /* whole call incl. redirects; 0: HTTP_DEFAULT_TIMEOUT_MS */
    size_t max_body;          /* response body cap; 0: HTTP_DEFAULT_MAX_BODY */
    unsigned max_redirects;   /* 0: a 3xx is returned as it is */
    bool allow_http;          /* plain http permitted, to loopback hosts only */
    bool allow_metadata_http; /* plain http permitted to the GCE metadata server */
    const char *ca_file;      /* PEM trust anchors; NULL: the system store */
};

/* A finished call. Owned by whoever the callback hands it to. */
struct http_response {
    enum http_error error;
    int status; /* HTTP status of the final response; 0 when error != NONE */
    char *body; /* owned, NUL-terminated (not counted); "" when empty or failed */
    size_t body_len;
    char msg[256]; /* why it failed, for logs ("" on success); never holds the URL's query */
    struct http_headers_ *headers_; /* private: the final response's header fields */
};

/* Value of the first response header `name` (ASCII case-insensitive), with
 * surrounding whitespace removed, or NULL. Borrowed, valid while resp lives. */
const char *http_response_header(const struct http_response *resp, const char *name);
void http_response_free(struct http_response *resp);

/* Completion callback: runs on the client's base thread and takes ownership of
 * `resp` (release it with http_response_free). */
typedef void (*http_done_fn)(struct http_response *resp, void *arg);

/* Creates a client on `base` (borrowed; must outlive the client). Returns an
 * owned client, or NULL with a message in err (curl could not initialise). */
struct http_client *http_client_new(struct event_base *base, char *err, size_t errlen);

/*
 * Aborts every call still in flight (their callbacks never run) and frees the
 * client. Not from inside a completion callback. NULL is a no-op.
 */
void http_client_free(struct http_client *hc);

/*
 * Starts `req`. Always returns a handle (borrowed: valid until `done` has
 * started running or the call is cancelled); `done` runs exactly once, later,
 * on the base's thread, with the response or the error (including a URL
 * refused by the rules above, which fails without any I/O).
 */
struct http_call *http_client_submit(struct http_client *hc, const struct http_request *req,
                                     http_done_fn done, void *arg);

/* Aborts a call that has not completed; its callback never runs. */
void http_call_cancel(struct http_call *call);

/*
 * Blocking variant for the CLI: runs `req` on a private event_base and returns
 * the owned response (never NULL; check ->error and ->status).
 */
struct http_response *http_fetch_sync(const struct http_request *req);

/*
 * Checks `url` against the rules above without fetching it: 0 when a request
 * with this allow_http would be attempted, else -1 with a message in err.
 */
int http_url_check(const char *url, bool allow_http, char *err, size_t errlen);

#endif
