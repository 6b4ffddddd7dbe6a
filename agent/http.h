/*
 * http.h - a small libcurl client for the agent's JSON calls to qtaud.
 *
 * One struct http_client wraps one CURL easy handle and is used by one
 * thread only (libcurl handles are not shared between threads); reusing it
 * keeps its connection to qtaud alive across calls.  curl_global_init()
 * must have been called before the first http_client_create().
 *
 * The client holds the Authorization header with the pilot token; nothing
 * here logs or returns it, and destroying the client wipes it.
 */
#ifndef QT_AGENT_HTTP_H
#define QT_AGENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct http_client;

/* Asked about once a second during a call; true aborts the call, which
 * then fails with ECANCELED.  Called on the client's own thread. */
typedef bool (*http_abort_fn)(void *arg);

/* Returns a client for base_url (no trailing '/') sending token as a
 * bearer token, or NULL with errno set.  Both strings are copied. */
struct http_client *http_client_create(const char *base_url, const char *token);
/* Accepts NULL; keeps errno. */
void http_client_destroy(struct http_client *c);
/* Sets (or clears, with fn NULL) the abort check for later calls. */
void http_client_set_abort(struct http_client *c, http_abort_fn fn, void *arg);

/* POSTs body as JSON to base_url + path and waits up to timeout seconds
 * for the whole answer (connecting takes at most HTTP_CONNECT_TIMEOUT of
 * it).  On an answer of any status returns 0 with *status set and *reply
 * a new reference to the parsed body, or NULL when the body is empty or
 * not JSON.  Returns -1 when no answer came (cannot connect, timed out,
 * connection lost, aborted: errno ECANCELED), with a lowercase reason in
 * err and *reply NULL.  body is borrowed. */
int http_post_json(struct http_client *c, const char *path, json_t *body,
                   double timeout, long *status, json_t **reply, char *err,
                   size_t errlen);

/* Seconds allowed for connecting: qtaud is on the cluster's network, so a
 * connect that takes longer than this is a head node that is down. */
#define HTTP_CONNECT_TIMEOUT 3.0

#endif
