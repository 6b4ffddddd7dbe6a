#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/csv.h"

void csv_field(struct buf *b, const char *s, bool first)
{
    if (!first)
        buf_addc(b, ',');
    if (!s)
        return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        buf_adds(b, s);
        return;
    }
    buf_addc(b, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            buf_addc(b, '"');
        buf_addc(b, *p);
    }
    buf_addc(b, '"');
}

void csv_end_row(struct buf *b)
{
    buf_add(b, "\r\n", 2);
}

static void record_push(char ***fields, size_t *n, size_t *cap, struct buf *f)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *fields = realloc(*fields, *cap * sizeof(**fields));
        if (!*fields)
            abort();
    }
    (*fields)[(*n)++] = buf_detach(f, NULL);
}

int csv_read_record(const char *data, size_t len, size_t *pos,
                    char ***fields, size_t *nfields)
{
    struct buf f = BUF_INIT;
    size_t i = *pos, n = 0, cap = 0;
    char **out = NULL;

    *fields = NULL;
    *nfields = 0;
    if (i >= len)
        return 0;
    for (;;) {
        if (i < len && data[i] == '"') {
            i++;
            for (;;) {
                if (i >= len)
                    goto malformed;
                if (data[i] == '"') {
                    if (i + 1 < len && data[i + 1] == '"') {
                        buf_addc(&f, '"');
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                buf_addc(&f, data[i++]);
            }
            if (i < len && data[i] != ',' && data[i] != '\r' && data[i] != '\n')
                goto malformed;
        } else {
            while (i < len && data[i] != ',' && data[i] != '\r'
                   && data[i] != '\n') {
                if (data[i] == '"')
                    goto malformed;
                buf_addc(&f, data[i++]);
            }
        }
        record_push(&out, &n, &cap, &f);
        if (i < len && data[i] == ',') {
            i++;
            continue;
        }
        if (i < len && data[i] == '\r')
            i++;
        if (i < len && data[i] == '\n')
            i++;
        break;
    }
    *pos = i;
    *fields = out;
    *nfields = n;
    return 1;

malformed:
    buf_release(&f);
    csv_free_record(out, n);
    return -1;
}

void csv_free_record(char **fields, size_t nfields)
{
    for (size_t i = 0; i < nfields; i++)
        free(fields[i]);
    free(fields);
}
