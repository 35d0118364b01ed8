/*
 * Unit tests of http_client.c against loopback servers this test starts: a
 * small Python http.server (plain and TLS with a self-signed certificate made
 * at test time by `openssl req`), spawned on free ports and stopped by closing
 * its stdin. Covers status/body/headers, concurrency, cancel, timeout, the
 * body and header caps, refused connections, the URL rules (plain http only
 * to loopback), manual redirects, TLS verification and the blocking helper.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/event.h>

#include "http_client.h"
#include "util.h"
#include "tap.h"

static const char server_py[] =
    "import http.server, ssl, sys, time, json, threading, urllib.parse\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *a): pass\n"
    "    def send(self, code, body, headers=()):\n"
    "        self.send_response(code)\n"
    "        for k, v in headers: self.send_header(k, v)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        if self.command != 'HEAD': self.wfile.write(body)\n"
    "    def do_GET(self): self.route()\n"
    "    def do_POST(self): self.route()\n"
    "    def do_PUT(self): self.route()\n"
    "    def do_HEAD(self): self.route()\n"
    "    def route(self):\n"
    "        u = urllib.parse.urlsplit(self.path); q = dict(urllib.parse.parse_qsl(u.query))\n"
    "        n = int(self.headers.get('Content-Length') or 0)\n"
    "        body = self.rfile.read(n) if n else b''\n"
    "        p = u.path\n"
    "        if p == '/hello':\n"
    "            self.send(200, b'{\"hello\":\"world\"}', [('Content-Type', 'application/json'),\n"
    "                ('Cache-Control', 'public, max-age=120'), ('Metadata-Flavor', 'Google'),\n"
    "                ('X-Dup', 'first'), ('X-Dup', 'second'), ('X-Padded', '  v  ')])\n"
    "        elif p.startswith('/status/'): self.send(int(p[8:]), b'')\n"
    "        elif p == '/big': self.send(200, b'x' * int(q['n']))\n"
    "        elif p == '/stream':\n"
    "            self.send_response(200); self.send_header('Connection', 'close'); self.end_headers()\n"
    "            for i in range(int(q['n']) // 1000):\n"
    "                try: self.wfile.write(b'y' * 1000); self.wfile.flush()\n"
    "                except OSError: break\n"
    "            self.close_connection = True\n"
    "        elif p == '/slow': time.sleep(int(q['ms']) / 1000); self.send(200, b'slow')\n"
    "        elif p == '/echo':\n"
    "            self.send(200, json.dumps({'method': self.command, 'body': body.decode(),\n"
    "                'headers': {k.lower(): v for k, v in self.headers.items()}}).encode())\n"
    "        elif p == '/redirect': self.send(int(q.get('code', '302')), b'moved', [('Location', q['to'])])\n"
    "        elif p == '/loop': self.send(302, b'', [('Location', '/loop')])\n"
    "        elif p == '/hugeheaders':\n"
    "            self.send_response(200)\n"
    "            for i in range(100): self.send_header('X-Filler-%d' % i, 'z' * 1000)\n"
    "            self.send_header('Content-Length', '0'); self.end_headers()\n"
    "        else: self.send(404, b'no')\n"
    "class S(http.server.ThreadingHTTPServer):\n"
    "    daemon_threads = True\n"
    "    def handle_error(self, request, addr): pass\n"
    "plain = S(('127.0.0.1', 0), H)\n"
    "tls = S(('127.0.0.1', 0), H)\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n"
    "tls.socket = ctx.wrap_socket(tls.socket, server_side=True)\n"
    "for s in (plain, tls): threading.Thread(target=s.serve_forever, daemon=True).start()\n"
    "print(plain.server_address[1], tls.server_address[1], flush=True)\n"
    "sys.stdin.read()\n";

static pid_t server_pid = -1;
static int server_stdin = -1;
static int port, tls_port;
static char tmpdir[] = "/tmp/baton-http-test-XXXXXX";
static char cert_path[256], key_path[256];

static int make_cert(void)
{
    char cmd[1024];
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
             "-subj /CN=baton-test -addext subjectAltName=IP:127.0.0.1 "
             "-keyout %s -out %s >/dev/null 2>&1",
             key_path, cert_path);
    return system(cmd) == 0 ? 0 : -1;
}

static int start_server(void)
{
    int in[2], out[2];
    char line[128];
    FILE *f;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) /* no leak into later children */
        return -1;
    server_pid = fork();
    if (server_pid < 0)
        return -1;
    if (server_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl("/usr/bin/python3", "python3", "-c", server_py, cert_path, key_path, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    server_stdin = in[1];
    f = fdopen(out[0], "r");
    if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "%d %d", &port, &tls_port) != 2) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

