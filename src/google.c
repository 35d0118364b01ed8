/*
 * google.c: the credential sources of google.h, on the background thread.
 *
 * Every call is one `struct op` submitted through http_client with the
 * configured timeout and a body cap, kept on a list so that freeing the
 * source cancels what is in flight. Impersonation needs baton's own access
 * token first: one fetch at a time (single flight), the mints waiting for it
 * queue on `waiters`, and the token is cached until 5 minutes before its
 * expires_in (a 401 from IAM Credentials drops it at once). The
 * service-account key and the local key are parsed once at startup.
 *
 * Nothing here logs: failures go back to identity.c as a failure kind and a
 * detail text that names the endpoint, the status, Google's own error text
 * and the fix, and identity.c logs, counts and reports them.
 */
#include "google.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "config.h"
#include "http_client.h"
#include "list.h"
#include "mint.h"
#include "util.h"

/* google sits below the token cache: it knows identity_source.h, never identity.h. */
#ifdef BATON_IDENTITY_H
#error "google.c must not depend on identity.h (the cache); identity_source.h is its interface"
#endif

#define ACCESS_TOKEN_MARGIN_MS 300000 /* refetch 5 minutes before expiry */
#define GRANT_JWT_BEARER "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define MAX_GOOGLE_MESSAGE 300

enum op_kind {
    OP_META_ID,    /* metadata identity endpoint: an ID token */
    OP_META_TOKEN, /* metadata token endpoint: baton's access token */
    OP_META_EMAIL, /* metadata email endpoint: baton's own email, for hints */
    OP_SA_ID,      /* token_uri with target_audience: an ID token */
    OP_SA_TOKEN,   /* token_uri with scope: baton's access token */
    OP_IAM_ID,     /* IAM Credentials generateIdToken: an impersonated ID token */
    OP_ACCESS,     /* a wait for baton's access token itself (google_source_access_token) */
};

struct google;

struct op {
    struct google *g;
    struct list link; /* on g->ops (in flight) or g->waiters; else self-linked */
    struct http_call *call;
    enum op_kind kind;
    char *sa; /* owned; NULL: baton's own identity */
    char *audience;
    identity_mint_done done; /* NULL for access-token and email fetches */
    void *arg;
};

struct google {
    struct event_base *bg;
    struct http_client *http;
    enum cfg_google_source source;
    unsigned timeout_ms;
    char *meta_base; /* http://HOST/computeMetadata/v1/instance/service-accounts/default */
    char *iam_url;   /* no trailing slash */
    /* service_account_key */
    char *client_email;
    char *token_uri;
    struct mint_key *key; /* also the local key */
    /* local */
    char *local_issuer;
    unsigned lifetime_s;
    /* baton's own access token, for impersonation */
    char *access_token;
    int64_t access_valid_until_ms;
    bool at_fetching;
    char *own_email; /* NULL until known (metadata) */
    bool email_fetching;
    struct list ops;     /* struct op, in flight */
    struct list waiters; /* struct op, waiting for baton's access token */
};

/* ---------------------------------------------------------------- helpers */

char *google_form_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = xmalloc(3 * n + 1), *p = out;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

bool google_email_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 254 || s[0] == '.' || s[0] == '-' || strstr(s, ".."))
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || c == '@' || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

enum identity_failure google_status_failure(int status)
{
    if (status == 401 || status == 403)
        return IDENTITY_FAIL_PERMISSION;
    if (status == 404)
        return IDENTITY_FAIL_NOT_FOUND;
    if (status >= 500 && status <= 599)
        return IDENTITY_FAIL_HTTP_5XX;
    return IDENTITY_FAIL_HTTP;
}

static enum identity_failure transport_failure(enum http_error e)
{
    switch (e) {
    case HTTP_ERR_CONNECT:
        return IDENTITY_FAIL_CONNECT;
    case HTTP_ERR_TIMEOUT:
        return IDENTITY_FAIL_TIMEOUT;
    case HTTP_ERR_TOO_BIG:
        return IDENTITY_FAIL_TOO_BIG;
    case HTTP_ERR_TLS:
        return IDENTITY_FAIL_TLS;
    case HTTP_ERR_HTTP:
        return IDENTITY_FAIL_MALFORMED;
    default:
        return IDENTITY_FAIL_INTERNAL;
    }
}

