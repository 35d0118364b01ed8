/*
 * http_client.c: libcurl's multi interface driven by a libevent event_base.
 *
 * curl tells us which sockets it wants watched (CURLMOPT_SOCKETFUNCTION: one
 * persistent libevent event per socket) and when it next needs a timeout
 * (CURLMOPT_TIMERFUNCTION: one libevent timer per client). When either fires
 * we hand it back with curl_multi_socket_action and then collect finished
 * transfers from curl_multi_info_read. Each call owns one easy handle, its
 * response being filled (capped body and header block) and, for failures
 * found before any I/O, a zero-delay timer that delivers the error later, so
 * callbacks never run re-entrantly from http_client_submit.
 *
 * Redirects are never followed by curl itself: when a request allows some,
 * each Location is re-checked by http_url_check (scheme, loopback rule) and
 * the call is re-added with the remaining time; custom request headers do
 * not cross to another origin. For plain-http calls an OPENSOCKETFUNCTION
 * refuses any address that is not loopback, so a name that resolves
 * elsewhere cannot turn "http to localhost" into cleartext on the network.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "http_client.h"
#include "buf.h"
#include "list.h"
#include "util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

struct http_headers_ {
    char **name; /* owned strings, n of each */
    char **value;
    size_t n, cap;
    size_t bytes; /* raw bytes of the current header block, for the cap */
};

/* One watched socket: curl_multi_assign()ed to curl's socket, linked in the
 * client so that whatever curl does not remove is freed with the client. */
struct sock {
    struct list link; /* on hc->socks */
    struct http_client *hc;
    curl_socket_t fd;
    struct event *ev; /* owned */
};

struct http_client {
    struct event_base *base; /* borrowed */
    CURLM *multi;            /* owned */
    struct event *timer;     /* owned: curl's single timeout */
    struct list calls;       /* struct http_call: live calls, owned */
    struct list socks;       /* struct sock: watched sockets, owned */
};

struct http_call {
    struct http_client *hc;
    struct list link;        /* on hc->calls */
    CURL *easy;              /* owned */
    struct curl_slist *hdrs; /* owned request header list */
    char *url;               /* owned: current hop */
    char *method;            /* owned, NULL: GET */
    char *body;              /* owned request body copy */
    size_t body_len;
    bool allow_http;
    bool allow_metadata_http;
    bool plain_http; /* current hop is http://: sockets must be loopback (or metadata) */
    bool in_multi;
    bool too_big, headers_too_big, socket_refused;
    unsigned redirects_left;
    unsigned redirects_asked;
    uint64_t deadline_ns; /* mono_ns() deadline of the whole call */
    size_t max_body;
    struct buf rbody;    /* the response body so far, capped at max_body */
    struct event *defer; /* owned: delivers an early failure */
    http_done_fn done;
    void *arg;
    struct http_response *resp; /* owned until delivered */
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *http_error_name(enum http_error e)
{
    switch (e) {
    case HTTP_ERR_NONE:
        return "none";
    case HTTP_ERR_REFUSED:
        return "refused";
    case HTTP_ERR_CONNECT:
        return "connect";
    case HTTP_ERR_TIMEOUT:
        return "timeout";
    case HTTP_ERR_TOO_BIG:
        return "too_big";
    case HTTP_ERR_TLS:
        return "tls";
    case HTTP_ERR_HTTP:
        return "http";
    case HTTP_ERR_INTERNAL:
        return "internal";
    }
    return "internal";
}

/* ---- responses ---------------------------------------------------------- */

static void headers_reset(struct http_headers_ *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->name[i]);
        free(h->value[i]);
    }
    h->n = 0;
    h->bytes = 0;
}

static void headers_add(struct http_headers_ *h, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->name = xrealloc(h->name, h->cap * sizeof(*h->name));
        h->value = xrealloc(h->value, h->cap * sizeof(*h->value));
    }
    h->name[h->n] = xstrndup(name, nlen);
    h->value[h->n] = xstrndup(value, vlen);
    h->n++;
}

const char *http_response_header(const struct http_response *resp, const char *name)
{
    const struct http_headers_ *h = resp ? resp->headers_ : NULL;
    if (!h || !name)
        return NULL;
    for (size_t i = 0; i < h->n; i++)
        if (!strcasecmp(h->name[i], name))
            return h->value[i];
    return NULL;
}

