/*
 * server.c - libmicrohttpd set-up, request bodies, routing and responses.
 *
 * Per-request state lives in *req_cls (struct request), created on the
 * first call of the access handler and freed in the completion callback.
 * A request is routed once its body is complete; the route table (routes.c)
 * maps method and path to a handler, which fills a struct reply.  Every
 * error becomes {"error": {"code", "message", "field"}} here, in one place.
 *
 * Access: two listeners, each its own libmicrohttpd daemon.  On TCP every
 * route but health needs the admin token as a bearer token; on the UNIX
 * socket the kernel names the peer (SO_PEERCRED), and only qtaud's own
 * uid gets in, with no token.  Agent routes take only their pilot's token,
 * which the scheduler checks; a pilot token opens nothing else.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/internal.h"
#include "common/jsoncheck.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/token.h"
#include "daemon/spec.h"

static struct MHD_Response *response_from_json(json_t *json)
{
    /* 15 significant digits: what a double holds exactly in decimal, so a
     * value a user sent comes back as sent, without binary noise */
    char *text = json_dumps(json, JSON_COMPACT | JSON_REAL_PRECISION(15));
    struct MHD_Response *resp;

    if (!text) {
        /* out of memory, or a string that is not UTF-8 got into a reply:
         * a bug to log, not a reason to take the daemon down */
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"qtaud could not "
            "encode its answer\"}}";

        log_err("could not encode a JSON answer");
        resp = MHD_create_response_from_buffer(sizeof(fallback) - 1, (void *)fallback,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(strlen(text), text,
                                               MHD_RESPMEM_MUST_FREE);
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    return resp;
}

void api_count_request(struct api *a, size_t route, int status)
{
    if (route > api_nroutes)
        route = api_nroutes;
    if (status < API_STATUS_MIN || status >= API_STATUS_MIN + API_STATUS_SLOTS)
        status = API_STATUS_MIN + API_STATUS_SLOTS - 1;   /* never, with MHD */
    atomic_fetch_add_explicit(&a->requests[route * API_STATUS_SLOTS
                                           + (size_t)(status - API_STATUS_MIN)],
                              1, memory_order_relaxed);
}

void api_waiter_resume(struct sched_waiter *w)
{
    struct request *req = (struct request *)(void *)((char *)w
                                                     - offsetof(struct request, waiter));

    MHD_resume_connection(req->conn);
}

static json_t *error_json(const struct qt_error *err)
{
    json_t *e = json_pack("{s:s, s:s}", "code", err->code[0] ? err->code : "error",
                          "message", err->message);

    if (err->field[0])
        json_object_set_new(e, "field", json_string(err->field));
    return json_pack("{s:o}", "error", e);
}

void api_reply_json(struct reply *r, int status, json_t *json,
                    const struct qt_error *err)
{
    if (json) {
        r->status = status;
        r->json = json;
    } else {
        if (err != &r->err)
            r->err = *err;
        r->status = r->err.status ? r->err.status : 500;
        r->json = error_json(&r->err);
    }
}

static void reply_error(struct reply *r, int status, const char *code,
                        const char *field, const char *msg)
{
    qt_error_set(&r->err, status, code, field, "%s", msg);
    api_reply_json(r, status, NULL, &r->err);
}

static enum MHD_Result queue_reply(struct MHD_Connection *conn, struct reply *r,
                                   const char *allow)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (r->fd >= 0) {
        struct stat st;

        if (fstat(r->fd, &st) < 0) {
            close(r->fd);
            r->fd = -1;
            reply_error(r, 500, "internal", NULL, "cannot read output file");
            return queue_reply(conn, r, NULL);
        }
        resp = MHD_create_response_from_fd((uint64_t)st.st_size, r->fd);
    } else if (r->raw) {
        resp = MHD_create_response_from_buffer(r->raw_len, r->raw,
                                               MHD_RESPMEM_MUST_FREE);
        r->raw = NULL;
    } else {
        if (!r->json)
            api_reply_json(r, 500, NULL, &r->err);
        resp = response_from_json(r->json);
        json_decref(r->json);
        r->json = NULL;
    }
    if (!resp)
        return MHD_NO;
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                r->content_type);
    if (allow && allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Matches path against a route pattern; stores the {} segment in param. */
static bool path_match(const char *pattern, const char *path, char *param,
                       size_t len)
{
    while (*pattern && *path) {
        if (pattern[0] == '{' && pattern[1] == '}') {
            size_t n = strcspn(path, "/");

            if (n == 0 || n >= len)
                return false;
            memcpy(param, path, n);
            param[n] = '\0';
            path += n;
            pattern += 2;
            continue;
        }
        if (*pattern++ != *path++)
            return false;
    }
    return *pattern == '\0' && *path == '\0';
}

struct query_check {
    const char *const *allowed;
    const char *bad;
    bool twice;             /* bad was given more than once */
    unsigned seen;          /* bit i: allowed[i] was given */
};

static enum MHD_Result query_check_one(void *cls, enum MHD_ValueKind kind,
                                       const char *key, const char *value)
{
    struct query_check *qc = cls;

    (void)kind;
    (void)value;
    for (unsigned i = 0; qc->allowed && qc->allowed[i]; i++)
        if (strcmp(qc->allowed[i], key) == 0) {
            /* which of two would count is a guess: refuse, do not guess */
            if (i < 32 && (qc->seen & (1u << i))) {
                qc->bad = key;
                qc->twice = true;
                return MHD_NO;
            }
            if (i < 32)
                qc->seen |= 1u << i;
            return MHD_YES;
        }
    qc->bad = key;
    return MHD_NO;
}

/* application/json, with no parameter but an optional charset=utf-8:
 * JSON is UTF-8 (RFC 8259), and a body declared in another charset would
 * be read as something its sender did not mean. */
static bool content_type_json(struct MHD_Connection *conn)
{
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    size_t n = strlen("application/json");
    const char *p;

    if (!ct || strncasecmp(ct, "application/json", n) != 0)
        return false;
    p = ct + n;
    p += strspn(p, " \t");
    if (*p == '\0')
        return true;
    if (*p++ != ';')
        return false;
    p += strspn(p, " \t");
    if (strncasecmp(p, "charset=", 8) != 0)
        return false;
    p += 8;
    if (strncasecmp(p, "utf-8", 5) == 0)
        p += 5;
    else if (strncasecmp(p, "\"utf-8\"", 7) == 0)
        p += 7;
    else
        return false;
    p += strspn(p, " \t");
    return *p == '\0';
}

/* Checks the headers alone, before any body is read, for requests that
 * must be refused whatever their path: a request line or headers over
 * max-header-size (libmicrohttpd's pool is set somewhat larger, so that
 * the answer is qtaud's JSON and the limit exact; beyond the pool
 * libmicrohttpd answers 431 or 414 itself), an announced body over max-body
 * (answered now, so qtaud never reads it), and a request carrying both
 * Transfer-Encoding and Content-Length, or several Content-Length headers.
 * For the TE+CL case RFC 9112 6.1 lets
 * a server either trust Transfer-Encoding or refuse; a proxy in front may
 * have chosen the other reading, which is how requests are smuggled, so
 * qtaud refuses it.  Every answer here closes the connection: what is
 * left unread must not be taken for the next request.  Returns true if an answer was
 * queued (in *ret). */
static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind,
                                            const char *key, const char *value)
{
    int *n = cls;

    (void)kind;
    (void)value;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        (*n)++;
    return MHD_YES;
}

