/*
 * misc.c - /v1/health, /v1/metrics.csv and /v1/openapi.json.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/timeutil.h"
#include "db/db.h"

void api_health(struct route_ctx *c, struct reply *r)
{
    /* "draining" after SIGTERM: alive, but taking no new work */
    json_t *out = json_pack("{s:s, s:s, s:f}", "status",
                            sched_draining(c->api->s) ? "draining" : "ok", "version",
                            PACKAGE_VERSION, "uptime",
                            time_mono() - c->api->start_time);

    api_reply_json(r, 200, out, NULL);
}

void api_metrics_csv(struct route_ctx *c, struct reply *r)
{
    const char *pilot = api_query(c, "pilot");
    const char *since_s = api_query(c, "since");
    int64_t pilot_id = 0;
    double since = 0;
    struct buf out = BUF_INIT;
    sqlite3 *db;

    if (pilot && sched_pilot_id(c->api->s, pilot, &pilot_id, &r->err) < 0) {
        api_reply_json(r, 400, NULL, &r->err);
        return;
    }
    if (since_s && time_parse_iso8601(since_s, &since) < 0) {
        qt_error_arg(&r->err, "since",
                     "since must be an ISO 8601 UTC time such as "
                     "2026-12-03T17:58:20Z");
        api_reply_json(r, 400, NULL, &r->err);
        return;
    }
    /* every row queued before this request must be in the answer */
    if (sched_sync(c->api->s, &r->err) < 0) {
        api_reply_json(r, 503, NULL, &r->err);
        return;
    }
    db = db_open_reader(c->api->db_path, &r->err);
    if (!db) {
        api_reply_json(r, 503, NULL, &r->err);
        return;
    }
    if (db_metrics_csv(db, pilot_id, since, &out, &r->err) < 0) {
        db_close(db);
        buf_release(&out);
        api_reply_json(r, 503, NULL, &r->err);
        return;
    }
    db_close(db);
    r->status = 200;
    r->raw = buf_detach(&out, &r->raw_len);
    r->content_type = "text/csv; charset=utf-8";
}

/* The document is compiled in (openapi_json.c, made from api/openapi.json
 * at build time), so what is served is what the binary was built with. */
void api_openapi(struct route_ctx *c, struct reply *r)
{
    (void)c;
    r->raw = malloc(api_openapi_json_len + 1);
    if (!r->raw) {
        qt_error_set(&r->err, 503, "unavailable", NULL, "out of memory");
        api_reply_json(r, 503, NULL, &r->err);
        return;
    }
    memcpy(r->raw, api_openapi_json, api_openapi_json_len);
    r->raw_len = api_openapi_json_len;
    r->status = 200;
    r->content_type = "application/json";
}
