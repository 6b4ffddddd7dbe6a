/*
 * pool.h - the agent's worker pool: leased tasks in, results out.
 *
 * One worker thread per slot, each with its own exec_ctl, takes tasks from
 * one FIFO queue and runs them with exec_run().  A task occupies its
 * `cores` slots from pool_submit() until its result is in the pool's
 * result list, which holds every result until the reporter has had it
 * acknowledged (pool_results_ack()).  All pool functions are thread-safe.
 *
 * notify(arg) is called whenever the pool's status changes (a result was
 * added, slots were freed), from whichever thread changed it, never with
 * the pool's lock held; a caller must therefore not hold a lock that
 * notify takes when it calls pool_submit(), pool_cancel() or pool_close().
 * The status functions do not notify and may be called under such a lock.
 */
#ifndef QT_AGENT_POOL_H
#define QT_AGENT_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agent/task.h"

struct pool;

typedef void (*pool_notify_fn)(void *arg);

struct pool_config {
    int slots;              /* worker threads, and slots to fill */
    const char *workdir;    /* output goes to <workdir>/<id>.<attempt>.out/.err */
    double kill_grace;      /* until pool_set_kill_grace() */
    pool_notify_fn notify;
    void *notify_arg;
};

struct pool_status {
    int free_slots;         /* slots not taken by queued or running tasks */
    int queued, running;
    size_t results;         /* results not yet acknowledged */
};

/* Starts cfg->slots workers.  Returns the pool or NULL with errno set.
 * cfg's strings are copied. */
struct pool *pool_create(const struct pool_config *cfg);
/* Stops the workers once the queue is empty, joins them and frees the
 * pool with any results still in it.  Accepts NULL. */
void pool_destroy(struct pool *p);

/* Queues t (the pool takes ownership).  After pool_close(), or when t is
 * marked invalid, t gets its result at once instead of running. */
void pool_submit(struct pool *p, struct agent_task *t);
/* Stops task id: a queued one gets a CANCELED result at once, a running
 * one is cancelled through its worker's exec_ctl (SIGTERM to its group,
 * SIGKILL after kill_grace).  why, when not NULL, becomes its error_msg
 * (copied); NULL keeps exec's "canceled".  Returns 0, or -1 with errno
 * ENOENT when the pool is not running or queueing that task. */
int pool_cancel(struct pool *p, int64_t id, const char *why);
/* Cancels every queued and running task with why, and from now on turns
 * each submitted task into a CANCELED result at once. */
void pool_close(struct pool *p, const char *why);
void pool_set_kill_grace(struct pool *p, double kill_grace);

void pool_status(struct pool *p, struct pool_status *st);
/* The ids of every task the pool holds - queued, running, or ended with
 * its result not yet acknowledged - as a new JSON array. */
json_t *pool_held_ids(struct pool *p);
/* A new JSON array of the oldest results, at most max of them. */
json_t *pool_results(struct pool *p, size_t max);
/* Drops the n oldest results: the ones a 200 report acknowledged.  Only
 * the thread that took them with pool_results() may call this (results are
 * only ever appended, so the n oldest are still the same ones). */
void pool_results_ack(struct pool *p, size_t n);

#endif
