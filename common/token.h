/*
 * token.h - bearer tokens: generation, comparison, and the admin token's
 * file in the state dir.
 *
 * A token is 32 bytes from getrandom() as 64 lowercase hex digits.  Tokens
 * are compared in time that depends only on the expected token's length,
 * so a client cannot find one a byte at a time by timing answers.
 */
#ifndef QT_TOKEN_H
#define QT_TOKEN_H

#include <stdbool.h>

#include "common/error.h"

#define QT_TOKEN_LEN 64     /* hex digits */
#define QT_TOKEN_MAX 256    /* longest token read from a file */

/* Fills out (QT_TOKEN_LEN + 1 bytes) with a new token.  Returns 0, or -1
 * with errno when the kernel has no entropy to give. */
int qt_token_new(char *out);

/* Whether got (may be NULL) equals want. */
bool qt_token_equal(const char *want, const char *got);

/*
 * Reads the token from path into out (QT_TOKEN_MAX + 1 bytes).  When the
 * file does not exist and create is true, writes a new token there first
 * (mode 0600, created atomically: a reader never sees half a token).  The
 * file must belong to this user and be unreadable by group and others,
 * and hold 16 to QT_TOKEN_MAX printable characters (spaces and a newline
 * around them are ignored).  Returns 0, or -1 with err naming field.
 */
int qt_token_file_load(const char *path, bool create, const char *field, char *out,
                       struct qt_error *err);

#endif
