/*
 * test_resolve.c: upstream address sets (resolve.h): every A and AAAA
 * address kept in order without duplicates, the round-robin and failover
 * walk over a set, and a resolver that keeps its last good set when a
 * refresh fails.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resolve.h"
#include "tap.h"

/* A getaddrinfo-shaped list of `n` addresses (IPv4 or IPv6 literals). */
static struct addrinfo *list_of(const char **ips, size_t n, struct sockaddr_storage *store,
                                struct addrinfo *ai)
{
    for (size_t i = 0; i < n; i++) {
        memset(&ai[i], 0, sizeof(ai[i]));
        memset(&store[i], 0, sizeof(store[i]));
        ai[i].ai_socktype = SOCK_STREAM;
        if (strchr(ips[i], ':')) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&store[i];
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(443);
            inet_pton(AF_INET6, ips[i], &a->sin6_addr);
            ai[i].ai_family = AF_INET6;
            ai[i].ai_addrlen = sizeof(*a);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&store[i];
            a->sin_family = AF_INET;
            a->sin_port = htons(443);
            inet_pton(AF_INET, ips[i], &a->sin_addr);
            ai[i].ai_family = AF_INET;
            ai[i].ai_addrlen = sizeof(*a);
        }
        ai[i].ai_addr = (struct sockaddr *)&store[i];
        ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
    }
    return n ? &ai[0] : NULL;
}

static void test_set(void)
{
    const char *ips[] = {"216.239.32.53", "2001:4860:4802:32::35", "216.239.34.53", "216.239.32.53",
                         "216.239.36.53"};
    struct sockaddr_storage st[40];
    struct addrinfo ai[40];
    struct resolve_set *s = resolve_set_from(list_of(ips, 5, st, ai));

    ok(s != NULL, "a set from five entries");
    is_int(s->n, 4, "the duplicate is dropped, A and AAAA kept");
    is_str(s->a[0].text, "216.239.32.53:443", "getaddrinfo's order kept");
    is_str(s->a[1].text, "[2001:4860:4802:32::35]:443", "IPv6 in brackets");
    is_str(s->a[3].text, "216.239.36.53:443", "the last one");
    resolve_set_unref(s);

    ok(resolve_set_from(NULL) == NULL, "no entry: no set");
    {
        const char *many[40];
        char buf[40][16];
        for (int i = 0; i < 40; i++) {
            snprintf(buf[i], sizeof(buf[i]), "10.0.0.%d", i + 1);
            many[i] = buf[i];
        }
        s = resolve_set_from(list_of(many, 40, st, ai));
        is_int(s->n, RESOLVE_MAX_ADDRS, "capped at RESOLVE_MAX_ADDRS");
        resolve_set_unref(s);
    }
}

static void test_pick(void)
{
    const char *ips[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
    struct sockaddr_storage st[3];
    struct addrinfo ai[3];
    struct resolve_set *s = resolve_set_from(list_of(ips, 3, st, ai));
    int seen[3] = {0, 0, 0};

    /* Successive connections start at successive addresses. */
    for (unsigned c = 0; c < 30; c++)
        seen[resolve_pick(s, c, 0)]++;
    ok(seen[0] == 10 && seen[1] == 10 && seen[2] == 10, "round robin spreads evenly");
    /* A connection starting at the last address fails over to the others, in
     * order, each once. */
    is_int(resolve_pick(s, 2, 0), 2, "start");
    is_int(resolve_pick(s, 2, 1), 0, "first failover wraps");
    is_int(resolve_pick(s, 2, 2), 1, "second failover");
    /* The counter wrapping around UINT_MAX still lands in the set. */
    ok(resolve_pick(s, 0xffffffffu, 1) < 3, "counter wrap");
    resolve_set_unref(s);
}

static void test_resolver(void)
{
    struct resolver *r = resolver_new("lit", "127.0.0.1", 8080, 30, NULL, 0), *u, *v6;
    struct resolve_set *s;
    unsigned a = 0, b = 0;
    size_t n = 0;
    char err[200];

    s = resolver_current(r, &a);
    ok(s && s->n == 1, "a literal resolves to itself");
    is_str(s ? s->a[0].text : NULL, "127.0.0.1:8080", "its address");
    resolve_set_unref(resolver_current(r, &b));
    is_int(b, a + 1, "each connection advances the round robin");
    ok(resolver_status(r, &n, err, sizeof(err)) && n == 1 && err[0] == '\0', "status: resolved");

    /* A name that cannot resolve: no set, the error kept. */
    u = resolver_new("bad", "baton-unit-test.invalid", 80, 30, NULL, 0);
    ok(resolver_current(u, &a) == NULL, ".invalid never resolves: no set");
    ok(!resolver_status(u, &n, err, sizeof(err)) && strstr(err, "baton-unit-test.invalid"),
       "status names the host: %s", err);
    ok(resolver_resolve(u) < 0, "a refresh fails again");
    resolver_free(u);

    /* Brackets of an IPv6 literal as written in a URL. */
    v6 = resolver_new("v6", "[::1]", 443, 30, NULL, 0);
    {
        /* AI_ADDRCONFIG may hide ::1 on a host without IPv6: then no set */
        struct resolve_set *t = resolver_current(v6, &a);
        ok(!t || strcmp(t->a[0].text, "[::1]:443") == 0, "IPv6 literal without brackets");
        resolve_set_unref(t);
    }
    resolver_free(v6);

    /* The set a worker holds outlives a refresh and the resolver. */
    resolver_free(r);
    is_str(s->a[0].text, "127.0.0.1:8080", "a held set stays valid");
    resolve_set_unref(s);
}

static void test_inherit(void)
{
    struct resolver *old = resolver_new("a", "127.0.0.1", 9000, 30, NULL, 0);
    struct resolver *same = resolver_new("a", "baton-unit-inherit.invalid", 9000, 30, NULL, 0);
    unsigned st;

    /* Different host: nothing inherited. */
    resolver_inherit(same, old);
    ok(resolver_current(same, &st) == NULL, "another host inherits nothing");
    resolver_free(same);
    resolver_free(old);
}

int main(void)
{
    test_set();
    test_pick();
    test_resolver();
    test_inherit();
    return tap_done();
}
