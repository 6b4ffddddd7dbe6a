/*
 * error.h - the user-facing error carried from validation to the response.
 *
 * Code that rejects a request fills one struct qt_error; the API layer turns
 * it into the JSON body {"error": {"code", "message", "field"}} and its HTTP
 * status in one place (api/response.c).  Messages are lowercase, without a
 * trailing period, and name what the user sent.
 */
#ifndef QT_ERROR_H
#define QT_ERROR_H

struct qt_error {
    int status;          /* HTTP status: 400, 404, 409, 413, 415, 503 ... */
    char code[32];       /* machine-readable: "invalid_argument", "not_found" */
    char field[64];      /* the request field at fault, "" when none */
    char message[384];
};

/* Fill err (which may be NULL) and return -1, so callers can write
 * `return qt_error_set(err, ...)`. */
int qt_error_set(struct qt_error *err, int status, const char *code,
                 const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Replaces each byte of s that is not part of valid UTF-8 with '?', in
 * place (error_set does this to every message and field). */
void qt_utf8_sanitize(char *s);

/* Shorthand for 400 invalid_argument naming a field. */
int qt_error_arg(struct qt_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