static struct http_response *response_new(void)
{
    struct http_response *r = xcalloc(1, sizeof(*r));
    r->headers_ = xcalloc(1, sizeof(*r->headers_));
    return r;
}

void http_response_free(struct http_response *resp)
{
    if (!resp)
        return;
    if (resp->headers_) {
        headers_reset(resp->headers_);
        free(resp->headers_->name);
        free(resp->headers_->value);
        free(resp->headers_);
    }
    free(resp->body);
    free(resp);
}

static void response_fail(struct http_response *r, enum http_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void response_fail(struct http_response *r, enum http_error e, const char *fmt, ...)
{
    va_list ap;
    r->error = e;
    r->status = 0;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
}

/* ---- URL rules ---------------------------------------------------------- */

static bool host_is_loopback(const char *host)
{
    char buf[64];
    size_t len = strlen(host);
    struct in_addr a4;
    struct in6_addr a6;

    if (!strcasecmp(host, "localhost"))
        return true;
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        if (len - 2 >= sizeof(buf))
            return false;
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static bool sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127);
    }
    return false;
}

/* The GCE metadata server: a fixed link-local address, plain http only. */
#define METADATA_IPV4 0xa9fea9feu /* 169.254.169.254 */

static bool host_is_metadata(const char *host)
{
    struct in_addr a4;
    if (!strcasecmp(host, "metadata.google.internal"))
        return true;
    return inet_pton(AF_INET, host, &a4) == 1 && ntohl(a4.s_addr) == METADATA_IPV4;
}

static bool sockaddr_is_metadata(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET &&
           ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) == METADATA_IPV4;
}

/* Parses url into scheme/host/port (owned, curl_free). 0 or -1 with err. */
static int url_parts(const char *url, char **scheme, char **host, char **port, char *err,
                     size_t errlen)
{
    CURLU *u = curl_url();
    char *user = NULL;
    int rc = -1;

    *scheme = *host = NULL;
    if (port)
        *port = NULL;
    if (!u) {
        snprintf(err, errlen, "out of memory parsing a URL");
        goto out;
    }
    if (!url || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        snprintf(err, errlen, "malformed or unsupported URL");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK) {
        snprintf(err, errlen, "URL without scheme or host");
        goto out;
    }
    if (port && curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        snprintf(err, errlen, "URL without a port");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        snprintf(err, errlen, "credentials in a URL are refused");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0) {
        curl_free(*scheme);
        curl_free(*host);
        *scheme = *host = NULL;
        if (port) {
            curl_free(*port);
            *port = NULL;
        }
    }
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}

static int url_check(const char *url, bool allow_http, bool allow_metadata, char *err,
                     size_t errlen)
{
    char *scheme = NULL, *host = NULL;
    int rc = -1;

    pthread_once(&curl_once, curl_init_once);
    if (url_parts(url, &scheme, &host, NULL, err, errlen) < 0)
        goto out;
    if (!strcmp(scheme, "https")) {
        rc = 0;
    } else if (!strcmp(scheme, "http")) {
        if (allow_metadata && host_is_metadata(host))
            rc = 0;
        else if (!allow_http)
            snprintf(err, errlen, "plain http to %s refused: https required", host);
        else if (!host_is_loopback(host))
            snprintf(err, errlen, "plain http to %s refused: only loopback hosts may use http",
                     host);
        else
            rc = 0;
    } else {
        snprintf(err, errlen, "scheme %s refused: only http and https", scheme);
    }
out:
    curl_free(scheme);
    curl_free(host);
    return rc;
}

int http_url_check(const char *url, bool allow_http, char *err, size_t errlen)
{
    return url_check(url, allow_http, false, err, errlen);
}

/* True when both URLs have the same scheme, host and port. */
static bool same_origin(const char *a, const char *b)
{
    char *s1 = NULL, *h1 = NULL, *p1 = NULL, *s2 = NULL, *h2 = NULL, *p2 = NULL;
    char err[128];
    bool same = false;

    if (url_parts(a, &s1, &h1, &p1, err, sizeof(err)) == 0 &&
        url_parts(b, &s2, &h2, &p2, err, sizeof(err)) == 0)
        same = !strcmp(s1, s2) && !strcasecmp(h1, h2) && !strcmp(p1, p2);
    curl_free(s1);
    curl_free(h1);
    curl_free(p1);
    curl_free(s2);
    curl_free(h2);
    curl_free(p2);
    return same;
}