static void stop_server(void)
{
    char cmd[512];
    if (server_stdin >= 0)
        close(server_stdin); /* the server exits when its stdin closes */
    if (server_pid > 0) {
        int st;
        for (int i = 0; i < 50 && waitpid(server_pid, &st, WNOHANG) == 0; i++)
            usleep(100000);
        if (waitpid(server_pid, &st, WNOHANG) == 0) {
            kill(server_pid, SIGKILL);
            waitpid(server_pid, &st, 0);
        }
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmpdir);
}

/* ---- an event loop that waits for a number of completions -------------- */

struct waiter {
    struct event_base *base;
    int want, got;
    struct http_response *resp[8];
    uint64_t done_ns[8];
};

static void on_done(struct http_response *resp, void *arg)
{
    struct waiter *w = arg;
    if (w->got < 8) {
        w->resp[w->got] = resp;
        w->done_ns[w->got] = mono_ns();
    } else {
        http_response_free(resp);
    }
    if (++w->got >= w->want)
        event_base_loopbreak(w->base);
}

/* For calls that are cancelled or aborted: counts, should it ever run. */
static void on_never(struct http_response *resp, void *arg)
{
    (*(int *)arg)++;
    http_response_free(resp);
}

static void run(struct waiter *w, int want)
{
    struct timeval guard = {10, 0};
    w->want = want;
    event_base_loopexit(w->base, &guard); /* a hung test ends here, and fails */
    event_base_dispatch(w->base);
}

static void waiter_reset(struct waiter *w)
{
    for (int i = 0; i < w->got && i < 8; i++)
        http_response_free(w->resp[i]);
    memset(w->resp, 0, sizeof(w->resp));
    w->got = 0;
}

static char *url(const char *path)
{
    return xasprintf("http://127.0.0.1:%d%s", port, path);
}

static struct http_response *one(struct http_client *hc, struct waiter *w,
                                 const struct http_request *req)
{
    waiter_reset(w);
    http_client_submit(hc, req, on_done, w);
    run(w, 1);
    return w->got ? w->resp[0] : NULL;
}

/* ---- tests -------------------------------------------------------------- */

