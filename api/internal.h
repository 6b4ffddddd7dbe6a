/*
 * internal.h - what the route handlers share: the request context, the
 * reply they fill, and the route table's entry type.
 */
#ifndef QT_API_INTERNAL_H
#define QT_API_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api/api.h"
#include "common/buf.h"
#include "common/error.h"
#include "daemon/sched.h"

#define API_MAX_WAIT 600    /* longest long poll, seconds */
/* libmicrohttpd's per-connection pool beyond max-header-size: room for the
 * read buffer and the answer's headers, so that headers a little over the
 * limit still fit and get qtaud's own JSON 431 */
#define API_HEADER_SLACK (16 * 1024)

/* What a handler answers: JSON (owned, stolen by the server), a raw body
 * (malloc'd, stolen), or a file descriptor to send; or an error. */
struct reply {
    int status;
    json_t *json;
    char *raw;
    size_t raw_len;
    int fd;                 /* >= 0: send this file (closed by the server) */
    const char *content_type;
    bool suspended;         /* the handler suspended the connection */
    bool close;             /* close the connection after this answer */
    struct qt_error err;    /* used when status is 0 and json is NULL */
};

struct request {
    struct buf body;
    bool via_unix;          /* came in on the UNIX socket */
    bool peer_is_owner;     /* UNIX socket: the peer has qtaud's uid */
    long peer_uid;          /* UNIX socket: the peer's uid, -1 unknown */
    bool too_large;
    bool nul_in_url;        /* the raw URL had %00 */
    size_t url_len;         /* bytes of the raw URL */
    bool started;           /* the first call (headers) has been seen */
    bool answered;          /* refused on its headers; the body is dropped */
    struct MHD_Connection *conn;
    struct api *api;
    /* long poll */
    struct sched_waiter waiter;
    bool waiting;           /* suspended; the next call answers */
    /* an answer found while suspended, given on the next call */
    json_t *stash;
    struct qt_error stash_err;
};

/* Request counters: one per route (and one for requests that matched
 * none) and status 100..599, flat, index route * API_STATUS_SLOTS +
 * status - API_STATUS_MIN.  The route, never the URL, bounds the
 * series. */
#define API_STATUS_MIN 100
#define API_STATUS_SLOTS 500

/* One libmicrohttpd daemon per listener: TCP, and the UNIX socket. */
struct listener {
    struct api *api;
    struct MHD_Daemon *mhd;
    bool is_unix;
};

struct api {
    struct listener tcp, local;
    char *unix_path;        /* the socket file, removed at stop; or NULL */
    char *token;            /* the admin token */
    struct sched *s;
    struct api_config cfg;
    char *db_path;
    double start_time;
    atomic_uint_fast64_t *requests;   /* (api_nroutes + 1) * API_STATUS_SLOTS */
};

struct route_ctx {
    struct api *api;
    struct request *req;
    struct MHD_Connection *conn;
    const char *param;      /* the {} path segment, if any */
    json_t *body;           /* parsed JSON body, POST only */
};

typedef void (*route_fn)(struct route_ctx *c, struct reply *r);

/* Who may call a route. */
enum route_auth {
    AUTH_OWNER,             /* the admin token, or the owner on the UNIX socket */
    AUTH_NONE,              /* anyone who reaches the listener (health) */
    AUTH_PILOT,             /* a pilot's token, checked by the handler */
};

struct route {
    const char *method;
    const char *path;       /* "{}" matches one segment */
    route_fn fn;
    const char *const *query; /* accepted query keys, NULL-terminated */
    bool has_body;
    enum route_auth auth;
};

extern const struct route api_routes[];
extern const size_t api_nroutes;

/* Handlers */
void api_health(struct route_ctx *c, struct reply *r);
void api_metrics_csv(struct route_ctx *c, struct reply *r);
void api_pilots_create(struct route_ctx *c, struct reply *r);
void api_pilots_list(struct route_ctx *c, struct reply *r);
void api_pilots_show(struct route_ctx *c, struct reply *r);
void api_pilots_cancel(struct route_ctx *c, struct reply *r);
void api_tasks_submit(struct route_ctx *c, struct reply *r);
void api_tasks_list(struct route_ctx *c, struct reply *r);
void api_tasks_show(struct route_ctx *c, struct reply *r);
void api_tasks_cancel(struct route_ctx *c, struct reply *r);
void api_tasks_stdout(struct route_ctx *c, struct reply *r);
void api_tasks_stderr(struct route_ctx *c, struct reply *r);
void api_agent_register(struct route_ctx *c, struct reply *r);
void api_agent_lease(struct route_ctx *c, struct reply *r);
void api_agent_report(struct route_ctx *c, struct reply *r);
void api_agent_heartbeat(struct route_ctx *c, struct reply *r);

void api_metrics_prom(struct route_ctx *c, struct reply *r);
void api_openapi(struct route_ctx *c, struct reply *r);

/* Counts one answered request of route index route (api_nroutes: it
 * matched no route) with its status. */
void api_count_request(struct api *a, size_t route, int status);

/* The OpenAPI document (api/openapi.json), generated into the build at
 * make time; not NUL-terminated. */
extern const unsigned char api_openapi_json[];
extern const size_t api_openapi_json_len;

/* Helpers for handlers */
/* A sched_waiter's fire(): hands the suspended connection of the request
 * holding w back to the server, which calls the handler again to answer.
 * Called with the scheduler's lock held. */
void api_waiter_resume(struct sched_waiter *w);
const char *api_query(struct route_ctx *c, const char *key);
/* The request's "Authorization: Bearer" token (borrowed), or NULL. */
const char *api_bearer(struct MHD_Connection *conn);
/* Parses a positive decimal id; fills r->err (404 naming what) if not. */
int api_parse_id(const char *s, const char *what, int64_t *id, struct reply *r);
/* Parses a non-negative decimal within [min, max] for query key. */
int api_query_int(struct route_ctx *c, const char *key, long long min,
                  long long max, long long *out, struct reply *r);
/* Sets a JSON answer with status, or the error if json is NULL. */
void api_reply_json(struct reply *r, int status, json_t *json,
                    const struct qt_error *err);

#endif