/* Copies at most `cap` bytes of s into out, control bytes as spaces. */
static void clean_copy(char *out, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s && *s && i + 1 < cap; s++)
        out[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
    out[i] = '\0';
}

/*
 * Google's error text from an error body: {"error":{"status","message"}}
 * (Google APIs) or {"error":"invalid_grant","error_description"} (OAuth).
 */
static void google_error_text(const char *body, size_t len, char *out, size_t cap)
{
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL), *e;
    char a[80] = "", b[MAX_GOOGLE_MESSAGE + 1] = "";
    out[0] = '\0';
    if (!json_is_object(j))
        goto out;
    e = json_object_get(j, "error");
    if (json_is_object(e)) {
        clean_copy(a, sizeof a, json_string_value(json_object_get(e, "status")));
        clean_copy(b, sizeof b, json_string_value(json_object_get(e, "message")));
    } else if (json_is_string(e)) {
        clean_copy(a, sizeof a, json_string_value(e));
        clean_copy(b, sizeof b, json_string_value(json_object_get(j, "error_description")));
    }
    if (a[0] || b[0])
        snprintf(out, cap, "%s%s%s", a, a[0] && b[0] ? ": " : "", b);
out:
    json_decref(j);
}

char *google_impersonation_detail(int status, const char *body, size_t len, const char *target,
                                  const char *own)
{
    char gtext[MAX_GOOGLE_MESSAGE + 100];
    const char *member = own ? own : "<baton's service account>";
    google_error_text(body, len, gtext, sizeof gtext);
    if (status == 403)
        return xasprintf(
            "IAM Credentials refused generateIdToken for %s (HTTP 403%s%s). Fix: grant "
            "roles/iam.serviceAccountOpenIdTokenCreator on the service account %s to baton's "
            "identity %s: gcloud iam service-accounts add-iam-policy-binding %s "
            "--member=serviceAccount:%s --role=roles/iam.serviceAccountOpenIdTokenCreator "
            "(and enable the API iamcredentials.googleapis.com in baton's project)",
            target, gtext[0] ? ", " : "", gtext, target, member, target, member);
    if (status == 404)
        return xasprintf(
            "IAM Credentials does not know the service account %s (HTTP 404%s%s). Fix: check the "
            "step policy's service_account (spelling, project) and that the account exists: "
            "gcloud iam service-accounts describe %s",
            target, gtext[0] ? ", " : "", gtext, target);
    if (status == 401)
        return xasprintf("IAM Credentials rejected baton's own access token (HTTP 401%s%s); "
                         "a new one is fetched for the next attempt",
                         gtext[0] ? ", " : "", gtext);
    return xasprintf("IAM Credentials answered HTTP %d to generateIdToken for %s%s%s", status,
                     target, gtext[0] ? ": " : "", gtext);
}

/* A non-empty JSON string member of an object body; owned, or NULL. */
static char *json_body_string(const char *body, size_t len, const char *name)
{
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    const char *v = json_string_value(json_object_get(j, name));
    char *out = (v && *v) ? xstrdup(v) : NULL;
    json_decref(j);
    return out;
}

