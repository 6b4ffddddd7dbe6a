/*
 * buf.h - a growable byte buffer (always NUL-terminated) for building
 * responses and CSV.  Out of memory aborts: a daemon that cannot grow a
 * response buffer has nothing better to do.
 */
#ifndef QT_BUF_H
#define QT_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_grow(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *data, size_t len);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_addf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hands the data to the caller (free() it) and resets b. */
char *buf_detach(struct buf *b, size_t *len);
void buf_release(struct buf *b);

#endif
