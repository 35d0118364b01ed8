/*
 * replay.c: runs a fuzz target's LLVMFuzzerTestOneInput over every file of its
 * seed corpus, one TAP assertion per file, so `make check` replays the corpora
 * without libFuzzer (and under ASan/UBSan in CI). A crash or sanitizer report
 * fails the suite. The corpus directory is tests/fuzz/corpus/<name>, where
 * <name> is the target's name without the "replay_" prefix.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "../unit/tap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    const char *src = getenv("BATON_SRCDIR");
    const char *base = strrchr(argv[0], '/');
    char dir[4096];
    char **names = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    (void)argc;
    base = base ? base + 1 : argv[0];
    if (!strncmp(base, "lt-", 3))
        base += 3;
    if (!strncmp(base, "replay_", 7))
        base += 7;
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src ? src : BATON_SRCDIR, base);
    d = opendir(dir);
    if (!ok(d != NULL, "corpus directory %s exists", dir))
        return tap_done();
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp);
    ok(n > 0, "corpus %s has seeds (%zu)", base, n);
    for (size_t i = 0; i < n; i++) {
        char path[8192], *buf;
        size_t len;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (read_file_capped(path, 16u << 20, &buf, &len) != 0) {
            ok(0, "read seed %s", names[i]);
            continue;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
        ok(1, "seed %s/%s replays without a crash or sanitizer report", base, names[i]);
        free(buf);
        free(names[i]);
    }
    free(names);
    return tap_done();
}
