/*
 * pilots.c - /v1/pilots: create, list, show, cancel.
 */
#include "config.h"

#include <stddef.h>

#include "api/internal.h"

/* A local pilot is answered at once.  A SLURM pilot's answer is SLURM's
 * (the job id, or its refusal), which the SLURM thread gets while the
 * connection is suspended: no server thread waits for slurmctld. */
void api_pilots_create(struct route_ctx *c, struct reply *r)
{
    struct request *req = c->req;
    json_t *out = NULL;
    int rc;

    if (req->waiting) {
        if (!req->stash && !req->stash_err.status)
            req->stash = sched_pilot_submitted(c->api->s, req->waiter.pilot_id,
                                               &req->stash_err);
        api_reply_json(r, 201, req->stash, &req->stash_err);
        req->stash = NULL;
        return;
    }
    req->waiting = true;
    req->waiter.fire = api_waiter_resume;
    MHD_suspend_connection(c->conn);
    r->suspended = true;
    rc = sched_pilot_create(c->api->s, c->body, &req->waiter, &out, &req->stash_err);
    if (rc != 1) {
        req->stash = out;
        if (!out && !req->stash_err.status)
            req->stash_err.status = 500;
        MHD_resume_connection(c->conn);
    }
}

void api_pilots_list(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_pilot_list(c->api->s, &r->err);

    api_reply_json(r, 200, out, &r->err);
}

void api_pilots_show(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_pilot_get(c->api->s, c->param, &r->err);

    api_reply_json(r, 200, out, &r->err);
}

void api_pilots_cancel(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_pilot_cancel(c->api->s, c->param, &r->err);

    api_reply_json(r, 200, out, &r->err);
}
