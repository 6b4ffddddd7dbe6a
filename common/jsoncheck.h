/*
 * jsoncheck.h - bounds on what a JSON request body may hold, checked
 * before and after jansson parses it.
 *
 * jansson takes any nesting up to its compiled-in 2048 levels, any string
 * length the body allows, and (with JSON_ALLOW_NUL, which qtaud sets so it
 * can name the field at fault) NUL bytes inside strings and object keys.
 * A key holding a NUL is the dangerous one: code that reads keys as C
 * strings sees only the part before the NUL, so "name\u0000x" would pass
 * a known-field check as "name" and then be silently ignored.  Every body
 * is therefore scanned for nesting depth before parsing (so jansson never
 * builds a 2000-level tree), and walked after, refusing NULs, over-long
 * strings and keys with an error naming the field.
 */
#ifndef QT_JSONCHECK_H
#define QT_JSONCHECK_H

#include <stddef.h>

#include <jansson.h>

#include "common/error.h"

struct jsoncheck_limits {
    int max_depth;          /* containers inside containers; root is 1 */
    size_t max_string;      /* bytes in one string value */
    size_t max_key;         /* bytes in one object key */
    size_t max_items;       /* values, keys and containers; 0: no bound */
};

/* Deepest legitimate body is a task array -> task -> env: 3 levels. 32
 * leaves room and still keeps every recursive walk over a body shallow. */
#define JSONCHECK_MAX_DEPTH 32

/* A parsed value costs jansson some 50 bytes however small its text: a
 * 64 MiB body of "[1,1,...]" is 32 million values, 1.5 GB in memory.
 * A million is room for an array of 100,000 tasks of a few fields each
 * (one POST; more go in several) and bounds a body's tree to ~50 MB. */
#define JSONCHECK_MAX_ITEMS 1000000

/* Scans raw JSON text for nesting deeper than max_depth, without parsing
 * (brackets inside strings do not count).  Returns 0, or -1 with err (400
 * invalid_json) saying at which byte the limit was passed. */
int jsoncheck_depth(const char *data, size_t len, int max_depth,
                    struct qt_error *err);

/* Scans raw JSON text as jsoncheck_depth() does, and also counts what
 * jansson would build (commas and containers outside strings: at least
 * half the values and keys).  Returns 0, or -1 with err: 400 invalid_json
 * for the depth, 413 payload_too_large for more than lim->max_items. */
int jsoncheck_scan(const char *data, size_t len, const struct jsoncheck_limits *lim,
                   struct qt_error *err);

/* Walks a parsed value: depth, string and key lengths, NUL bytes in
 * strings and keys.  Returns 0, or -1 with err (400 invalid_argument)
 * naming the field: object keys joined by '.', with the index of an
 * element of a root array as "[3]." - the names daemon/spec.c uses. */
int jsoncheck_value(json_t *v, const struct jsoncheck_limits *lim,
                    struct qt_error *err);

/* The whole path for a request body: depth scan, parse (duplicate keys
 * refused, any value at the root), walk.  Returns a new reference, or
 * NULL with err filled (400 invalid_json or invalid_argument). */
json_t *jsoncheck_load(const char *data, size_t len,
                       const struct jsoncheck_limits *lim, struct qt_error *err);

#endif
