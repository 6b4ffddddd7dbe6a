/*
 * fuzz_csv.c - the metrics CSV writer against its reader.  The input is
 * cut into rows at 0x01 bytes and into fields at 0x00 bytes (a field is a
 * C string: it cannot hold a NUL); the rows are written with csv_field()
 * and csv_end_row() and read back with csv_read_record(), which must give
 * the same rows and fields, byte for byte.  The input is also fed to the
 * reader raw: it may refuse it, never crash.
 */
#include "config.h"

#include <string.h>

#include "common/csv.h"
#include "tests/fuzz/fuzz.h"

static void read_raw(const char *data, size_t size)
{
    size_t pos = 0;
    char **fields;
    size_t n;
    int rc;

    while ((rc = csv_read_record(data, size, &pos, &fields, &n)) == 1) {
        fuzz_assert(n > 0);
        csv_free_record(fields, n);
    }
    fuzz_assert(rc == 0 || rc == -1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    struct buf out = BUF_INIT;
    size_t nrows = 0, pos = 0, row = 0;
    const char *p, *end;

    fuzz_assert(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    read_raw(copy, size);

    /* write: rows split at 0x01, fields at 0x00 */
    p = copy;
    end = copy + size;
    for (;;) {
        const char *row_end = memchr(p, 0x01, (size_t)(end - p));
        const char *f = p;
        bool first = true;

        if (!row_end)
            row_end = end;
        for (;;) {
            size_t len = strnlen(f, (size_t)(row_end - f));
            char *field = strndup(f, len);

            fuzz_assert(field != NULL);
            csv_field(&out, field, first);
            free(field);
            first = false;
            f += len;
            if (f >= row_end)
                break;
            f++;    /* the 0x00 */
        }
        csv_end_row(&out);
        nrows++;
        if (row_end >= end)
            break;
        p = row_end + 1;
    }

    /* read back and compare */
    p = copy;
    while (row < nrows) {
        const char *row_end = memchr(p, 0x01, (size_t)(end - p));
        const char *f = p;
        char **fields;
        size_t n, k = 0;

        if (!row_end)
            row_end = end;
        fuzz_assert(csv_read_record(out.data, out.len, &pos, &fields, &n) == 1);
        for (;;) {
            size_t len = strnlen(f, (size_t)(row_end - f));

            fuzz_assert(k < n);
            fuzz_assert(strlen(fields[k]) == len && memcmp(fields[k], f, len) == 0);
            k++;
            f += len;
            if (f >= row_end)
                break;
            f++;
        }
        fuzz_assert(k == n);
        csv_free_record(fields, n);
        row++;
        p = row_end + 1;
    }
    {
        char **fields;
        size_t n;

        fuzz_assert(csv_read_record(out.data, out.len, &pos, &fields, &n) == 0);
    }
    buf_release(&out);
    free(copy);
    return 0;
}
