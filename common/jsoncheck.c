/*
 * jsoncheck.c - see jsoncheck.h.  Nothing here allocates but jansson's
 * parse, and the walk recurses at most max_depth levels: a hostile body
 * can make qtaud refuse it, never run out of stack.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/jsoncheck.h"

int jsoncheck_depth(const char *data, size_t len, int max_depth,
                    struct qt_error *err)
{
    struct jsoncheck_limits lim = { .max_depth = max_depth };

    return jsoncheck_scan(data, len, &lim, err);
}

int jsoncheck_scan(const char *data, size_t len, const struct jsoncheck_limits *lim,
                   struct qt_error *err)
{
    bool in_string = false, escaped = false;
    int depth = 0, max_depth = lim->max_depth;
    size_t items = 0;

    for (size_t i = 0; i < len; i++) {
        char c = data[i];

        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == ',' || c == '[' || c == '{') {
            if (lim->max_items && ++items > lim->max_items)
                return qt_error_set(err, 413, "payload_too_large", NULL,
                                    "JSON body holds more than %zu values; send "
                                    "large arrays in several requests", lim->max_items);
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return qt_error_set(err, 400, "invalid_json", NULL,
                                    "JSON nested deeper than %d levels (at byte %zu)",
                                    max_depth, i);
        } else if ((c == ']' || c == '}') && depth > 0) {
            /* unbalanced closers are jansson's to report */
            depth--;
        }
    }
    return 0;
}

struct walk {
    const struct jsoncheck_limits *lim;
    struct qt_error *err;
    char path[64];      /* the field as daemon/spec.c names it */
};

/* Appends a key to w->path (cut to fit; the message names the key again
 * in full when that matters). */
static void path_push(struct walk *w, size_t at, const char *key, size_t keylen)
{
    size_t n;

    if (at >= sizeof(w->path) - 1)
        return;
    if (at > 0 && w->path[at - 1] != '.')
        w->path[at++] = '.';
    n = strnlen(key, keylen);   /* a NUL ends the printable part */
    if (n > sizeof(w->path) - 1 - at)
        n = sizeof(w->path) - 1 - at;
    memcpy(w->path + at, key, n);
    w->path[at + n] = '\0';
}

static int walk_value(struct walk *w, json_t *v, int depth, bool root);
static const char *path_field(struct walk *w);

static int walk_object(struct walk *w, json_t *obj, int depth)
{
    size_t at = strlen(w->path), keylen;
    const char *key;
    json_t *v;

#if JANSSON_VERSION_HEX >= 0x020e00
    json_object_keylen_foreach(obj, key, keylen, v) {
#else
    /* before 2.14 a key is a C string: it cannot hold a NUL */
    json_object_foreach(obj, key, v) {
        keylen = strlen(key);
#endif
        path_push(w, at, key, keylen);
        if (memchr(key, '\0', keylen)) {
            /* the field is the object holding the key; at the root, the
             * key's printable part */
            char shown[32];
            const char *field;

            snprintf(shown, sizeof(shown), "%s", key);
            w->path[at] = '\0';
            field = at ? path_field(w) : shown;
            return qt_error_arg(w->err, field[0] ? field : NULL,
                                "object key '%s\\u0000...' holds a NUL byte",
                                shown);
        }
        if (keylen > w->lim->max_key) {
            /* named like a NUL in a key: by the object holding it */
            w->path[at] = '\0';
            return qt_error_arg(w->err, path_field(w), "object key '%.32s...' is "
                                "longer than %zu bytes", key, w->lim->max_key);
        }
        if (walk_value(w, v, depth, false) < 0)
            return -1;
        w->path[at] = '\0';
    }
    return 0;
}

static int walk_array(struct walk *w, json_t *arr, int depth, bool root)
{
    size_t at = strlen(w->path), i;
    json_t *v;

    json_array_foreach(arr, i, v) {
        /* only a root array's elements are named by index ("[3].cores");
         * inside a field the field itself is named ("command") */
        if (root)
            snprintf(w->path, sizeof(w->path), "[%zu].", i);
        if (walk_value(w, v, depth, false) < 0)
            return -1;
        w->path[at] = '\0';
    }
    return 0;
}

/* The field name for an error: the path without a trailing '.', or NULL
 * at the root. */
static const char *path_field(struct walk *w)
{
    size_t n = strlen(w->path);

    if (n && w->path[n - 1] == '.')
        w->path[n - 1] = '\0';
    return w->path[0] ? w->path : NULL;
}

static int walk_value(struct walk *w, json_t *v, int depth, bool root)
{
    if (json_is_object(v) || json_is_array(v)) {
        if (depth + 1 > w->lim->max_depth) {
            const char *field = path_field(w);

            return qt_error_arg(w->err, field, "%s nested deeper than %d levels",
                                field ? field : "the body", w->lim->max_depth);
        }
        return json_is_object(v) ? walk_object(w, v, depth + 1)
                                 : walk_array(w, v, depth + 1, root);
    }
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        const char *field;

        if (memchr(json_string_value(v), '\0', len)) {
            field = path_field(w);
            return qt_error_arg(w->err, field, "%s must not contain NUL bytes",
                                field ? field : "the body");
        }
        if (len > w->lim->max_string) {
            field = path_field(w);
            return qt_error_arg(w->err, field, "%s is longer than %zu bytes",
                                field ? field : "the body", w->lim->max_string);
        }
    }
    return 0;
}

int jsoncheck_value(json_t *v, const struct jsoncheck_limits *lim,
                    struct qt_error *err)
{
    struct walk w = { .lim = lim, .err = err };

    return walk_value(&w, v, 0, true);
}

json_t *jsoncheck_load(const char *data, size_t len,
                       const struct jsoncheck_limits *lim, struct qt_error *err)
{
    json_error_t jerr;
    json_t *v;

    if (len == 0) {
        qt_error_set(err, 400, "invalid_json", NULL, "the request body is empty");
        return NULL;
    }
    if (jsoncheck_scan(data, len, lim, err) < 0)
        return NULL;
    /* NULs are let through the parser so that the walk can name the field
     * that holds one, rather than jansson's bare "\u0000 is not allowed" */
    v = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY
                                  | JSON_ALLOW_NUL, &jerr);
    if (!v) {
        qt_error_set(err, 400, "invalid_json", NULL,
                     "malformed JSON at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    if (jsoncheck_value(v, lim, err) < 0) {
        json_decref(v);
        return NULL;
    }
    return v;
}
