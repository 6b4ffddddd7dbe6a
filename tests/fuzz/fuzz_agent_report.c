/*
 * fuzz_agent_report.c - a POST /v1/agent/report body: the JSON limits,
 * the envelope (pilot, agent_id, results) unpacked as the scheduler does,
 * and agent_result_parse() on each result.  An accepted result must be
 * one the scheduler can use without further checks.
 */
#include "config.h"

#include <string.h>

#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qt_error err = { 0 };
    json_t *body = jsoncheck_load((const char *)data, size, &fuzz_limits, &err);
    json_int_t pilot = 0, agent = 0;
    json_t *results = NULL, *r;
    json_error_t jerr;
    size_t i;

    if (!body) {
        fuzz_check_error(&err);
        return 0;
    }
    if (json_unpack_ex(body, &jerr, JSON_STRICT, "{s:I, s:I, s:o}", "pilot", &pilot,
                       "agent_id", &agent, "results", &results) < 0
        || !json_is_array(results)) {
        json_decref(body);
        return 0;
    }
    json_array_foreach(results, i, r) {
        struct agent_result ar;

        if (agent_result_parse(r, i, &ar, &err) < 0) {
            fuzz_check_error(&err);
            continue;
        }
        fuzz_assert(ar.id > 0 && ar.attempt > 0);
        fuzz_assert(ar.res.exit_code >= -1 && ar.res.exit_code <= 255);
        fuzz_assert(ar.res.term_signal >= 0 && ar.res.term_signal <= 64);
        fuzz_assert(memchr(ar.res.error_msg, '\0', sizeof(ar.res.error_msg)) != NULL);
    }
    json_decref(body);
    return 0;
}