static void scrub_free(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* ------------------------------------------------------------- operations */

static void op_free(struct op *op)
{
    if (!op)
        return;
    free(op->sa);
    free(op->audience);
    free(op);
}

static struct op *op_new(struct google *g, enum op_kind kind, const char *sa, const char *aud,
                         identity_mint_done done, void *arg)
{
    struct op *op = xcalloc(1, sizeof *op);
    op->g = g;
    list_init(&op->link);
    op->kind = kind;
    op->sa = sa ? xstrdup(sa) : NULL;
    op->audience = aud ? xstrdup(aud) : NULL;
    op->done = done;
    op->arg = arg;
    return op;
}

/* Hands a mint's outcome to identity.c and frees the op. */
static void op_finish(struct op *op, const char *token, enum identity_failure f, int status,
                      const char *detail)
{
    struct identity_mint_result res = {
        .ok = token != NULL,
        .token = token,
        .token_len = token ? strlen(token) : 0,
        .failure = f,
        .http_status = status,
        .detail = detail,
    };
    if (op->done)
        op->done(op->arg, &res);
    op_free(op);
}

static void on_http_done(struct http_response *resp, void *arg);

static void op_submit(struct op *op, const char *method, const char *url,
                      const char *const *headers, size_t n_headers, const char *body,
                      size_t body_len, size_t cap)
{
    struct google *g = op->g;
    struct http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .n_headers = n_headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = g->timeout_ms,
        .max_body = cap,
        /* Endpoints come from trusted config; http_client still permits plain
         * http to loopback only (the stand-ins of the tests), and to the GCE
         * metadata server for the metadata calls (it only speaks plain http). */
        .allow_http = true,
        .allow_metadata_http = op->kind == OP_META_ID || op->kind == OP_META_TOKEN ||
                               op->kind == OP_META_EMAIL,
    };
    list_push_front(&g->ops, &op->link);
    op->call = http_client_submit(g->http, &req, on_http_done, op);
}

static const char *endpoint_name(enum op_kind k)
{
    switch (k) {
    case OP_META_ID:
        return "metadata server identity endpoint";
    case OP_META_TOKEN:
        return "metadata server token endpoint";
    case OP_META_EMAIL:
        return "metadata server email endpoint";
    case OP_SA_ID:
    case OP_SA_TOKEN:
        return "OAuth token endpoint (token_uri)";
    case OP_IAM_ID:
        return "IAM Credentials generateIdToken";
    case OP_ACCESS:
        return "access token";
    }
    return "Google endpoint";
}

static void submit_meta_id(struct op *op)
{
    struct google *g = op->g;
    static const char *const hdrs[] = {"Metadata-Flavor: Google"};
    char *aud = google_form_encode(op->audience);
    char *url = xasprintf("%s/identity?audience=%s&format=full", g->meta_base, aud);
    op_submit(op, "GET", url, hdrs, 1, NULL, 0, GOOGLE_MAX_TOKEN_BODY);
    free(aud);
    free(url);
}

static void submit_meta_get(struct op *op, const char *leaf, size_t cap)
{
    static const char *const hdrs[] = {"Metadata-Flavor: Google"};
    char *url = xasprintf("%s/%s", op->g->meta_base, leaf);
    op_submit(op, "GET", url, hdrs, 1, NULL, 0, cap);
    free(url);
}

/* POSTs a JWT-bearer grant to token_uri for an ID token (audience) or an access token. */
static void submit_sa(struct op *op)
{
    struct google *g = op->g;
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded"};
    char err[256];
    char *grant = NULL, *body = NULL;
    char *assertion = mint_sa_assertion(
        g->key, g->client_email, g->token_uri, op->kind == OP_SA_ID ? op->audience : NULL,
        op->kind == OP_SA_ID ? NULL : GOOGLE_SCOPE, now_ms() / 1000, err, sizeof err);
    if (!assertion) {
        char *d = xasprintf("cannot sign the service-account assertion: %s", err);
        op_finish(op, NULL, IDENTITY_FAIL_CREDENTIALS, 0, d);
        free(d);
        return;
    }
    grant = google_form_encode(GRANT_JWT_BEARER);
    body = xasprintf("grant_type=%s&assertion=%s", grant, assertion);
    op_submit(op, "POST", g->token_uri, hdrs, 1, body, strlen(body), GOOGLE_MAX_JSON_BODY);
    scrub_free(assertion);
    scrub_free(body);
    free(grant);
}

