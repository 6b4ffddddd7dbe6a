/*
 * agent.c - /v1/agent/...: the calls qtau-agent makes (agent/PROTOCOL.md).
 * Each carries its pilot's token as a bearer token; the scheduler checks it
 * against the pilot the body names.  The lease is a long poll and holds no
 * server thread while it waits.
 */
#include "config.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "common/timeutil.h"

void api_agent_register(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_agent_register(c->api->s, api_bearer(c->conn), c->body, &r->err);

    api_reply_json(r, 200, out, &r->err);
}

/* The lease long poll.  The connection is suspended before the scheduler
 * may register its waiter, so a wake-up cannot come before the suspend;
 * an answer found meanwhile is kept in the request and given when the
 * server calls back after the resume. */
void api_agent_lease(struct route_ctx *c, struct reply *r)
{
    struct request *req = c->req;
    json_t *out = NULL, *wait;
    bool fresh = !req->waiting;
    int rc;

    if (req->stash || req->stash_err.status) {
        api_reply_json(r, 200, req->stash, &req->stash_err);
        req->stash = NULL;
        return;
    }
    if (!req->waiting) {
        /* first call: the deadline counts from now; later calls (after a
         * wake-up that found nothing left) keep it */
        wait = json_is_object(c->body) ? json_object_get(c->body, "wait") : NULL;
        req->waiter.deadline = time_mono()
                               + (json_is_number(wait) ? json_number_value(wait) : 0);
        req->waiter.fire = api_waiter_resume;
        req->waiting = true;
    }
    MHD_suspend_connection(c->conn);
    r->suspended = true;
    rc = sched_agent_lease(c->api->s, api_bearer(c->conn), c->body, &req->waiter,
                           req->waiter.deadline, fresh, &out, &req->stash_err);
    if (rc != 1) {
        req->stash = out;
        if (!out && !req->stash_err.status)
            req->stash_err.status = 500;
        MHD_resume_connection(c->conn);
    }
}

void api_agent_report(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_agent_report(c->api->s, api_bearer(c->conn), c->body, &r->err);

    api_reply_json(r, 200, out, &r->err);
}

void api_agent_heartbeat(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_agent_heartbeat(c->api->s, api_bearer(c->conn), c->body, &r->err);

    api_reply_json(r, 200, out, &r->err);
}
