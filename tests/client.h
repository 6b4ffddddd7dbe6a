/*
 * client.h - test helpers: start a real qtaud on a free loopback port with
 * a temporary state dir, and talk to it over HTTP with libcurl.
 */
#ifndef QT_TEST_CLIENT_H
#define QT_TEST_CLIENT_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

struct daemon {
    pid_t pid;
    char dir[256];       /* state dir; kept across restarts */
    int port;
    char url[64];
    char token[300];     /* <dir>/token, sent by http() and friends */
    const char *log_path; /* set before start: qtaud's stderr goes there */
};

struct http_resp {
    long status;
    char *body;
    size_t len;
    json_t *json;        /* parsed body when it is JSON, else NULL */
    char content_type[128];
    char allow[128];
    char www_authenticate[64];
};

/* Starts qtaud ($QTAUD_BIN) with extra args (NULL-terminated, may be
 * NULL).  d->dir is created when empty.  Returns 0 once the daemon
 * answers /v1/health, -1 otherwise. */
int daemon_start(struct daemon *d, const char *const *extra);
/* Reads d->token from <d->dir>/token (for a qtaud the test started
 * itself); daemon_start() does this on its own. */
void daemon_read_token(struct daemon *d);
/* Sends sig and waits for the exit; returns the wait status. */
int daemon_stop(struct daemon *d, int sig);
/* Removes the state dir. */
void daemon_cleanup(struct daemon *d);
/* Stops d (if running) the way systemd would, cleans up, and returns
 * whether it exited 0 - under ASan a leak or error at exit would not. */
bool daemon_teardown(struct daemon *d, int *status);

/* Check-test shorthands: each fails the running test with a message. */
/* memset(d) and daemon_start(d, extra). */
void daemon_must_start(struct daemon *d, const char *const *extra);
/* daemon_teardown(d), which must see qtaud exit 0. */
void daemon_must_stop(struct daemon *d);
/* POST /v1/tasks with one task; must answer 201 with an id, returned. */
long long task_submit(const struct daemon *d, const char *body);
/* The port in <dir>/port, or 0 when there is none (yet). */
int daemon_read_port(const char *dir);

/* Whether the first 8 KiB of file path (a log, say) hold needle. */
bool file_contains(const char *path, const char *needle);

/* One request with the daemon's token; body may be NULL; ctype NULL
 * means application/json. */
int http(const struct daemon *d, const char *method, const char *path,
         const char *body, const char *ctype, struct http_resp *r);
void http_resp_free(struct http_resp *r);
/* One request over the daemon's UNIX socket (<dir>/qtaud.sock), no token. */
int http_unix(const struct daemon *d, const char *method, const char *path,
              const char *body, struct http_resp *r);
/* A JSON request carrying "Authorization: Bearer <token>" instead of the
 * daemon's own token; token "" sends no Authorization header at all. */
int http_bearer(const struct daemon *d, const char *method, const char *path,
                const char *body, const char *token, struct http_resp *r);

/* Request expecting a JSON answer with status want; returns the JSON (new
 * reference) or NULL, printing what came instead. */
json_t *http_json(const struct daemon *d, const char *method, const char *path,
                  const char *body, long want);

/* Long-polls task id until it is terminal (or timeout s); returns the
 * task object (new reference). */
json_t *wait_task(const struct daemon *d, long long id, double timeout);

/* Field helpers */
const char *jstr(json_t *o, const char *key);
long long jint(json_t *o, const char *key);

#endif