static void submit_iam(struct op *op)
{
    struct google *g = op->g;
    char *auth = xasprintf("Authorization: Bearer %s", g->access_token);
    const char *hdrs[] = {auth, "Content-Type: application/json"};
    json_t *j = json_pack("{s:s, s:b}", "audience", op->audience, "includeEmail", 1);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    char *url = xasprintf("%s/v1/projects/-/serviceAccounts/%s:generateIdToken", g->iam_url,
                          op->sa);
    json_decref(j);
    if (!body) {
        op_finish(op, NULL, IDENTITY_FAIL_INTERNAL, 0,
                  "cannot encode the request (audience not UTF-8?)");
    } else {
        op_submit(op, "POST", url, hdrs, 2, body, strlen(body), GOOGLE_MAX_JSON_BODY);
    }
    scrub_free(auth);
    free(body);
    free(url);
}

static void fetch_access_token(struct google *g)
{
    struct op *op;
    if (g->at_fetching)
        return;
    g->at_fetching = true;
    /* Impersonation failures name baton's own account: learn it alongside. */
    if (g->source == GOOGLE_METADATA && !g->own_email && !g->email_fetching) {
        g->email_fetching = true;
        submit_meta_get(op_new(g, OP_META_EMAIL, NULL, NULL, NULL, NULL), "email", 1024);
    }
    op = op_new(g, g->source == GOOGLE_METADATA ? OP_META_TOKEN : OP_SA_TOKEN, NULL, NULL, NULL,
                NULL);
    if (op->kind == OP_META_TOKEN)
        submit_meta_get(op, "token", GOOGLE_MAX_JSON_BODY);
    else
        submit_sa(op);
}

/* The access-token fetch finished: release the impersonations waiting on it. */
static void access_token_done(struct google *g, enum identity_failure f, int status,
                              const char *detail)
{
    struct list taken, *n;
    char *d = detail ? xasprintf("baton's own access token (needed to impersonate): %s", detail)
                     : NULL;
    list_move_all(&taken, &g->waiters); /* what the callbacks queue anew waits for the next fetch */
    g->at_fetching = false;
    while ((n = list_first(&taken))) {
        struct op *w = list_entry(n, struct op, link);
        list_remove(n);
        if (d)
            op_finish(w, NULL, f, status, d);
        else if (w->kind == OP_ACCESS)
            op_finish(w, g->access_token, 0, 200, NULL);
        else
            submit_iam(w);
    }
    free(d);
}

static void need_access_token(struct op *op)
{
    struct google *g = op->g;
    if (g->access_token && g->access_valid_until_ms > now_ms()) {
        if (op->kind == OP_ACCESS)
            op_finish(op, g->access_token, 0, 200, NULL);
        else
            submit_iam(op);
        return;
    }
    list_push_front(&g->waiters, &op->link);
    fetch_access_token(g);
}

/* Parses an access-token answer {access_token, expires_in} into the cache. */
static int store_access_token(struct google *g, const struct http_response *resp, char *err,
                              size_t errlen)
{
    json_t *j = json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, NULL);
    const char *at = json_string_value(json_object_get(j, "access_token"));
    json_t *exp = json_object_get(j, "expires_in");
    int64_t life_ms, margin;
    int rc = -1;
    if (!at || !*at || strlen(at) > 8192 || strpbrk(at, "\r\n") || !json_is_integer(exp) ||
        json_integer_value(exp) <= 0 || json_integer_value(exp) > 86400) {
        snprintf(err, errlen,
                 "the answer is not JSON with a string access_token and an "
                 "integer expires_in (1..86400)");
        goto out;
    }
    life_ms = (int64_t)json_integer_value(exp) * 1000;
    margin = life_ms / 2 < ACCESS_TOKEN_MARGIN_MS ? life_ms / 2 : ACCESS_TOKEN_MARGIN_MS;
    scrub_free(g->access_token);
    g->access_token = xstrdup(at);
    g->access_valid_until_ms = now_ms() + life_ms - margin;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

