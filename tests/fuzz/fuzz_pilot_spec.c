/*
 * fuzz_pilot_spec.c - a POST /v1/pilots body through the JSON limits and
 * pilot_spec_parse().  An accepted description must survive
 * normalization (pilot_spec_to_json() parses again to the same JSON), and
 * what a SLURM batch script is built from must hold no line breaks.
 */
#include "config.h"

#include <string.h>

#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qt_error err = { 0 };
    struct pilot_spec spec, again;
    json_t *body = jsoncheck_load((const char *)data, size, &fuzz_limits, &err);
    json_t *norm, *norm2;

    if (!body) {
        fuzz_check_error(&err);
        return 0;
    }
    if (pilot_spec_parse(body, &spec, &err) < 0) {
        fuzz_check_error(&err);
        fuzz_assert(spec.name == NULL && spec.queue == NULL);
        json_decref(body);
        return 0;
    }
    fuzz_assert(!spec.name || pilot_name_valid(spec.name));
    fuzz_assert(!spec.working_directory || spec.working_directory[0] == '/');
    for (char **p = spec.scheduler_script_commands; p && *p; p++)
        fuzz_assert(strncmp(*p, "#SBATCH ", 8) == 0 && !strpbrk(*p, "\r\n"));
    norm = pilot_spec_to_json(&spec);
    fuzz_assert(pilot_spec_parse(norm, &again, &err) == 0);
    norm2 = pilot_spec_to_json(&again);
    fuzz_assert(json_equal(norm, norm2));
    json_decref(norm);
    json_decref(norm2);
    pilot_spec_release(&again);
    pilot_spec_release(&spec);
    json_decref(body);
    return 0;
}
