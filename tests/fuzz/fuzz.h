/*
 * fuzz.h - what the fuzz harnesses share.
 *
 * Each harness defines LLVMFuzzerTestOneInput().  Built with clang's
 * -fsanitize=fuzzer (scripts/fuzz) it is a libFuzzer target; built with
 * replay.c instead (make check) the same function runs once over every
 * file of its seed corpus, so the corpus keeps passing in every build.
 * A harness reports a broken property with fuzz_assert(), which aborts -
 * a crash to both drivers.
 */
#ifndef QT_FUZZ_H
#define QT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/jsoncheck.h"
#include "daemon/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_assert(cond)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* The limits the HTTP server applies to every body (api/server.c). */
static const struct jsoncheck_limits fuzz_limits = {
    .max_depth = JSONCHECK_MAX_DEPTH,
    .max_string = SPEC_MAX_STRING,
    .max_key = SPEC_MAX_NAME,
};

/* Every refusal must be one a user can read: a status, a code and a
 * message, and a field that is valid UTF-8 (it goes into JSON). */
static inline void fuzz_check_error(const struct qt_error *err)
{
    json_t *j;

    fuzz_assert(err->status >= 400 && err->status < 600);
    fuzz_assert(err->code[0] != '\0');
    fuzz_assert(err->message[0] != '\0');
    j = json_pack("{s:s, s:s, s:s}", "code", err->code, "message", err->message,
                  "field", err->field);
    fuzz_assert(j != NULL);
    json_decref(j);
}

#endif