static void on_http_done(struct http_response *resp, void *arg)
{
    struct op *op = arg;
    struct google *g = op->g;
    char err[300], *detail = NULL, *token = NULL;
    enum identity_failure f = IDENTITY_FAIL_INTERNAL;
    const char *flavor;

    list_remove(&op->link);
    op->call = NULL;

    if (resp->error != HTTP_ERR_NONE) {
        f = transport_failure(resp->error);
        if (resp->error == HTTP_ERR_REFUSED)
            detail = xasprintf("%s: the URL was refused (%s); http_client allows plain http to "
                               "loopback addresses only%s",
                               endpoint_name(op->kind), resp->msg,
                               g->source == GOOGLE_METADATA
                                   ? " (the metadata server is plain http on a link-local "
                                     "address: use service_account_key or local credentials "
                                     "until http_client admits it)"
                                   : "");
        else
            detail = xasprintf("%s: %s%s%s", endpoint_name(op->kind), http_error_name(resp->error),
                               resp->msg[0] ? ": " : "", resp->msg);
        goto fail;
    }
    if (resp->status != 200) {
        f = google_status_failure(resp->status);
        if (op->kind == OP_IAM_ID) {
            if (resp->status == 401) {
                /* Revoked or expired early: the next attempt fetches a new one. */
                scrub_free(g->access_token);
                g->access_token = NULL;
            }
            detail = google_impersonation_detail(resp->status, resp->body, resp->body_len, op->sa,
                                                 g->source == GOOGLE_SA_KEY ? g->client_email
                                                                            : g->own_email);
        } else {
            google_error_text(resp->body, resp->body_len, err, sizeof err);
            detail = xasprintf("%s answered HTTP %d%s%s%s", endpoint_name(op->kind), resp->status,
                               err[0] ? ": " : "", err,
                               resp->status == 404 && op->kind == OP_META_ID
                                   ? " (no service account is attached to this instance or service)"
                               : strstr(err, "invalid_grant")
                                   ? " (the key may be deleted or disabled, or the clock is skewed)"
                                   : "");
        }
        goto fail;
    }
    if (op->kind == OP_META_ID || op->kind == OP_META_TOKEN || op->kind == OP_META_EMAIL) {
        flavor = http_response_header(resp, "Metadata-Flavor");
        if (!flavor || strcmp(flavor, "Google") != 0) {
            f = IDENTITY_FAIL_MALFORMED;
            detail = xasprintf("%s: the answer lacks the header Metadata-Flavor: Google (is "
                               "metadata_host really the metadata server?)",
                               endpoint_name(op->kind));
            goto fail;
        }
    }

    switch (op->kind) {
    case OP_META_ID:
        token = xstrndup(resp->body, resp->body_len);
        op_finish(op, token, 0, 200, NULL);
        break;
    case OP_ACCESS: /* never submitted: it waits on the access-token fetch */
    case OP_SA_ID:
    case OP_IAM_ID:
        token = json_body_string(resp->body, resp->body_len,
                                 op->kind == OP_SA_ID ? "id_token" : "token");
        if (!token) {
            f = IDENTITY_FAIL_MALFORMED;
            detail = xasprintf("%s: the answer is not JSON with a string \"%s\"",
                               endpoint_name(op->kind),
                               op->kind == OP_SA_ID ? "id_token" : "token");
            goto fail;
        }
        op_finish(op, token, 0, 200, NULL);
        break;
    case OP_META_TOKEN:
    case OP_SA_TOKEN:
        if (store_access_token(g, resp, err, sizeof err) != 0) {
            f = IDENTITY_FAIL_MALFORMED;
            detail = xasprintf("%s: %s", endpoint_name(op->kind), err);
            goto fail;
        }
        op_free(op);
        access_token_done(g, 0, 200, NULL);
        break;
    case OP_META_EMAIL:
        g->email_fetching = false;
        token = xstrndup(resp->body, resp->body_len);
        if (google_email_ok(token))
            g->own_email = xstrdup(token);
        op_free(op);
        break;
    }
    goto out;

fail:
    switch (op->kind) {
    case OP_META_TOKEN:
    case OP_SA_TOKEN:
        op_free(op);
        access_token_done(g, f, resp->status, detail);
        break;
    case OP_META_EMAIL:
        g->email_fetching = false; /* hints then name the account generically */
        op_free(op);
        break;
    default:
        op_finish(op, NULL, f, resp->status, detail);
    }
out:
    scrub_free(token);
    free(detail);
    http_response_free(resp);
}