static bool refuse_on_headers(struct api *a, struct request *req,
                              struct MHD_Connection *conn, enum MHD_Result *ret)
{
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    struct reply r = { .fd = -1, .close = true };
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t head = ci ? ci->header_size : 0;     /* request line and headers */
    int lengths = 0;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_content_length, &lengths);
    if (req->url_len > a->cfg.max_header_size) {
        char msg[96];

        snprintf(msg, sizeof(msg), "URL longer than %zu bytes", a->cfg.max_header_size);
        reply_error(&r, 414, "uri_too_long", NULL, msg);
    } else if (head > a->cfg.max_header_size) {
        char msg[96];

        snprintf(msg, sizeof(msg), "request line and headers larger than %zu bytes",
                 a->cfg.max_header_size);
        reply_error(&r, 431, "header_too_large", NULL, msg);
    } else if (te && cl) {
        reply_error(&r, 400, "bad_request", NULL,
                    "a request may carry Transfer-Encoding or Content-Length, "
                    "not both");
    } else if (lengths > 1) {
        /* libmicrohttpd takes the first; a proxy may have taken another */
        reply_error(&r, 400, "bad_request", NULL,
                    "a request may carry one Content-Length, not several");
    } else if (cl) {
        char *end;
        unsigned long long n;

        errno = 0;
        n = strtoull(cl, &end, 10);
        /* a malformed length is libmicrohttpd's to refuse; only a valid
         * one that is too large (or beyond any integer) is answered here */
        if (end == cl || *end || cl[0] == '-' || (errno && errno != ERANGE)
            || (errno != ERANGE && n <= a->cfg.max_body))
            return false;
        {
            char msg[96];

            snprintf(msg, sizeof(msg), "request body larger than %zu bytes",
                     a->cfg.max_body);
            reply_error(&r, 413, "payload_too_large", NULL, msg);
        }
    } else {
        return false;
    }
    req->answered = true;
    *ret = queue_reply(conn, &r, NULL);
    return true;
}

