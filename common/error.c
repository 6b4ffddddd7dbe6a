#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

static void error_vset(struct qt_error *err, int status, const char *code,
                       const char *field, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if there is none:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s)
{
    size_t n, i;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)   /* also stops at the NUL */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void qt_utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p) {
        size_t n = utf8_seq(p);

        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
}

/* Messages echo what users sent (a URL's bytes, a name cut to fit): they
 * are made valid UTF-8 here, once, because a JSON answer cannot carry
 * anything else. */
static void error_vset(struct qt_error *err, int status, const char *code,
                       const char *field, const char *fmt, va_list ap)
{
    err->status = status;
    snprintf(err->code, sizeof(err->code), "%s", code);
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    qt_utf8_sanitize(err->field);
    qt_utf8_sanitize(err->message);
}

int qt_error_set(struct qt_error *err, int status, const char *code,
                 const char *field, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return -1;
    va_start(ap, fmt);
    error_vset(err, status, code, field, fmt, ap);
    va_end(ap);
    return -1;
}

int qt_error_arg(struct qt_error *err, const char *field, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return -1;
    va_start(ap, fmt);
    error_vset(err, 400, "invalid_argument", field, fmt, ap);
    va_end(ap);
    return -1;
}