static void test_url_rules(void)
{
    char err[200];
    static const struct {
        const char *url;
        bool allow_http;
        int want;
        const char *what;
    } cases[] = {
        {"https://example.com/jwks", false, 0, "https to a public host"},
        {"http://example.com/jwks", false, -1, "plain http without allow_http"},
        {"http://example.com/jwks", true, -1, "plain http to a public name even with allow_http"},
        {"http://10.0.0.1/jwks", true, -1, "plain http to a private address"},
        {"http://192.0.2.1/jwks", true, -1, "plain http to a TEST-NET address"},
        {"http://127.0.0.1:8080/x", true, 0, "plain http to 127.0.0.1 with allow_http"},
        {"http://127.0.0.1:8080/x", false, -1, "plain http to 127.0.0.1 without allow_http"},
        {"http://127.9.8.7/x", true, 0, "plain http anywhere in 127.0.0.0/8"},
        {"http://[::1]:9/x", true, 0, "plain http to [::1]"},
        {"http://LocalHost:9/x", true, 0, "plain http to localhost, any case"},
        {"http://localhost.example.com/x", true, -1, "a name that only starts with localhost"},
        {"http://127.0.0.1.nip.io/x", true, -1, "a name that embeds a loopback address"},
        {"ftp://127.0.0.1/x", true, -1, "ftp"},
        {"file:///etc/passwd", true, -1, "file URLs"},
        {"gopher://127.0.0.1/x", true, -1, "gopher"},
        {"https://user:pw@example.com/", false, -1, "credentials in the URL"},
        {"not a url", true, -1, "garbage"},
        {"", true, -1, "the empty string"},
        {"/relative/path", true, -1, "a relative reference"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        int rc = http_url_check(cases[i].url, cases[i].allow_http, err, sizeof(err));
        ok(rc == cases[i].want, "url rule: %s is %s (%s)", cases[i].what,
           cases[i].want ? "refused" : "allowed", err);
    }
    ok(http_url_check(NULL, true, err, sizeof(err)) < 0, "url rule: NULL is refused");
}

static void test_basic(struct http_client *hc, struct waiter *w)
{
    char *u = url("/hello");
    struct http_request req = {.url = u, .allow_http = true};
    struct http_response *r = one(hc, w, &req);

    ok(r != NULL, "GET /hello completes");
    if (!r)
        goto out;
    is_int(r->error, HTTP_ERR_NONE, "GET /hello has no error");
    is_int(r->status, 200, "GET /hello status is 200");
    is_str(r->body, "{\"hello\":\"world\"}", "GET /hello body is returned whole");
    is_int(r->body_len, 17, "body_len counts the bytes");
    is_str(http_response_header(r, "Cache-Control"), "public, max-age=120",
           "Cache-Control header is returned");
    is_str(http_response_header(r, "content-type"), "application/json",
           "header lookup is case-insensitive");
    is_str(http_response_header(r, "METADATA-FLAVOR"), "Google",
           "Metadata-Flavor header is returned");
    is_str(http_response_header(r, "X-Dup"), "first", "the first of repeated headers is returned");
    is_str(http_response_header(r, "X-Padded"), "v", "header values are trimmed");
    ok(http_response_header(r, "X-Absent") == NULL, "an absent header is NULL");
    is_str(r->msg, "", "no message on success");
out:
    free(u);
}

static void test_status_and_empty(struct http_client *hc, struct waiter *w)
{
    char *u = url("/status/503");
    struct http_request req = {.url = u, .allow_http = true};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_NONE && r->status == 503,
       "a 503 is a response (status 503), not a transport error");
    ok(r && r->body && r->body_len == 0 && r->body[0] == '\0',
       "an empty body is \"\" with length 0");
    free(u);
    u = url("/nope");
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->status == 404 && !strcmp(r->body, "no"), "404 status and body are returned");
    free(u);
}

static void test_post_echo(struct http_client *hc, struct waiter *w)
{
    char *u = url("/echo");
    const char *hdrs[] = {"X-Test: yes", "Content-Type: application/x-www-form-urlencoded"};
    struct http_request req = {.url = u,
                               .allow_http = true,
                               .headers = hdrs,
                               .n_headers = 2,
                               .body = "grant_type=x&a=b",
                               .body_len = 16};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->status == 200, "POST /echo answers 200");
    ok(r && strstr(r->body, "\"method\": \"POST\""), "a body without method sends POST");
    ok(r && strstr(r->body, "\"body\": \"grant_type=x&a=b\""), "the request body arrives whole");
    ok(r && strstr(r->body, "\"x-test\": \"yes\""), "custom request headers are sent");
    ok(r && !strstr(r->body, "\"expect\""), "no Expect: 100-continue is sent");
    ok(r && strstr(r->body, "\"user-agent\": \"baton/"), "the User-Agent names baton");
    req.method = "PUT";
    r = one(hc, w, &req);
    ok(r && strstr(r->body, "\"method\": \"PUT\""), "an explicit method is used");
    req.method = "GET";
    req.body = NULL;
    req.body_len = 0;
    r = one(hc, w, &req);
    ok(r && strstr(r->body, "\"method\": \"GET\""), "GET sends GET");
    const char *bad[] = {"X-Evil: a\r\nX-Injected: b"};
    req.headers = bad;
    req.n_headers = 1;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED, "a request header with CR/LF is refused before sending");
    free(u);
}