static bool url_is_plain_http(const char *url)
{
    return !strncasecmp(url, "http:", 5);
}

/* ---- curl callbacks ----------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct http_call *call = arg;
    size_t len = size * nmemb;

    if (buf_add(&call->rbody, p, len) != 0) {
        call->too_big = true;
        return 0; /* curl aborts the transfer: CURLE_WRITE_ERROR */
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct http_call *call = arg;
    struct http_headers_ *h = call->resp->headers_;
    size_t len = size * nmemb, nlen, vstart, vend;
    const char *colon;

    if (len >= 5 && !memcmp(p, "HTTP/", 5)) { /* a new response (1xx, redirect hop) */
        headers_reset(h);
        h->bytes = len;
        return len;
    }
    h->bytes += len;
    if (h->bytes > HTTP_MAX_HEADER_BYTES) {
        call->headers_too_big = true;
        return 0;
    }
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    if (len == 0 || p[0] == ' ' || p[0] == '\t') /* end of block, or obs-fold: ignored */
        return size * nmemb;
    colon = memchr(p, ':', len);
    if (!colon || colon == p)
        return size * nmemb;
    nlen = (size_t)(colon - p);
    vstart = nlen + 1;
    vend = len;
    while (vstart < vend && (p[vstart] == ' ' || p[vstart] == '\t'))
        vstart++;
    while (vend > vstart && (p[vend - 1] == ' ' || p[vend - 1] == '\t'))
        vend--;
    headers_add(h, p, nlen, p + vstart, vend - vstart);
    return size * nmemb;
}

static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct http_call *call = arg;
    (void)purpose;
    if (call->plain_http && !sockaddr_is_loopback(&a->addr) &&
        !(call->allow_metadata_http && sockaddr_is_metadata(&a->addr))) {
        call->socket_refused = true;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static void check_done(struct http_client *hc);

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *hc = arg;
    int running = 0, flags = 0;

    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(hc->multi, fd, flags, &running);
    check_done(hc);
}

static void sock_free(struct sock *s)
{
    list_remove(&s->link);
    if (s->ev)
        event_free(s->ev);
    free(s);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct http_client *hc = userp;
    struct sock *s = socketp;
    short kind = EV_PERSIST;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(hc->multi, fd, NULL);
            sock_free(s);
        }
        return 0;
    }
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->hc = hc;
        s->fd = fd;
        list_push_front(&hc->socks, &s->link);
        curl_multi_assign(hc->multi, fd, s);
    } else if (s->ev) {
        event_free(s->ev); /* safe from inside this event's own callback */
        s->ev = NULL;
    }
    s->ev = event_new(hc->base, fd, kind, on_socket_event, hc);
    if (!s->ev || event_add(s->ev, NULL) < 0)
        return -1; /* curl fails the transfers on this socket */
    return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *hc = arg;
    int running = 0;
    (void)fd;
    (void)what;
    curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(hc);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_client *hc = userp;
    struct timeval tv;
    (void)multi;

    if (timeout_ms < 0) {
        evtimer_del(hc->timer);
        return 0;
    }
    /* Never call curl_multi_socket_action from here: a zero timeout runs
     * from the event loop on its next turn. */
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    return evtimer_add(hc->timer, &tv) < 0 ? -1 : 0;
}

/* ---- calls -------------------------------------------------------------- */

static void call_free(struct http_call *call)
{
    struct http_client *hc = call->hc;

    list_remove(&call->link);
    if (call->in_multi)
        curl_multi_remove_handle(hc->multi, call->easy);
    if (call->easy)
        curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->hdrs);
    if (call->defer)
        event_free(call->defer);
    http_response_free(call->resp);
    free(call->url);
    free(call->method);
    free(call->body);
    buf_free(&call->rbody);
    free(call);
}

