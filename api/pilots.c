/*
 * pilots.c - /v1/pilots: create, list, show, cancel.
 */
#include "config.h"

#include "api/internal.h"

void api_pilots_create(struct route_ctx *c, struct reply *r)
{
    json_t *out = sched_pilot_create(c->api->s, c->body, &r->err);

    api_reply_json(r, 201, out, &r->err);
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