/* ------------------------------------------------------------- the source */

static void google_mint(void *ctx, const char *sa, const char *audience, identity_mint_done done,
                        void *arg)
{
    struct google *g = ctx;
    struct op *op;
    char err[256];

    if (g->source == GOOGLE_LOCAL) {
        int64_t now = now_ms() / 1000;
        char *tok = mint_local_id_token(g->key, g->local_issuer, audience,
                                        sa ? sa : GOOGLE_LOCAL_IDENTITY, now, now + g->lifetime_s,
                                        err, sizeof err);
        struct identity_mint_result res = {.ok = tok != NULL,
                                           .token = tok,
                                           .token_len = tok ? strlen(tok) : 0,
                                           .failure = IDENTITY_FAIL_CREDENTIALS,
                                           .detail = tok ? NULL : err};
        done(arg, &res);
        scrub_free(tok);
        return;
    }
    if (sa && !google_email_ok(sa)) {
        struct identity_mint_result res = {
            .failure = IDENTITY_FAIL_NOT_FOUND,
            .detail = "the step's service_account is not a service account email"};
        done(arg, &res);
        return;
    }
    if (sa) {
        op = op_new(g, OP_IAM_ID, sa, audience, done, arg);
        need_access_token(op);
    } else if (g->source == GOOGLE_METADATA) {
        op = op_new(g, OP_META_ID, NULL, audience, done, arg);
        submit_meta_id(op);
    } else {
        op = op_new(g, OP_SA_ID, NULL, audience, done, arg);
        submit_sa(op);
    }
}

static char *google_jwks(void *ctx)
{
    struct google *g = ctx;
    return g->source == GOOGLE_LOCAL && g->key ? mint_key_jwks_json(g->key) : NULL;
}

static void google_free(void *ctx)
{
    struct google *g = ctx;
    struct list *n;
    if (!g)
        return;
    while ((n = list_first(&g->ops))) {
        struct op *op = list_entry(n, struct op, link);
        list_remove(n);
        if (op->call)
            http_call_cancel(op->call);
        op_free(op);
    }
    while ((n = list_first(&g->waiters))) {
        list_remove(n);
        op_free(list_entry(n, struct op, link));
    }
    mint_key_free(g->key);
    scrub_free(g->access_token);
    free(g->meta_base);
    free(g->iam_url);
    free(g->client_email);
    free(g->token_uri);
    free(g->local_issuer);
    free(g->own_email);
    free(g);
}

/* ------------------------------------------------------------- key files */

struct sa_key {
    char *client_email, *token_uri;
    struct mint_key *key;
};

static int sa_key_load(const char *path, struct sa_key *out, char *err, size_t errlen)
{
    static const char *const fields[] = {"type", "client_email", "private_key", "private_key_id",
                                         "token_uri"};
    char *text = NULL, kerr[200];
    size_t len = 0;
    json_t *j = NULL;
    json_error_t je;
    const char *v[5];
    int rc = -1;

    memset(out, 0, sizeof *out);
    text = read_secret_file(path, GOOGLE_MAX_KEY_FILE, &len, err, errlen);
    if (!text)
        goto out;
    j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(j)) {
        /* je.text may quote the file: only the position is reported. */
        snprintf(err, errlen, "%s:%d:%d: not a JSON object", path, j ? 1 : je.line,
                 j ? 1 : je.column);
        goto out;
    }
    for (size_t i = 0; i < 5; i++) {
        v[i] = json_string_value(json_object_get(j, fields[i]));
        if (!v[i] || !*v[i]) {
            snprintf(err, errlen,
                     "%s: \"%s\" missing or not a non-empty string "
                     "(is this a service-account key file?)",
                     path, fields[i]);
            goto out;
        }
    }
    if (strcmp(v[0], "service_account") != 0) {
        snprintf(err, errlen, "%s: \"type\" is not \"service_account\"", path);
        goto out;
    }
    if (!google_email_ok(v[1]) || !strchr(v[1], '@')) {
        snprintf(err, errlen, "%s: \"client_email\" is not a service account email", path);
        goto out;
    }
    if (strncmp(v[4], "https://", 8) != 0 && strncmp(v[4], "http://", 7) != 0) {
        snprintf(err, errlen, "%s: \"token_uri\" is not an http(s) URL", path);
        goto out;
    }
    out->key = mint_key_from_pem(v[2], strlen(v[2]), v[3], kerr, sizeof kerr);
    if (!out->key) {
        snprintf(err, errlen, "%s: \"private_key\": %s", path, kerr);
        goto out;
    }
    out->client_email = xstrdup(v[1]);
    out->token_uri = xstrdup(v[4]);
    rc = 0;