const char *api_bearer(struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);

    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static enum MHD_Result is_token_key(void *cls, enum MHD_ValueKind kind,
                                    const char *key, const char *value)
{
    bool *found = cls;

    (void)kind;
    (void)value;
    if (strcasecmp(key, "token") == 0 || strcasecmp(key, "access_token") == 0) {
        *found = true;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Whether the request may call route; fills r with 401/403 if not. */
static bool access_allowed(struct api *a, struct request *req,
                           struct MHD_Connection *conn, const struct route *route,
                           struct reply *r)
{
    const char *bearer = api_bearer(conn);
    bool token_in_url = false;

    if (req->via_unix && !req->peer_is_owner) {
        char msg[160];

        snprintf(msg, sizeof(msg), "this socket admits only uid %ld; the peer has "
                 "uid %ld", (long)geteuid(), req->peer_uid);
        reply_error(r, 403, "forbidden", NULL, msg);
        return false;
    }
    /* URLs end up in logs, proxies and shell history: never a token there */
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, is_token_key, &token_in_url);
    if (token_in_url) {
        reply_error(r, 401, "unauthorized", "token",
                    "send the token in an Authorization: Bearer header, never in "
                    "the URL");
        return false;
    }
    if (route->auth == AUTH_PILOT && !bearer) {
        /* the scheduler checks which pilot's token it is */
        reply_error(r, 401, "unauthorized", NULL,
                    "agent calls need Authorization: Bearer <the pilot's token>");
        return false;
    }
    if (route->auth != AUTH_OWNER || req->via_unix)
        return true;
    if (qt_token_equal(a->token, bearer))
        return true;
    reply_error(r, 401, "unauthorized", NULL,
                bearer ? "the bearer token is not qtaud's token"
                                 : "this request needs Authorization: Bearer <token>, "
                                   "the token in qtaud's state dir");
    return false;
}

/* Queues r and counts it under its route (api_nroutes: none) and final
 * status: one relaxed atomic add, so the counters cost the hot path
 * nothing it would notice and need no lock. */
static enum MHD_Result answer(struct api *a, size_t ri,
                              struct MHD_Connection *conn, struct reply *r,
                              const char *allow)
{
    enum MHD_Result ret = queue_reply(conn, r, allow);

    api_count_request(a, ri, r->status);
    return ret;
}

/* Routes a complete request and queues its answer. */
static enum MHD_Result dispatch(struct api *a, struct request *req,
                                struct MHD_Connection *conn, const char *url,
                                const char *method)
{
    struct reply r = { .fd = -1 };
    char param[128] = "", allow[64] = "";
    const struct route *route = NULL;
    bool path_known = false;
    struct route_ctx c = { .api = a, .req = req, .conn = conn };
    struct query_check qc = { NULL, NULL, false, 0 };
    size_t ri = api_nroutes;    /* the route, for the request counters */
    /* HEAD is GET without the body (libmicrohttpd leaves it out) */
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;

    for (size_t i = 0; i < api_nroutes; i++) {
        const char *m = api_routes[i].method;
        bool get = strcmp(m, "GET") == 0;

        if (!path_match(api_routes[i].path, url, param, sizeof(param)))
            continue;
        path_known = true;
        if (strcmp(m, want) == 0) {
            route = &api_routes[i];
            ri = i;
            break;
        }
        if (strlen(allow) + strlen(m) + (get ? 9 : 3) < sizeof(allow)) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, get ? "GET, HEAD" : m);
        }
    }
    if (!route) {
        if (path_known) {
            char msg[128];

            snprintf(msg, sizeof(msg), "method %.16s not allowed here; allowed: %s",
                     method, allow);
            reply_error(&r, 405, "method_not_allowed", NULL, msg);
            return answer(a, ri, conn, &r, allow);
        }
        reply_error(&r, 404, "not_found", NULL, "no such endpoint");
        return answer(a, ri, conn, &r, NULL);
    }
    c.param = param[0] ? param : NULL;
    if (!access_allowed(a, req, conn, route, &r))
        return answer(a, ri, conn, &r, NULL);

    qc.allowed = route->query;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_check_one, &qc);
    if (qc.bad) {
        char msg[160];

        snprintf(msg, sizeof(msg), qc.twice ? "query parameter '%.64s' given more than once"
                                            : "unknown query parameter '%.64s'", qc.bad);
        reply_error(&r, 400, "invalid_argument", qc.bad, msg);
        return answer(a, ri, conn, &r, NULL);
    }
    if (req->nul_in_url) {
        reply_error(&r, 400, "invalid_argument", NULL, "the URL holds a NUL byte (%00)");
        return answer(a, ri, conn, &r, NULL);
    }
    if (req->too_large) {
        char msg[96];

        snprintf(msg, sizeof(msg), "request body larger than %zu bytes",
                 a->cfg.max_body);
        reply_error(&r, 413, "payload_too_large", NULL, msg);
        return answer(a, ri, conn, &r, NULL);
    }
    if (route->has_body) {
        static const struct jsoncheck_limits lim = {
            .max_depth = JSONCHECK_MAX_DEPTH,
            .max_items = JSONCHECK_MAX_ITEMS,
            .max_string = SPEC_MAX_STRING,
            .max_key = SPEC_MAX_NAME,
        };

        if (!content_type_json(conn)) {
            reply_error(&r, 415, "unsupported_media_type", NULL,
                        "send the body as Content-Type: application/json "
                        "(UTF-8)");
            return answer(a, ri, conn, &r, NULL);
        }
        c.body = jsoncheck_load(req->body.data, req->body.len, &lim, &r.err);
        if (!c.body) {
            api_reply_json(&r, r.err.status, NULL, &r.err);
            return answer(a, ri, conn, &r, NULL);
        }
    } else if (req->body.len > 0) {
        reply_error(&r, 400, "invalid_argument", NULL,
                    "this endpoint takes no request body");
        return answer(a, ri, conn, &r, NULL);
    }

    route->fn(&c, &r);
    json_decref(c.body);
    if (r.suspended)
        return MHD_YES;
    return answer(a, ri, conn, &r, NULL);
}