/* Hands the response to the callback; the call is gone before it runs. */
static void deliver(struct http_call *call)
{
    struct http_response *resp = call->resp;
    http_done_fn done = call->done;
    void *arg = call->arg;

    call->resp = NULL;
    if (resp->error != HTTP_ERR_NONE) {
        buf_free(&call->rbody); /* a failed call hands out "" */
        headers_reset(resp->headers_);
    }
    resp->body = buf_take(&call->rbody, &resp->body_len); /* "" when none came */
    call_free(call);
    done(resp, arg);
}

void http_call_cancel(struct http_call *call)
{
    if (call)
        call_free(call);
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deliver(arg);
}

/* Sets the per-hop options that depend on the URL and the time left. */
static int call_set_hop(struct http_call *call)
{
    uint64_t now = mono_ns();
    long left_ms = call->deadline_ns > now ? (long)((call->deadline_ns - now) / 1000000u) : 0;
    CURL *e = call->easy;

    if (left_ms <= 0) {
        response_fail(call->resp, HTTP_ERR_TIMEOUT, "time limit reached before the request");
        return -1;
    }
    call->plain_http = url_is_plain_http(call->url);
    if (curl_easy_setopt(e, CURLOPT_URL, call->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left_ms) != CURLE_OK ||
        /* a proxy from the environment would defeat the loopback check */
        (call->plain_http && curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK)) {
        response_fail(call->resp, HTTP_ERR_INTERNAL, "curl refused the request options");
        return -1;
    }
    return 0;
}

static int call_setup(struct http_call *call, const struct http_request *req)
{
    CURL *e = call->easy = curl_easy_init();
    CURLcode rc = CURLE_OK;

    if (!e)
        goto fail;
    for (size_t i = 0; i < req->n_headers; i++) {
        struct curl_slist *n;
        if (!req->headers[i] || strpbrk(req->headers[i], "\r\n") || !strchr(req->headers[i], ':')) {
            response_fail(call->resp, HTTP_ERR_REFUSED, "request header %zu is malformed", i);
            return -1;
        }
        n = curl_slist_append(call->hdrs, req->headers[i]);
        if (!n)
            goto fail;
        call->hdrs = n;
    }
    if (call->body) { /* no 100-continue round trip on small bodies */
        struct curl_slist *n = curl_slist_append(call->hdrs, "Expect:");
        if (!n)
            goto fail;
        call->hdrs = n;
    }
#define SET(opt, val)   \
    if (rc == CURLE_OK) \
    rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_PRIVATE, call);
    SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (req->ca_file)
        SET(CURLOPT_CAINFO, req->ca_file);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, call);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SET(CURLOPT_OPENSOCKETDATA, call);
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_body);
    SET(CURLOPT_USERAGENT, "baton/" PACKAGE_VERSION);
    SET(CURLOPT_HTTPHEADER, call->hdrs);
    if (!call->method || !strcmp(call->method, "GET")) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(call->method, "HEAD")) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(call->method, "POST"))
            SET(CURLOPT_CUSTOMREQUEST, call->method);
        SET(CURLOPT_POSTFIELDS, call->body ? call->body : "");
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    }
#undef SET
    if (rc != CURLE_OK)
        goto fail;
    return call_set_hop(call);
fail:
    response_fail(call->resp, HTTP_ERR_INTERNAL, "curl could not set the request up%s%s",
                  rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? curl_easy_strerror(rc) : "");
    return -1;
}

static int call_add(struct http_call *call)
{
    CURLMcode mc = curl_multi_add_handle(call->hc->multi, call->easy);
    if (mc != CURLM_OK) {
        response_fail(call->resp, HTTP_ERR_INTERNAL, "curl_multi_add_handle: %s",
                      curl_multi_strerror(mc));
        return -1;
    }
    call->in_multi = true;
    return 0;
}

/* Delivers call->resp's failure from the loop, never from the caller's stack. */
static void call_fail_later(struct http_call *call)
{
    static const struct timeval zero = {0, 0};
    call->defer = evtimer_new(call->hc->base, on_defer, call);
    if (!call->defer || evtimer_add(call->defer, &zero) < 0)
        abort(); /* libevent out of memory: nothing sane remains */
}

