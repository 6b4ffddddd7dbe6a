/*
 * api.h - the HTTP API (v1) on libmicrohttpd.
 *
 * The server runs libmicrohttpd's own threads (a small pool, epoll); the
 * handlers call into the scheduler and answer JSON.  A long poll
 * (?wait=S) suspends its connection and is resumed by the scheduler, so it
 * holds no server thread while it waits.
 */
#ifndef QT_API_H
#define QT_API_H

#include <stddef.h>

#include "common/error.h"
#include "daemon/sched.h"

struct api_config {
    const char *host;        /* numeric IPv4/IPv6 address to bind */
    int port;                /* 0: any free port */
    int listen_fd;           /* a listening TCP socket to serve on instead
                              * of binding host:port (socket activation);
                              * -1: bind.  api_stop closes it. */
    int threads;             /* server threads */
    size_t max_body;         /* bytes; larger bodies get 413 */
    unsigned idle_timeout;   /* seconds a connection may sit idle */
    unsigned max_connections;
    unsigned max_connections_per_client;  /* 0: no limit */
    size_t max_header_size;  /* bytes of request line + headers; more: 431 */
    const char *db_path;     /* the store, for the metrics export */
    const char *token;       /* the admin token every owner request carries */
    const char *unix_path;   /* UNIX socket to listen on too; NULL: none */
};

struct api;

/* Starts listening.  Returns the server or NULL with err filled; *port is
 * set to the bound port (listen_fd's, when one is given). */
struct api *api_start(const struct api_config *cfg, struct sched *s, int *port,
                      struct qt_error *err);
/* Closes everything; waiters must have been fired (sched_drain). */
void api_stop(struct api *a);

#endif
