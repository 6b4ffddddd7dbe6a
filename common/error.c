#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

static void error_vset(struct qt_error *err, int status, const char *code,
                       const char *field, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static void error_vset(struct qt_error *err, int status, const char *code,
                       const char *field, const char *fmt, va_list ap)
{
    err->status = status;
    snprintf(err->code, sizeof(err->code), "%s", code);
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
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