struct http_call *http_client_submit(struct http_client *hc, const struct http_request *req,
                                     http_done_fn done, void *arg)
{
    struct http_call *call = xcalloc(1, sizeof(*call));
    char err[200];
    unsigned timeout_ms = req->timeout_ms ? req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;

    call->hc = hc;
    list_push_front(&hc->calls, &call->link);
    call->done = done;
    call->arg = arg;
    call->resp = response_new();
    call->allow_http = req->allow_http;
    call->allow_metadata_http = req->allow_metadata_http;
    call->max_body = req->max_body ? req->max_body : HTTP_DEFAULT_MAX_BODY;
    if (call->max_body > SIZE_MAX / 4)
        call->max_body = SIZE_MAX / 4;
    call->rbody.max = call->max_body;
    call->redirects_asked = call->redirects_left = req->max_redirects > HTTP_MAX_REDIRECTS
                                                       ? HTTP_MAX_REDIRECTS
                                                       : req->max_redirects;
    call->deadline_ns = mono_ns() + (uint64_t)timeout_ms * 1000000u;
    call->url = xstrdup(req->url ? req->url : "");
    if (req->method)
        call->method = xstrdup(req->method);
    else if (req->body)
        call->method = xstrdup("POST");
    if (req->body) {
        call->body = xmalloc(req->body_len + 1);
        memcpy(call->body, req->body, req->body_len);
        call->body[req->body_len] = '\0';
        call->body_len = req->body_len;
    }
    if (call->method && (!*call->method || strpbrk(call->method, " \t\r\n:"))) {
        response_fail(call->resp, HTTP_ERR_REFUSED, "malformed method");
        goto fail;
    }
    if (url_check(call->url, call->allow_http, call->allow_metadata_http, err, sizeof(err)) < 0) {
        response_fail(call->resp, HTTP_ERR_REFUSED, "%s", err);
        goto fail;
    }
    if (call_setup(call, req) < 0 || call_add(call) < 0)
        goto fail;
    return call;
fail:
    call_fail_later(call);
    return call;
}

static bool is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Re-issues the call to the response's Location. 0 when re-added. */
static int call_follow(struct http_call *call, long status)
{
    char *loc = NULL, err[200];
    struct http_response *r = call->resp;

    if (curl_easy_getinfo(call->easy, CURLINFO_REDIRECT_URL, &loc) != CURLE_OK || !loc) {
        response_fail(r, HTTP_ERR_HTTP, "redirect %ld without a usable Location", status);
        return -1;
    }
    if (url_check(loc, call->allow_http, call->allow_metadata_http, err, sizeof(err)) < 0) {
        response_fail(r, HTTP_ERR_REFUSED, "redirect refused: %s", err);
        return -1;
    }
    if (!same_origin(loc, call->url) && call->hdrs) {
        /* custom headers (credentials) stay with the origin they were meant for */
        curl_slist_free_all(call->hdrs);
        call->hdrs = NULL;
        curl_easy_setopt(call->easy, CURLOPT_HTTPHEADER, NULL);
    }
    free(call->url);
    call->url = xstrdup(loc); /* loc belongs to the easy handle: copy first */
    if (call->method && strcmp(call->method, "HEAD") &&
        (status == 303 || ((status == 301 || status == 302) && !strcmp(call->method, "POST")))) {
        free(call->method);
        call->method = NULL;
        curl_easy_setopt(call->easy, CURLOPT_HTTPGET, 1L);
    }
    buf_free(&call->rbody);
    headers_reset(r->headers_);
    call->redirects_left--;
    if (call_set_hop(call) < 0 || call_add(call) < 0)
        return -1;
    return 0;
}

static void classify(struct http_call *call, CURLcode rc)
{
    struct http_response *r = call->resp;
    const char *detail = call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc);

    if (call->socket_refused)
        response_fail(r, HTTP_ERR_REFUSED,
                      "plain http connection to a non-loopback (or non-metadata) address refused");
    else if (call->too_big || rc == CURLE_FILESIZE_EXCEEDED)
        response_fail(r, HTTP_ERR_TOO_BIG, "response body over %zu bytes", call->max_body);
    else if (call->headers_too_big)
        response_fail(r, HTTP_ERR_TOO_BIG, "response headers over %u bytes", HTTP_MAX_HEADER_BYTES);
    else
        switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
            response_fail(r, HTTP_ERR_TIMEOUT, "%s", detail);
            break;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
            response_fail(r, HTTP_ERR_CONNECT, "%s", detail);
            break;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_USE_SSL_FAILED:
            response_fail(r, HTTP_ERR_TLS, "%s", detail);
            break;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
            response_fail(r, HTTP_ERR_REFUSED, "%s", detail);
            break;
        case CURLE_OUT_OF_MEMORY:
        case CURLE_FAILED_INIT:
        case CURLE_BAD_FUNCTION_ARGUMENT:
            response_fail(r, HTTP_ERR_INTERNAL, "%s", detail);
            break;
        default:
            response_fail(r, HTTP_ERR_HTTP, "%s", detail);
            break;
        }
}

