/*
 * main.c: command dispatch for the `baton` program (docs/spec.md "Command line").
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("baton %s\n", PACKAGE_VERSION);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"version", cmd_version}, {"check", cmd_check}, {"explain", cmd_explain},
    {"audit", cmd_audit},     {"serve", cmd_serve}, {"sign-url", cmd_sign_url},
};

static void usage(FILE *out)
{
    fputs("usage: baton serve   [-c FILE]\n"
          "       baton check   [-c FILE]\n"
          "       baton explain [-c FILE] --method M --path P [--host H] [--header 'N: v']...\n"
          "                     (--token JWT | --claims JSON) [--json]\n"
          "       baton audit verify FILE... [--pubkey PEM] [--witness DIR] [--live]\n"
          "                          [--from-genesis]\n"
          "       baton audit keygen --out PEM\n"
          "       baton version\n"
          "       baton sign-url [-c FILE] --method M --url URL --ttl DURATION [--uses N]\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "baton: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
