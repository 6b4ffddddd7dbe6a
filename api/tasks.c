/*
 * tasks.c - /v1/tasks: submit (one or an array), list, show with long
 * poll, cancel, captured output.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/internal.h"
#include "common/enums.h"
#include "common/timeutil.h"

void api_tasks_submit(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_tasks_submit(c->api->s, c->body, &r->err);

    api_reply_json(r, 201, out, &r->err);
}

void api_tasks_list(struct route_ctx *c, struct reply *r)
{
    struct sched_task_filter f = { .state = -1 };
    const char *state = api_query(c, "state");
    long long after = 0, limit = 0;
    json_t *out;

    if (state && qt_enum_parse(&task_state_enum, state, &f.state, "state",
                               &r->err) < 0) {
        api_reply_json(r, 400, NULL, &r->err);
        return;
    }
    if (api_query_int(c, "after", 0, INT64_MAX, &after, r) < 0
        || api_query_int(c, "limit", 1, 1000, &limit, r) < 0)
        return;
    f.after = after;
    f.limit = (int)limit;
    f.pilot = api_query(c, "pilot");
    f.name = api_query(c, "name");
    out = sched_task_list(c->api->s, &f, &r->err);
    api_reply_json(r, 200, out, &r->err);
}

void api_tasks_show(struct route_ctx *c, struct reply *r)
{
    struct request *req = c->req;
    int64_t id;
    json_t *out;

    if (api_parse_id(c->param, "task", &id, r) < 0)
        return;
    if (!req->waiting) {
        const char *ws = api_query(c, "wait");
        double wait = 0;

        if (ws) {
            char *end;

            /* plain decimal only: strtod alone would also take " 5",
             * "0x10", "1e2" and "infinity" */
            size_t digits = strspn(ws, "0123456789");
            bool plain = digits > 0 && (ws[digits] == '\0'
                                        || (ws[digits] == '.' && ws[digits + 1]
                                            && strspn(ws + digits + 1, "0123456789")
                                                   == strlen(ws + digits + 1)));

            errno = 0;
            wait = plain ? strtod(ws, &end) : -1;
            if (!plain || errno || *end || !(wait >= 0) || wait > API_MAX_WAIT) {
                qt_error_arg(&r->err, "wait",
                             "wait must be a number of seconds from 0 to %d",
                             API_MAX_WAIT);
                api_reply_json(r, 400, NULL, &r->err);
                return;
            }
        }
        if (wait > 0) {
            int rc;

            req->waiting = true;
            req->waiter.deadline = time_mono() + wait;
            req->waiter.fire = api_waiter_resume;
            MHD_suspend_connection(c->conn);
            rc = sched_task_watch(c->api->s, id, &req->waiter, &r->err);
            if (rc != 0) /* already ended, or unknown: answer right away */
                MHD_resume_connection(c->conn);
            r->suspended = true;
            return;
        }
    }
    out = sched_task_get(c->api->s, id, &r->err);
    api_reply_json(r, 200, out, &r->err);
}

void api_tasks_cancel(struct route_ctx *c, struct reply *r)
{
    int64_t id;
    json_t *out;

    if (api_parse_id(c->param, "task", &id, r) < 0)
        return;
    out = sched_task_cancel(c->api->s, id, &r->err);
    api_reply_json(r, 200, out, &r->err);
}

static void task_output(struct route_ctx *c, struct reply *r, int which)
{
    char path[4096];
    int64_t id;
    int fd;

    if (api_parse_id(c->param, "task", &id, r) < 0)
        return;
    if (sched_task_output_path(c->api->s, id, which, path, sizeof(path),
                               &r->err) < 0) {
        api_reply_json(r, 404, NULL, &r->err);
        return;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            /* started but produced no file (it could not be spawned) */
            r->status = 200;
            r->raw = strdup("");
            r->raw_len = 0;
            r->content_type = "text/plain; charset=utf-8";
            return;
        }
        qt_error_set(&r->err, 500, "internal", NULL, "cannot open output: %s",
                     strerror(errno));
        api_reply_json(r, 500, NULL, &r->err);
        return;
    }
    r->status = 200;
    r->fd = fd;
    r->content_type = "text/plain; charset=utf-8";
}

void api_tasks_stdout(struct route_ctx *c, struct reply *r)
{
    task_output(c, r, 1);
}

void api_tasks_stderr(struct route_ctx *c, struct reply *r)
{
    task_output(c, r, 2);
}
