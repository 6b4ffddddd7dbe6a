/*
 * pool.c - worker threads running leased tasks (see pool.h).
 *
 * Locking: p->lock guards the queue, each worker's `cur` and `why`, the
 * slot count, the result list and the closed flag.  It is never held
 * across exec_run().  A task's result is appended and its slots returned
 * under one hold of the lock, so pool_status() never sees a task in
 * neither place (or in both).
 *
 * Cancel and reuse: a cancel that races with its task's end lands on the
 * worker's exec_ctl after exec_run() returned; the worker resets the ctl
 * (under the lock) before its next task, so a late cancel never stops the
 * wrong task.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/guard.h"
#include "agent/pool.h"
#include "common/log.h"
#include "common/timeutil.h"

TAILQ_HEAD(task_queue, agent_task);

/* Seconds before the agent starts stopping within which a task's failure
 * is taken as caused by the same stop (SLURM's SIGTERM reaches the tasks
 * and the agent together). */
#define INTERRUPT_WINDOW 2.0

struct worker {
    struct pool *p;
    pthread_t thread;
    bool started;
    struct exec_ctl *ctl;
    struct agent_task *cur;     /* running task, NULL when idle */
    pid_t pgid;                 /* its process group, 0 before it started */
    char why[160];              /* error_msg for cur if cancelled by the agent */
};

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work;        /* queued tasks or stopping */
    struct task_queue queue;
    int nqueued, nrunning;
    int slots, busy;            /* busy: cores of queued and running tasks */
    json_t *results;            /* R objects, oldest first */
    char *closed;               /* pool_close()'s reason, once closed */
    bool stopping;
    double kill_grace;
    char *workdir;
    pool_notify_fn notify;
    void *notify_arg;
    struct worker *workers;
    int nworkers;
};

/* Appends t's result and frees t; called with p->lock held. */
static void add_result(struct pool *p, struct agent_task *t,
                       const struct exec_result *res, const char *why)
{
    json_t *r = agent_result_json(t, res, why);

    /* ended while the agent stops: the pilot is going away, not the task
     * at fault (PROTOCOL.md, "interrupted") */
    if (r && p->closed && !(res->outcome == EXEC_EXITED && res->exit_code == 0))
        json_object_set_new(r, "interrupted", json_true());

    /* Out of memory here would lose a result silently; there is no good
     * way on, so say so loudly. */
    if (!r || json_array_append_new(p->results, r) < 0)
        log_err("out of memory: result of task %lld attempt %d lost",
                (long long)t->id, t->attempt);
    agent_task_free(t);
}

/* A result for a task that never ran; called with p->lock held. */
static void add_unrun(struct pool *p, struct agent_task *t,
                      enum exec_outcome outcome, const char *why)
{
    struct exec_result res;

    memset(&res, 0, sizeof(res));
    res.outcome = outcome;
    res.exit_code = -1;
    res.start_time = res.end_time = time_now();
    snprintf(res.error_msg, sizeof(res.error_msg), "%s", why);
    add_result(p, t, &res, NULL);
}

static void output_path(const struct pool *p, const struct agent_task *t,
                        const char *ext, char *path, size_t len)
{
    snprintf(path, len, "%s/%lld.%d.%s", p->workdir, (long long)t->id, t->attempt,
             ext);
}

