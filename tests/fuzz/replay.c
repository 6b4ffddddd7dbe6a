/*
 * replay.c - runs a fuzz harness once over each file of its seed corpus
 * (tests/fuzz/corpus/<name>/) and of its regression inputs
 * (tests/fuzz/regressions/<name>/), so make check proves in every build
 * - plain, ASan, TSan - that they still pass.  The harness aborts on a
 * broken property; this prints each file as it goes so the culprit shows.
 * FUZZ_NAME is set by Makefile.am.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "tests/fuzz/fuzz.h"

static int replay_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return 0;   /* a harness may have no regressions yet */
    while ((e = readdir(d))) {
        char path[4096];
        struct buf b = BUF_INIT;
        char chunk[65536];
        size_t n;
        FILE *f;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "cannot read %s\n", path);
            closedir(d);
            return -1;
        }
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            buf_add(&b, chunk, n);
        fclose(f);
        printf("%s\n", path);
        fflush(stdout);
        LLVMFuzzerTestOneInput((const uint8_t *)(b.data ? b.data : ""), b.len);
        buf_release(&b);
        (*count)++;
    }
    closedir(d);
    return 0;
}

int main(void)
{
    const char *src = getenv("QTAUD_SRCDIR");
    char dir[4096];
    size_t count = 0;

    if (!src)
        src = ".";
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src, FUZZ_NAME);
    if (replay_dir(dir, &count) < 0)
        return EXIT_FAILURE;
    if (count == 0) {
        fprintf(stderr, "no seed corpus in %s\n", dir);
        return EXIT_FAILURE;
    }
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/regressions/%s", src, FUZZ_NAME);
    if (replay_dir(dir, &count) < 0)
        return EXIT_FAILURE;
    printf("%s: %zu inputs passed\n", FUZZ_NAME, count);
    return EXIT_SUCCESS;
}