/* Called with each request's raw URL, before libmicrohttpd decodes it: the
 * request's state starts here, so a NUL byte (%00) can be refused - once
 * decoded, it would silently cut the path and the query short. */
static void *uri_seen(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct listener *l = cls;
    struct request *req = calloc(1, sizeof(*req));

    if (!req)
        return NULL;
    req->conn = conn;
    req->api = l->api;
    req->nul_in_url = strstr(uri, "%00") != NULL;
    req->url_len = strlen(uri);
    req->peer_uid = -1;
    if (l->is_unix) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred cred;
        socklen_t len = sizeof(cred);

        req->via_unix = true;
        if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            req->peer_uid = (long)cred.uid;
            req->peer_is_owner = cred.uid == geteuid();
        }
    }
    return req;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn,
                                      const char *url, const char *method,
                                      const char *version,
                                      const char *upload_data,
                                      size_t *upload_data_size, void **req_cls)
{
    struct listener *l = cls;
    struct api *a = l->api;
    struct request *req = *req_cls;
    enum MHD_Result ret;

    (void)version;
    if (!req || !req->started) {
        /* the headers are in; the body, if any, comes next */
        if (!req) {
            req = calloc(1, sizeof(*req));
            if (!req)
                return MHD_NO;
            /* no URI callback ran: treat it as a stranger on the socket */
            req->conn = conn;
            req->api = a;
            req->via_unix = l->is_unix;
            req->peer_uid = -1;
            *req_cls = req;
        }
        req->started = true;
        if (refuse_on_headers(a, req, conn, &ret))
            return ret;
        return MHD_YES;
    }
    if (req->answered) {
        /* refused on its headers: whatever body still comes is dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (req->body.len + *upload_data_size > a->cfg.max_body) {
            req->too_large = true;
            buf_release(&req->body);
        } else if (!req->too_large) {
            buf_add(&req->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(a, req, conn, url, method);
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct api *a = cls;
    struct request *req = *req_cls;

    (void)conn;
    (void)toe;
    if (!req)
        return;
    if (req->waiter.registered)
        sched_task_unwatch(a->s, &req->waiter);
    json_decref(req->stash);
    buf_release(&req->body);
    free(req);
    *req_cls = NULL;
}

/* libmicrohttpd's own messages are mostly about clients (a header too
 * large, a connection over the limit, a peer gone mid-request): at debug
 * level, so a hostile client cannot flood the log, and through log_msg so
 * that they read like the rest. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    (void)cls;
    if (log_threshold < LOG_LVL_DEBUG)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '.'))
        line[--n] = '\0';
    log_debug("http: %s", line);
}

/* Starts l's libmicrohttpd daemon on address sa, or on the bound socket
 * fd when sa is NULL (it then owns fd).  Returns 0 or -1 with errno. */
static int listener_start(struct api *a, struct listener *l, unsigned flags,
                          const struct sockaddr *sa, int fd)
{
    struct MHD_OptionItem opts[] = {
        { sa ? MHD_OPTION_SOCK_ADDR : MHD_OPTION_LISTEN_SOCKET, sa ? 0 : fd,
          (void *)sa },
        { MHD_OPTION_CONNECTION_TIMEOUT, a->cfg.idle_timeout, NULL },
        { MHD_OPTION_CONNECTION_LIMIT, a->cfg.max_connections, NULL },
        /* over the limit, a connection is closed as soon as it is
         * accepted: one client cannot take every slot */
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT, a->cfg.max_connections_per_client, NULL },
        /* each connection's memory pool holds its request line and
         * headers (and its read buffer): this bounds the headers */
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT,
          (intptr_t)(a->cfg.max_header_size + API_HEADER_SLACK), NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed, a },
        { MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },
        { MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_seen, l },
        { sa ? MHD_OPTION_LISTENING_ADDRESS_REUSE : MHD_OPTION_END, 1, NULL },
        /* one thread means no pool: the polling thread serves */
        { a->cfg.threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
          a->cfg.threads, NULL },
        { MHD_OPTION_END, 0, NULL },
    };

    l->api = a;
    l->mhd = MHD_start_daemon(flags, 0, NULL, NULL, access_handler, l,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    return l->mhd ? 0 : -1;
}

/* Binds the UNIX socket at path, mode 0600, replacing a stale socket
 * file (one left by a killed qtaud) but nothing else.  Returns the
 * listening fd or -1 with err. */
static int unix_socket_bind(const char *path, struct qt_error *err)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path))
        return qt_error_arg(err, "socket", "socket path %.64s... is longer than %zu "
                            "bytes", path, sizeof(sun.sun_path) - 1);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return qt_error_arg(err, "socket", "%s exists and is not a socket", path);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return qt_error_arg(err, "socket", "cannot make a UNIX socket: %s",
                            strerror(errno));
    /* chmod after bind leaves a moment in which the file has the umask's
     * mode; the peer check on every request is what guards, this is the
     * second fence */
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(path, 0600) < 0
        || listen(fd, 128) < 0) {
        qt_error_arg(err, "socket", "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void api_free(struct api *a)
{
    if (a->tcp.mhd)
        MHD_stop_daemon(a->tcp.mhd);
    if (a->local.mhd)
        MHD_stop_daemon(a->local.mhd);
    if (a->unix_path)
        unlink(a->unix_path);
    free(a->unix_path);
    free(a->token);
    free(a->db_path);
    free(a->requests);
    free(a);
}

struct api *api_start(const struct api_config *cfg, struct sched *s, int *port,
                      struct qt_error *err)
{
    struct api *a = calloc(1, sizeof(*a));
    struct sockaddr_in6 sa6;
    struct sockaddr_in sa4;
    const struct sockaddr *sa;
    const union MHD_DaemonInfo *info;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
                     | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;

    if (!a) {
        qt_error_set(err, 503, "unavailable", NULL, "out of memory");
        return NULL;
    }
    a->requests = calloc((api_nroutes + 1) * API_STATUS_SLOTS, sizeof(*a->requests));
    if (!a->requests) {
        free(a);
        qt_error_set(err, 503, "unavailable", NULL, "out of memory");
        return NULL;
    }
    a->s = s;
    a->cfg = *cfg;
    a->db_path = strdup(cfg->db_path);
    a->cfg.db_path = a->db_path;
    a->token = strdup(cfg->token);
    a->cfg.token = a->token;
    a->cfg.unix_path = NULL;
    a->start_time = time_mono();
    a->local.is_unix = true;

    memset(&sa4, 0, sizeof(sa4));
    memset(&sa6, 0, sizeof(sa6));
    if (cfg->listen_fd >= 0) {
        /* systemd's socket, served as it is (IPv6 too: MHD_USE_IPv6 only
         * matters for a socket MHD creates) */
        sa = NULL;
    } else if (inet_pton(AF_INET, cfg->host, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)cfg->port);
        sa = (const struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, cfg->host, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)cfg->port);
        sa = (const struct sockaddr *)&sa6;
    } else {
        qt_error_set(err, 400, "invalid_argument", "listen",
                     "listen address '%s' is not a numeric IPv4 or IPv6 address",
                     cfg->host);
        api_free(a);
        return NULL;
    }
    if (listener_start(a, &a->tcp, flags | (sa == (const struct sockaddr *)&sa6
                                                ? MHD_USE_IPv6 : 0u), sa,
                       cfg->listen_fd) < 0) {
        qt_error_set(err, 503, "unavailable", "listen",
                     "cannot listen on %s:%d: %s", cfg->host, cfg->port,
                     strerror(errno));
        api_free(a);
        return NULL;
    }
    if (cfg->unix_path) {
        int fd = unix_socket_bind(cfg->unix_path, err);

        if (fd < 0) {
            api_free(a);
            return NULL;
        }
        a->unix_path = strdup(cfg->unix_path);
        a->cfg.unix_path = a->unix_path;
        if (listener_start(a, &a->local, flags, NULL, fd) < 0) {
            qt_error_arg(err, "socket", "cannot serve on %s: %s", cfg->unix_path,
                         strerror(errno));
            close(fd);
            api_free(a);
            return NULL;
        }
    }
    info = MHD_get_daemon_info(a->tcp.mhd, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : cfg->port;
    return a;
}

void api_stop(struct api *a)
{
    if (a)
        api_free(a);
}