/* exec's on_spawn: the task's process group, for the guardian. */
static void task_spawned(void *arg, pid_t pid)
{
    struct worker *w = arg;

    w->pgid = pid;   /* the task leads its own session and group */
    guard_watch(pid);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pool *p = w->p;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        char out[PATH_MAX], err[PATH_MAX];
        struct exec_result res;
        struct exec_spec spec;
        struct agent_task *t;

        while (!p->stopping && TAILQ_EMPTY(&p->queue))
            pthread_cond_wait(&p->work, &p->lock);
        t = TAILQ_FIRST(&p->queue);
        if (!t)
            break;
        TAILQ_REMOVE(&p->queue, t, link);
        p->nqueued--;
        p->nrunning++;
        exec_ctl_reset(w->ctl);
        w->cur = t;
        w->why[0] = '\0';
        output_path(p, t, "out", out, sizeof(out));
        output_path(p, t, "err", err, sizeof(err));
        spec = (struct exec_spec){
            .argv = t->argv, .shell = t->shell, .env_add = t->env, .cwd = t->cwd,
            .stdout_path = out, .stderr_path = err,
            .timeout = t->timeout, .kill_grace = p->kill_grace,
            .on_spawn = task_spawned, .on_spawn_arg = w,
        };
        pthread_mutex_unlock(&p->lock);

        log_debug("task %lld attempt %d: starting", (long long)t->id, t->attempt);
        w->pgid = 0;
        exec_run(&spec, w->ctl, &res);
        if (w->pgid > 0)
            guard_forget(w->pgid);
        log_debug("task %lld attempt %d: %s%s%s", (long long)t->id, t->attempt,
                  agent_outcome_name(res.outcome), res.error_msg[0] ? ": " : "",
                  res.error_msg);

        pthread_mutex_lock(&p->lock);
        w->cur = NULL;
        p->nrunning--;
        p->busy -= t->cores;
        add_result(p, t, &res,
                   res.outcome == EXEC_CANCELED && w->why[0] ? w->why : NULL);
        pthread_mutex_unlock(&p->lock);
        p->notify(p->notify_arg);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

struct pool *pool_create(const struct pool_config *cfg)
{
    struct pool *p = calloc(1, sizeof(*p));
    int rc;

    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    TAILQ_INIT(&p->queue);
    p->slots = cfg->slots;
    p->kill_grace = cfg->kill_grace;
    p->notify = cfg->notify;
    p->notify_arg = cfg->notify_arg;
    p->workdir = strdup(cfg->workdir);
    p->results = json_array();
    p->workers = calloc((size_t)cfg->slots, sizeof(*p->workers));
    if (!p->workdir || !p->results || !p->workers) {
        errno = ENOMEM;
        goto error;
    }
    p->nworkers = cfg->slots;
    for (int i = 0; i < p->nworkers; i++) {
        struct worker *w = &p->workers[i];

        w->p = p;
        w->ctl = exec_ctl_create();
        if (!w->ctl)
            goto error;
        rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            errno = rc;
            goto error;
        }
        w->started = true;
    }
    return p;

error:
    pool_destroy(p);
    return NULL;
}

void pool_destroy(struct pool *p)
{
    struct agent_task *t;
    int saved = errno;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++) {
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
        exec_ctl_destroy(p->workers[i].ctl);
    }
    while ((t = TAILQ_FIRST(&p->queue))) {   /* only if no worker started */
        TAILQ_REMOVE(&p->queue, t, link);
        agent_task_free(t);
    }
    json_decref(p->results);
    free(p->workers);
    free(p->workdir);
    free(p->closed);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
    errno = saved;
}