out:
    if (j) {
        /* The key's PEM lives inside jansson's strings too. */
        json_t *pk = json_object_get(j, "private_key");
        if (json_is_string(pk))
            OPENSSL_cleanse((char *)json_string_value(pk), json_string_length(pk));
    }
    json_decref(j);
    if (text) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    return rc;
}

int google_sa_key_validate(const char *path, char *err, size_t errlen)
{
    struct sa_key k;
    if (sa_key_load(path, &k, err, errlen) != 0)
        return -1;
    mint_key_free(k.key);
    free(k.client_email);
    free(k.token_uri);
    return 0;
}

static bool host_ok(const char *h)
{
    if (!*h || strlen(h) > 255)
        return false;
    for (; *h; h++)
        if (!(isalnum((unsigned char)*h) || strchr(".-:[]", *h)))
            return false;
    return true;
}

int google_source_new(struct event_base *bg, struct http_client *http, const struct cfg_google *cfg,
                      struct identity_source *out, char *err, size_t errlen)
{
    struct google *g = xcalloc(1, sizeof *g);
    const char *host, *iam;
    size_t n;

    g->bg = bg;
    g->http = http;
    list_init(&g->ops);
    list_init(&g->waiters);
    g->source = cfg->source;
    g->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;

    host = cfg->metadata_host;
    if (!host || !*host)
        host = getenv("GCE_METADATA_HOST");
    if (!host || !*host)
        host = GOOGLE_DEFAULT_METADATA_HOST;
    if (!host_ok(host)) {
        snprintf(err, errlen, "google.metadata_host \"%.100s\" is not a host[:port]", host);
        goto fail;
    }
    g->meta_base = xasprintf("http://%s/computeMetadata/v1/instance/service-accounts/default",
                             host);
    iam = cfg->iamcredentials_url && *cfg->iamcredentials_url ? cfg->iamcredentials_url
                                                              : GOOGLE_DEFAULT_IAM_URL;
    g->iam_url = xstrdup(iam);
    n = strlen(g->iam_url);
    while (n > 0 && g->iam_url[n - 1] == '/')
        g->iam_url[--n] = '\0';

    if (cfg->source == GOOGLE_SA_KEY) {
        struct sa_key k;
        if (!cfg->service_account_key) {
            snprintf(err, errlen, "google.service_account_key: no key file configured");
            goto fail;
        }
        if (sa_key_load(cfg->service_account_key, &k, err, errlen) != 0)
            goto fail;
        g->key = k.key;
        g->client_email = k.client_email;
        g->own_email = xstrdup(k.client_email);
        if (cfg->token_uri && *cfg->token_uri) {
            g->token_uri = xstrdup(cfg->token_uri);
            free(k.token_uri);
        } else {
            g->token_uri = k.token_uri;
        }
    } else if (cfg->source == GOOGLE_LOCAL) {
        char kerr[200];
        g->local_issuer = xstrdup(cfg->local_issuer && *cfg->local_issuer ? cfg->local_issuer
                                                                          : "https://baton.local");
        g->lifetime_s = cfg->token_lifetime_s ? cfg->token_lifetime_s : 3600;
        if (cfg->local_key && *cfg->local_key) {
            size_t len = 0;
            char *pem = read_secret_file(cfg->local_key, GOOGLE_MAX_KEY_FILE, &len, err, errlen);
            if (!pem)
                goto fail;
            g->key = mint_key_from_pem(pem, len, NULL, kerr, sizeof kerr);
            OPENSSL_cleanse(pem, len);
            free(pem);
            if (!g->key) {
                snprintf(err, errlen, "google.local_key %s: %s", cfg->local_key, kerr);
                goto fail;
            }
        } else {
            g->key = mint_key_generate(kerr, sizeof kerr);
            if (!g->key) {
                snprintf(err, errlen, "google local credentials: %s", kerr);
                goto fail;
            }
        }
    }