static void test_concurrency_and_cancel(struct http_client *hc, struct waiter *w)
{
    char *u = url("/slow?ms=400");
    struct http_request req = {.url = u, .allow_http = true};
    uint64_t t0 = mono_ns();
    struct http_call *c;
    int flag = 0;

    waiter_reset(w);
    for (int i = 0; i < 3; i++)
        http_client_submit(hc, &req, on_done, w);
    c = http_client_submit(hc, &req, on_never, &flag); /* cancelled: must never run */
    http_call_cancel(c);
    run(w, 3);
    double ms = (double)(mono_ns() - t0) / 1e6;
    is_int(w->got, 3, "three concurrent slow calls all complete");
    ok(ms < 1100, "three 400 ms calls run concurrently (%.0f ms < 1100)", ms);
    ok(w->got == 3 && w->resp[0]->status == 200 && w->resp[2]->status == 200,
       "concurrent calls answer 200");
    is_int(flag, 0, "a cancelled call's callback never runs");
    free(u);
}

static void test_timeout(struct http_client *hc, struct waiter *w)
{
    char *u = url("/slow?ms=3000");
    struct http_request req = {.url = u, .allow_http = true, .timeout_ms = 300};
    uint64_t t0 = mono_ns();
    struct http_response *r = one(hc, w, &req);
    double ms = (double)(mono_ns() - t0) / 1e6;
    ok(r && r->error == HTTP_ERR_TIMEOUT, "a slow server hits the timeout (%s)", r ? r->msg : "");
    ok(ms >= 250 && ms < 1500, "the timeout fires near 300 ms (%.0f ms)", ms);
    ok(r && r->status == 0 && r->body_len == 0, "a timed-out call has no status and no body");
    free(u);
}

static void test_caps(struct http_client *hc, struct waiter *w)
{
    char *u = url("/big?n=5000");
    struct http_request req = {.url = u, .allow_http = true, .max_body = 1000};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_TOO_BIG, "a Content-Length over the cap fails too_big (%s)",
       r ? r->msg : "");
    req.max_body = 5000;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_NONE && r->body_len == 5000,
       "a body of exactly the cap is accepted");
    free(u);
    u = url("/stream?n=3000000");
    req.url = u;
    req.max_body = 10000;
    uint64_t t0 = mono_ns();
    r = one(hc, w, &req);
    double ms = (double)(mono_ns() - t0) / 1e6;
    ok(r && r->error == HTTP_ERR_TOO_BIG, "a streamed body without length is cut at the cap (%s)",
       r ? r->msg : "");
    ok(ms < 2000, "the over-cap stream is aborted early (%.0f ms)", ms);
    free(u);
    u = url("/hugeheaders");
    req.url = u;
    req.max_body = 0;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_TOO_BIG, "100 KB of response headers fail too_big (%s)",
       r ? r->msg : "");
    free(u);
}