static void call_finished(struct http_call *call, CURLcode rc)
{
    long status = 0;

    curl_multi_remove_handle(call->hc->multi, call->easy);
    call->in_multi = false;
    if (rc != CURLE_OK) {
        classify(call, rc);
        deliver(call);
        return;
    }
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    if (is_redirect(status) && call->redirects_asked > 0) {
        if (call->redirects_left == 0)
            response_fail(call->resp, HTTP_ERR_HTTP, "more than %u redirects",
                          call->redirects_asked);
        else if (call_follow(call, status) == 0)
            return;
        deliver(call);
        return;
    }
    call->resp->status = (int)status;
    call->resp->error = HTTP_ERR_NONE;
    deliver(call);
}

static void check_done(struct http_client *hc)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(hc->multi, &left))) {
        struct http_call *call = NULL;
        CURLcode rc;
        if (m->msg != CURLMSG_DONE)
            continue;
        rc = m->data.result; /* m dies with curl_multi_remove_handle: copy first */
        if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call) != CURLE_OK ||
            !call)
            continue;
        call_finished(call, rc);
    }
}

/* ---- clients ------------------------------------------------------------ */

struct http_client *http_client_new(struct event_base *base, char *err, size_t errlen)
{
    struct http_client *hc = NULL;

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    hc = xcalloc(1, sizeof(*hc));
    hc->base = base;
    list_init(&hc->calls);
    list_init(&hc->socks);
    hc->multi = curl_multi_init();
    hc->timer = evtimer_new(base, on_timer, hc);
    if (!hc->multi || !hc->timer) {
        snprintf(err, errlen, "cannot create the curl multi handle or its timer");
        goto fail;
    }
    if (curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc) != CURLM_OK ||
        curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc) != CURLM_OK) {
        snprintf(err, errlen, "curl_multi_setopt failed");
        goto fail;
    }
    return hc;
fail:
    http_client_free(hc);
    return NULL;
}

void http_client_free(struct http_client *hc)
{
    if (!hc)
        return;
    while (!list_empty(&hc->calls))
        call_free(list_entry(list_first(&hc->calls), struct http_call, link));
    if (hc->multi)
        curl_multi_cleanup(hc->multi); /* may still report sockets removed */
    while (!list_empty(&hc->socks))
        sock_free(list_entry(list_first(&hc->socks), struct sock, link));
    if (hc->timer)
        event_free(hc->timer);
    free(hc);
}

/* ---- blocking helper ---------------------------------------------------- */

struct sync_state {
    struct event_base *base;
    struct http_response *resp;
};

static void sync_done(struct http_response *resp, void *arg)
{
    struct sync_state *st = arg;
    st->resp = resp;
    event_base_loopbreak(st->base);
}

struct http_response *http_fetch_sync(const struct http_request *req)
{
    struct sync_state st = {NULL, NULL};
    struct http_client *hc = NULL;
    char err[200] = "";

    st.base = event_base_new();
    if (!st.base) {
        snprintf(err, sizeof(err), "cannot create an event_base");
        goto out;
    }
    hc = http_client_new(st.base, err, sizeof(err));
    if (!hc)
        goto out;
    http_client_submit(hc, req, sync_done, &st);
    while (!st.resp)
        if (event_base_dispatch(st.base) != 0 && !st.resp) {
            snprintf(err, sizeof(err), "event loop stopped before the response");
            break;
        }
out:
    http_client_free(hc);
    if (st.base)
        event_base_free(st.base);
    if (!st.resp) {
        st.resp = response_new();
        st.resp->body = xstrdup("");
        response_fail(st.resp, HTTP_ERR_INTERNAL, "%s", err);
    }
    return st.resp;
}
