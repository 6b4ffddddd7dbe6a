/*
 * routes.c - the route table: method + path template -> handler, with the
 * query keys each accepts, and who may call it.  A path that exists with another method answers
 * 405 with Allow; anything else 404.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

static const char *const no_query[] = { NULL };
static const char *const task_list_query[] = {
    "state", "pilot", "name", "after", "limit", NULL,
};
static const char *const task_show_query[] = { "wait", NULL };
static const char *const metrics_query[] = { "pilot", "since", NULL };

const struct route api_routes[] = {
    { "GET", "/v1/health", api_health, no_query, false, AUTH_NONE },
    { "POST", "/v1/pilots", api_pilots_create, no_query, true, AUTH_OWNER },
    { "GET", "/v1/pilots", api_pilots_list, no_query, false, AUTH_OWNER },
    { "GET", "/v1/pilots/{}", api_pilots_show, no_query, false, AUTH_OWNER },
    { "DELETE", "/v1/pilots/{}", api_pilots_cancel, no_query, false, AUTH_OWNER },
    { "POST", "/v1/tasks", api_tasks_submit, no_query, true, AUTH_OWNER },
    { "GET", "/v1/tasks", api_tasks_list, task_list_query, false, AUTH_OWNER },
    { "GET", "/v1/tasks/{}", api_tasks_show, task_show_query, false, AUTH_OWNER },
    { "DELETE", "/v1/tasks/{}", api_tasks_cancel, no_query, false, AUTH_OWNER },
    { "GET", "/v1/tasks/{}/stdout", api_tasks_stdout, no_query, false, AUTH_OWNER },
    { "GET", "/v1/tasks/{}/stderr", api_tasks_stderr, no_query, false, AUTH_OWNER },
    { "GET", "/v1/metrics.csv", api_metrics_csv, metrics_query, false, AUTH_OWNER },
    { "POST", "/v1/agent/register", api_agent_register, no_query, true, AUTH_PILOT },
    { "POST", "/v1/agent/lease", api_agent_lease, no_query, true, AUTH_PILOT },
    { "POST", "/v1/agent/report", api_agent_report, no_query, true, AUTH_PILOT },
    { "POST", "/v1/agent/heartbeat", api_agent_heartbeat, no_query, true, AUTH_PILOT },
    { "GET", "/v1/openapi.json", api_openapi, no_query, false, AUTH_OWNER },
    /* outside /v1, where Prometheus looks by default */
    { "GET", "/metrics", api_metrics_prom, no_query, false, AUTH_OWNER },
};
const size_t api_nroutes = sizeof(api_routes) / sizeof(api_routes[0]);

const char *api_query(struct route_ctx *c, const char *key)
{
    return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, key);
}

static int parse_ll(const char *s, long long *out)
{
    char *end;

    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && *end == '\0' ? 0 : -1;
}

int api_parse_id(const char *s, const char *what, int64_t *id, struct reply *r)
{
    long long v;

    if (parse_ll(s, &v) < 0 || v <= 0) {
        qt_error_set(&r->err, 404, "not_found", NULL, "no %s '%.64s'", what,
                     s ? s : "");
        api_reply_json(r, 404, NULL, &r->err);
        return -1;
    }
    *id = v;
    return 0;
}

int api_query_int(struct route_ctx *c, const char *key, long long min,
                  long long max, long long *out, struct reply *r)
{
    const char *s = api_query(c, key);
    long long v;

    if (!s)
        return 0;
    if (parse_ll(s, &v) < 0 || v < min || v > max) {
        qt_error_arg(&r->err, key, "%s must be an integer from %lld to %lld",
                     key, min, max);
        api_reply_json(r, 400, NULL, &r->err);
        return -1;
    }
    *out = v;
    return 0;
}