static void test_connect_errors(struct http_client *hc, struct waiter *w)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), closed_port = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        closed_port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd); /* bound, never listened, closed: connecting is refused */
    char *u = xasprintf("http://127.0.0.1:%d/", closed_port);
    struct http_request req = {.url = u, .allow_http = true};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_CONNECT, "a refused connection fails connect (%s)",
       r ? r->msg : "");
    free(u);

    req.url = "http://192.0.2.1/jwks";
    uint64_t t0 = mono_ns();
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED, "plain http to a non-loopback address fails refused (%s)",
       r ? r->msg : "");
    ok((mono_ns() - t0) / 1000000 < 500, "the refusal needs no network round trip");

    /* allow_metadata_http opens plain http to the GCE metadata server only
     * (metadata.google.internal, 169.254.169.254); the positive case would send
     * a packet off this machine, so only its boundaries are tested here. */
    req.allow_http = false;
    req.allow_metadata_http = true;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED,
       "allow_metadata_http does not open plain http to other hosts");
    req.url = "http://169.254.169.253/computeMetadata/v1/";
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED,
       "allow_metadata_http: a neighbour of the metadata address is refused");
    req.url = "http://metadata.google.internal.evil.example/computeMetadata/v1/";
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED,
       "allow_metadata_http: a look-alike metadata name is refused");
    req.allow_http = true;
    req.allow_metadata_http = false;

    u = url("/hello");
    req.url = u;
    req.allow_http = false;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED,
       "plain http to loopback without allow_http fails refused");
    free(u);

    req.url = "ftp://127.0.0.1/x";
    req.allow_http = true;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED, "an ftp URL fails refused");

    int flag = 0;
    struct http_call *c = http_client_submit(hc, &req, on_never, &flag);
    http_call_cancel(c); /* cancelling a call whose failure is still pending */
    req.url = "ftp://127.0.0.1/y";
    r = one(hc, w, &req);
    is_int(flag, 0, "a cancelled early failure never calls back");
}

static void test_redirects(struct http_client *hc, struct waiter *w)
{
    char *to = xasprintf("http://127.0.0.1:%d/hello", port);
    char *u = xasprintf("http://127.0.0.1:%d/redirect?to=%s", port, to);
    struct http_request req = {.url = u, .allow_http = true};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->status == 302 &&
           !strcmp(http_response_header(r, "Location") ? http_response_header(r, "Location") : "",
                   to),
       "without max_redirects a 302 is returned with its Location");
    req.max_redirects = 2;
    r = one(hc, w, &req);
    ok(r && r->status == 200 && !strcmp(r->body, "{\"hello\":\"world\"}"),
       "with max_redirects the Location is followed");
    ok(r && http_response_header(r, "Location") == NULL, "headers are those of the final response");
    free(u);
    free(to);

    u = url("/loop");
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_HTTP, "a redirect loop stops at max_redirects (%s)",
       r ? r->msg : "");
    free(u);

    u = xasprintf("http://127.0.0.1:%d/redirect?to=http://192.0.2.1/x", port);
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED, "a redirect to plain http off loopback is refused (%s)",
       r ? r->msg : "");
    free(u);

    u = xasprintf("http://127.0.0.1:%d/redirect?to=file:///etc/passwd", port);
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_REFUSED, "a redirect to file: is refused");
    free(u);

    const char *hdrs[] = {"Authorization: Bearer secret-value"};
    req.headers = hdrs;
    req.n_headers = 1;
    u = xasprintf("http://127.0.0.1:%d/redirect?to=http://127.0.0.1:%d/echo", port, port);
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->status == 200 && strstr(r->body, "Bearer secret-value"),
       "a same-origin redirect keeps the request headers");
    free(u);
    u = xasprintf("http://127.0.0.1:%d/redirect?to=http://localhost:%d/echo", port, port);
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->status == 200 && !strstr(r->body, "secret-value"),
       "a cross-origin redirect drops the request headers");
    free(u);

    u = xasprintf("http://127.0.0.1:%d/redirect?code=303&to=/echo", port);
    req.url = u;
    req.headers = NULL;
    req.n_headers = 0;
    req.body = "a=1";
    req.body_len = 3;
    r = one(hc, w, &req);
    ok(r && strstr(r->body, "\"method\": \"GET\""), "a 303 after POST continues with GET");
    free(u);
}