    out->ctx = g;
    out->mint = google_mint;
    out->jwks_json = google_jwks;
    out->free = google_free;
    return 0;
fail:
    google_free(g);
    return -1;
}

/* ------------------------------------------------- baton's own access token */

void google_source_access_token(void *ctx, identity_mint_done done, void *arg)
{
    struct google *g = ctx;
    if (g->source == GOOGLE_LOCAL) {
        struct identity_mint_result res = {
            .failure = IDENTITY_FAIL_CREDENTIALS,
            .detail = "\"local\" credentials have no Google access token: use \"metadata\" or "
                      "{\"service_account_key\": PATH}"};
        done(arg, &res);
        return;
    }
    need_access_token(op_new(g, OP_ACCESS, NULL, NULL, done, arg));
}

void google_source_access_token_drop(void *ctx)
{
    struct google *g = ctx;
    scrub_free(g->access_token);
    g->access_token = NULL;
}

/* ------------------------------------------------------- instance metadata */

bool google_metadata_expected(const struct cfg_google *cfg)
{
    const char *env = getenv("GCE_METADATA_HOST"), *ks = getenv("K_SERVICE");
    if (cfg->source != GOOGLE_METADATA)
        return false;
    return (ks && *ks) || (env && *env) ||
           (cfg->metadata_host && strcmp(cfg->metadata_host, GOOGLE_DEFAULT_METADATA_HOST) != 0);
}

char *google_metadata_instance_id(const struct cfg_google *cfg, unsigned timeout_ms, char *err,
                                  size_t errlen)
{
    static const char *const hdrs[] = {"Metadata-Flavor: Google"};
    const char *host = cfg->metadata_host && *cfg->metadata_host ? cfg->metadata_host
                                                                 : GOOGLE_DEFAULT_METADATA_HOST;
    char *url = NULL, *id = NULL;
    const char *flavor;
    struct http_response *resp = NULL;

    if (!host_ok(host)) {
        snprintf(err, errlen, "metadata host \"%.100s\" is not a host[:port]", host);
        goto out;
    }
    url = xasprintf("http://%s/computeMetadata/v1/instance/id", host);
    resp = http_fetch_sync(&(struct http_request){.method = "GET",
                                                  .url = url,
                                                  .headers = hdrs,
                                                  .n_headers = 1,
                                                  .timeout_ms = timeout_ms,
                                                  .max_body = 256,
                                                  .allow_http = true,
                                                  .allow_metadata_http = true});
    if (resp->error != HTTP_ERR_NONE) {
        snprintf(err, errlen, "%s: %s", http_error_name(resp->error), resp->msg);
        goto out;
    }
    flavor = http_response_header(resp, "Metadata-Flavor");
    if (resp->status != 200 || !flavor || strcmp(flavor, "Google") != 0) {
        snprintf(err, errlen, "HTTP %d%s", resp->status,
                 flavor ? "" : " without Metadata-Flavor: Google");
        goto out;
    }
    if (!resp->body_len || resp->body_len > 128 ||
        strspn(resp->body, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
            resp->body_len) {
        snprintf(err, errlen, "the answer is not an instance id");
        goto out;
    }
    id = xstrndup(resp->body, resp->body_len);
out:
    if (resp)
        http_response_free(resp);
    free(url);
    return id;
}