void pool_submit(struct pool *p, struct agent_task *t)
{
    pthread_mutex_lock(&p->lock);
    if (t->invalid[0]) {
        log_err("task %lld attempt %d: %s", (long long)t->id, t->attempt, t->invalid);
        add_unrun(p, t, EXEC_SPAWN_FAILED, t->invalid);
    } else if (p->closed) {
        add_unrun(p, t, EXEC_CANCELED, p->closed);
    } else {
        TAILQ_INSERT_TAIL(&p->queue, t, link);
        p->nqueued++;
        p->busy += t->cores;
        pthread_cond_signal(&p->work);
        t = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (t)      /* it got its result at once */
        p->notify(p->notify_arg);
}

/* Cancels the running tasks matching id (all of them when all is true);
 * called with p->lock held.  Returns how many it found. */
static int cancel_running(struct pool *p, int64_t id, bool all, const char *why)
{
    int n = 0;

    for (int i = 0; i < p->nworkers; i++) {
        struct worker *w = &p->workers[i];

        if (!w->cur || (!all && w->cur->id != id))
            continue;
        if (why)
            snprintf(w->why, sizeof(w->why), "%s", why);
        exec_ctl_cancel(w->ctl);
        n++;
    }
    return n;
}

int pool_cancel(struct pool *p, int64_t id, const char *why)
{
    struct agent_task *t, *next;
    int found = 0;

    pthread_mutex_lock(&p->lock);
    found = cancel_running(p, id, false, why);
    for (t = TAILQ_FIRST(&p->queue); t; t = next) {
        next = TAILQ_NEXT(t, link);
        if (t->id != id)
            continue;
        TAILQ_REMOVE(&p->queue, t, link);
        p->nqueued--;
        p->busy -= t->cores;
        add_unrun(p, t, EXEC_CANCELED, why ? why : "canceled");
        found++;
    }
    pthread_mutex_unlock(&p->lock);
    if (!found) {
        errno = ENOENT;
        return -1;
    }
    p->notify(p->notify_arg);
    return 0;
}

/* Marks the results of attempts that failed at or after since (wall
 * clock) as interrupted; p->lock held. */
static void mark_interrupted(struct pool *p, double since)
{
    size_t i;
    json_t *r;

    json_array_foreach(p->results, i, r) {
        json_t *code = json_object_get(r, "exit_code");
        const char *end = json_string_value(json_object_get(r, "end_time"));
        double t;

        if (!json_object_get(r, "interrupted")
            && !(strcmp(json_string_value(json_object_get(r, "outcome")), "EXITED") == 0
                 && json_integer_value(code) == 0)
            && end && time_parse_iso8601(end, &t) == 0 && t >= since)
            json_object_set_new(r, "interrupted", json_true());
    }
}

void pool_close(struct pool *p, const char *why)
{
    struct agent_task *t;

    pthread_mutex_lock(&p->lock);
    if (!p->closed) {
        p->closed = strdup(why);
        /* SLURM signals every process of the step at once: a task may have
         * died of that SIGTERM just before the agent took its own */
        mark_interrupted(p, time_now() - INTERRUPT_WINDOW);
    }
    cancel_running(p, 0, true, why);
    while ((t = TAILQ_FIRST(&p->queue))) {
        TAILQ_REMOVE(&p->queue, t, link);
        p->nqueued--;
        p->busy -= t->cores;
        add_unrun(p, t, EXEC_CANCELED, why);
    }
    pthread_mutex_unlock(&p->lock);
    p->notify(p->notify_arg);
}

void pool_set_kill_grace(struct pool *p, double kill_grace)
{
    pthread_mutex_lock(&p->lock);
    p->kill_grace = kill_grace;
    pthread_mutex_unlock(&p->lock);
}

void pool_status(struct pool *p, struct pool_status *st)
{
    pthread_mutex_lock(&p->lock);
    st->free_slots = p->busy >= p->slots ? 0 : p->slots - p->busy;
    st->queued = p->nqueued;
    st->running = p->nrunning;
    st->results = json_array_size(p->results);
    pthread_mutex_unlock(&p->lock);
}

json_t *pool_held_ids(struct pool *p)
{
    json_t *ids = json_array(), *r;
    struct agent_task *t;
    size_t i;

    if (!ids)
        return NULL;
    pthread_mutex_lock(&p->lock);
    for (int k = 0; k < p->nworkers; k++)
        if (p->workers[k].cur)
            json_array_append_new(ids, json_integer(p->workers[k].cur->id));
    TAILQ_FOREACH(t, &p->queue, link)
        json_array_append_new(ids, json_integer(t->id));
    json_array_foreach(p->results, i, r)
        json_array_append(ids, json_object_get(r, "id"));
    pthread_mutex_unlock(&p->lock);
    return ids;
}

json_t *pool_results(struct pool *p, size_t max)
{
    json_t *batch = json_array();
    size_t n;

    if (!batch)
        return NULL;
    pthread_mutex_lock(&p->lock);
    n = json_array_size(p->results);
    if (n > max)
        n = max;
    for (size_t i = 0; i < n; i++)
        json_array_append(batch, json_array_get(p->results, i));
    pthread_mutex_unlock(&p->lock);
    return batch;
}

void pool_results_ack(struct pool *p, size_t n)
{
    json_t *rest;
    size_t total;

    pthread_mutex_lock(&p->lock);
    total = json_array_size(p->results);
    if (n >= total) {
        json_array_clear(p->results);
    } else if (n > 0) {
        /* one copy of the rest, not n shifts of it */
        rest = json_array();
        for (size_t i = n; rest && i < total; i++)
            json_array_append(rest, json_array_get(p->results, i));
        if (rest) {
            json_decref(p->results);
            p->results = rest;
        } else {
            while (n-- > 0)
                json_array_remove(p->results, 0);
        }
    }
    pthread_mutex_unlock(&p->lock);
}