static void test_tls(struct http_client *hc, struct waiter *w)
{
    char *u = xasprintf("https://127.0.0.1:%d/hello", tls_port);
    struct http_request req = {.url = u};
    struct http_response *r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_TLS, "a self-signed server fails TLS verification (%s)",
       r ? r->msg : "");
    req.ca_file = cert_path;
    r = one(hc, w, &req);
    ok(r && r->error == HTTP_ERR_NONE && r->status == 200,
       "the same server verifies with its certificate as trust anchor (%s)", r ? r->msg : "");
    free(u);
    u = xasprintf("https://localhost:%d/hello", tls_port);
    req.url = u;
    r = one(hc, w, &req);
    ok(r && r->error != HTTP_ERR_NONE,
       "a certificate for 127.0.0.1 does not verify as localhost (%s)",
       r ? http_error_name(r->error) : "");
    free(u);
    u = xasprintf("http://127.0.0.1:%d/hello", tls_port);
    req.url = u;
    req.allow_http = true;
    req.timeout_ms = 1000;
    r = one(hc, w, &req);
    ok(r && r->error != HTTP_ERR_NONE, "plain http to a TLS port does not produce a response");
    free(u);
}

static void test_sync(void)
{
    char *u = url("/hello");
    struct http_request req = {.url = u, .allow_http = true};
    struct http_response *r = http_fetch_sync(&req);
    ok(r && r->status == 200 && !strcmp(r->body, "{\"hello\":\"world\"}"),
       "http_fetch_sync returns the response");
    ok(r && !strcmp(http_response_header(r, "Cache-Control"), "public, max-age=120"),
       "http_fetch_sync keeps the headers");
    http_response_free(r);
    req.url = "http://192.0.2.1/";
    r = http_fetch_sync(&req);
    ok(r && r->error == HTTP_ERR_REFUSED, "http_fetch_sync reports refusals");
    http_response_free(r);
    free(u);
}

static void test_names(void)
{
    is_str(http_error_name(HTTP_ERR_TOO_BIG), "too_big", "error name too_big");
    is_str(http_error_name(HTTP_ERR_TLS), "tls", "error name tls");
    is_str(http_error_name(HTTP_ERR_CONNECT), "connect", "error name connect");
    is_str(http_error_name(HTTP_ERR_TIMEOUT), "timeout", "error name timeout");
    is_str(http_error_name(HTTP_ERR_HTTP), "http", "error name http");
}

int main(void)
{
    struct waiter w = {0};
    struct http_client *hc;
    char err[200] = "";

    signal(SIGPIPE, SIG_IGN);
    test_names();
    test_url_rules();
    if (make_cert() < 0 || start_server() < 0) {
        ok(0, "start the loopback test servers (openssl and /usr/bin/python3)");
        stop_server();
        return tap_done();
    }
    w.base = event_base_new();
    hc = http_client_new(w.base, err, sizeof(err));
    ok(hc != NULL, "http_client_new (%s)", err);
    if (hc) {
        test_basic(hc, &w);
        test_status_and_empty(hc, &w);
        test_post_echo(hc, &w);
        test_concurrency_and_cancel(hc, &w);
        test_timeout(hc, &w);
        test_caps(hc, &w);
        test_connect_errors(hc, &w);
        test_redirects(hc, &w);
        test_tls(hc, &w);
        /* a call still in flight when the client is freed is aborted silently */
        char *u = url("/slow?ms=2000");
        struct http_request req = {.url = u, .allow_http = true};
        int flag = 0;
        http_client_submit(hc, &req, on_never, &flag);
        event_base_loop(w.base, EVLOOP_NONBLOCK);
        free(u);
        waiter_reset(&w);
        http_client_free(hc);
        ok(flag == 0, "http_client_free aborts in-flight calls without calling back");
    }
    test_sync();
    event_base_free(w.base);
    stop_server();
    return tap_done();
}
