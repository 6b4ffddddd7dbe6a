/*
 * fuzz_task_spec.c - a POST /v1/tasks body, as the server reads it: the
 * JSON limits, then task_spec_parse() on the object or on each element of
 * an array, with the "[i]." prefix the scheduler uses.  A description that
 * is accepted must survive normalization: task_spec_to_json() of it parses
 * again to the same normalized JSON (that JSON is what the store keeps and
 * reloads at start-up).
 */
#include "config.h"

#include <string.h>

#include "tests/fuzz/fuzz.h"

static void one(json_t *obj, const char *prefix)
{
    struct task_spec spec, again;
    struct qt_error err = { 0 };
    json_t *norm, *norm2;

    if (task_spec_parse(obj, prefix, &spec, &err) < 0) {
        fuzz_check_error(&err);
        /* a failed parse leaves nothing behind */
        fuzz_assert(spec.name == NULL && spec.argv == NULL && spec.env == NULL);
        return;
    }
    fuzz_assert(spec.argv || spec.shell);
    fuzz_assert(!spec.cwd || spec.cwd[0] == '/');
    for (char **e = spec.env; e && *e; e++)
        fuzz_assert(strchr(*e, '=') != NULL);
    norm = task_spec_to_json(&spec);
    fuzz_assert(norm != NULL);
    fuzz_assert(task_spec_parse(norm, "", &again, &err) == 0);
    norm2 = task_spec_to_json(&again);
    fuzz_assert(json_equal(norm, norm2));
    json_decref(norm);
    json_decref(norm2);
    task_spec_release(&again);
    task_spec_release(&spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qt_error err = { 0 };
    json_t *body = jsoncheck_load((const char *)data, size, &fuzz_limits, &err);

    if (!body) {
        fuzz_check_error(&err);
        return 0;
    }
    if (json_is_array(body)) {
        size_t i;
        json_t *v;

        json_array_foreach(body, i, v) {
            char prefix[32];

            snprintf(prefix, sizeof(prefix), "[%zu].", i);
            one(v, prefix);
        }
    } else {
        one(body, "");
    }
    json_decref(body);
    return 0;
}
