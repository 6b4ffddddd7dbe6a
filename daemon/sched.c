/*
 * sched.c - pilots, tasks, queues and local pools (see sched.h).
 *
 * Locking: one mutex, s->lock, guards every pilot and task field that
 * changes, the queues and the waiter list.  It is held only for bookkeeping,
 * never across a spawn, a wait for a child or a wait for the store.  Lock
 * order is s->lock, then the writer's own lock (queueing a change).
 *
 * Queues: PENDING tasks that name a pilot wait in that pilot's queue, the
 * others in the ANY queue.  A worker of pilot p takes the older of the two
 * queue heads when it fits p's free slots; otherwise it waits (first in,
 * first out; a large task is not overtaken by small ones).
 *
 * Every ended attempt - success, failure, cancel, interruption - queues its
 * metrics row before the task's new state becomes visible, so a reader who
 * sees a task ended and then syncs the store finds the row.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/enums.h"
#include "common/exec.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "daemon/sched.h"
#include "daemon/spec.h"

#define NSTATES 5
/* ANY tasks a worker looks past when they can never fit its pilot. */
#define PICK_SCAN_LIMIT 64
#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000

TAILQ_HEAD(task_queue, task);

struct task {
    int64_t id;
    struct task_spec spec;
    char *description;          /* normalized JSON, as stored */
    int64_t pilot_id;           /* requested; 0 = ANY */
    char *pilot_scheduled;      /* "ANY" or the pilot's name */
    enum task_state state;
    int attempts;
    int requeues;
    int64_t run_pilot_id;
    double submit_time, start_time, end_time;
    int exit_code, term_signal;
    char *error_msg;

    struct exec_ctl *ctl;       /* the worker's, while RUNNING */
    bool cancel_requested;
    char *interrupt;            /* why it is being stopped, if not by user */
    struct task_queue *queue;   /* where it waits, while PENDING */
    TAILQ_ENTRY(task) qlink;
    int nwaiters;
};

struct pilot;

struct worker {
    struct sched *s;
    struct pilot *p;
    struct exec_ctl *ctl;
    pthread_t thread;
    bool started;
};

struct pilot {
    int64_t id;
    char *name;
    enum pilot_resource resource;
    enum pilot_engine engine;
    enum pilot_state state;
    char *description;
    char *reason;
    int cores;
    int free_slots;
    double create_time, start_time, end_time;
    int counts[NSTATES];        /* tasks by state (see task_pilot()) */

    struct task_queue queue;    /* PENDING tasks that name this pilot */
    pthread_cond_t cond;        /* work or slots may be available */
    struct worker *workers;
    int nworkers;
    int running;
};

struct sched {
    struct sched_config cfg;
    char *state_dir;
    char *hostname;
    char output_dir[PATH_MAX - 32];  /* room for "/<id>.out" */
    struct db_writer *w;

    pthread_mutex_t lock;
    pthread_cond_t idle;        /* running reached 0 */
    struct task **tasks;        /* by id; NULL for unused ids */
    int64_t tasks_cap;
    int64_t next_task_id;       /* last id handed out */
    struct pilot **pilots;      /* by position; few */
    size_t npilots;
    int64_t next_pilot_id;
    struct task_queue any_queue;
    int counts[NSTATES];
    int running;
    bool draining;

    struct sched_waiter *waiters;  /* registered long polls */
    pthread_t timer;
    pthread_cond_t timer_cond;
    bool timer_started;
    bool stopping;
};

static char *xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;

    if (s && !d)
        abort();
    return d;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (!p)
        abort();
    return p;
}

/* ---- persistence ---------------------------------------------------- */

static void task_row(const struct task *t, struct db_task_row *r, bool insert)
{
    memset(r, 0, sizeof(*r));
    r->id = t->id;
    r->name = t->spec.name;
    r->description = insert ? t->description : NULL;
    r->pilot_id = t->pilot_id;
    r->pilot_scheduled = t->pilot_scheduled;
    r->state = (int)t->state;
    r->attempts = t->attempts;
    r->requeues = t->requeues;
    r->run_pilot_id = t->run_pilot_id;
    r->submit_time = t->submit_time;
    r->start_time = t->start_time;
    r->end_time = t->end_time;
    r->exit_code = t->exit_code;
    r->term_signal = t->term_signal;
    r->error_msg = t->error_msg;
}

static void task_persist(struct sched *s, const struct task *t)
{
    struct db_task_row r;

    task_row(t, &r, false);
    r.hostname = t->run_pilot_id ? s->hostname : NULL;
    db_writer_task(s->w, &r);
}

static uint64_t pilot_persist(struct sched *s, const struct pilot *p)
{
    struct db_pilot_row r = {
        .id = p->id, .name = p->name, .resource = (int)p->resource,
        .engine = (int)p->engine, .state = (int)p->state,
        .description = p->description, .cores = p->cores, .reason = p->reason,
        .create_time = p->create_time, .start_time = p->start_time,
        .end_time = p->end_time,
    };

    return db_writer_pilot(s->w, &r);
}

/* Queues the metrics row of the attempt that just ended. */
static void metrics_record(struct sched *s, const struct task *t,
                           enum task_state status, const char *error_msg,
                           double start, double end, int exit_code, int sig,
                           int64_t pilot_id)
{
    struct db_metrics_row m = {
        .task_id = t->id, .attempt = t->attempts, .task_name = t->spec.name,
        .status = (int)status, .error_msg = error_msg,
        .submit_time = t->submit_time, .start_time = start,
        .completion_time = end, .pilot_scheduled = t->pilot_scheduled,
        .exit_code = exit_code, .term_signal = sig, .pilot_id = pilot_id,
        .hostname = pilot_id ? s->hostname : NULL,
    };

    db_writer_metrics(s->w, &m);
}

/* ---- lookups --------------------------------------------------------- */

static struct task *task_find(struct sched *s, int64_t id)
{
    if (id <= 0 || id >= s->tasks_cap)
        return NULL;
    return s->tasks[id];
}

static struct pilot *pilot_by_id(struct sched *s, int64_t id)
{
    for (size_t i = 0; i < s->npilots; i++)
        if (s->pilots[i]->id == id)
            return s->pilots[i];
    return NULL;
}

/* A name, or a decimal id. */
static struct pilot *pilot_find(struct sched *s, const char *ref)
{
    char *end;
    long long id;

    for (size_t i = 0; i < s->npilots; i++)
        if (strcmp(s->pilots[i]->name, ref) == 0)
            return s->pilots[i];
    errno = 0;
    id = strtoll(ref, &end, 10);
    if (errno == 0 && *ref && *end == '\0' && id > 0)
        return pilot_by_id(s, id);
    return NULL;
}

static void tasks_reserve(struct sched *s, int64_t upto)
{
    int64_t cap = s->tasks_cap ? s->tasks_cap : 1024;

    if (upto < s->tasks_cap)
        return;
    while (cap <= upto)
        cap *= 2;
    s->tasks = realloc(s->tasks, (size_t)cap * sizeof(*s->tasks));
    if (!s->tasks)
        abort();
    memset(s->tasks + s->tasks_cap, 0,
           (size_t)(cap - s->tasks_cap) * sizeof(*s->tasks));
    s->tasks_cap = cap;
}

/* ---- state changes --------------------------------------------------- */

/* The pilot a task counts against: the one it waits for, or ran on. */
static int64_t task_pilot(const struct task *t)
{
    return t->state == TASK_PENDING ? t->pilot_id : t->run_pilot_id;
}

static void counts_add(struct sched *s, const struct task *t, int delta)
{
    struct pilot *p = task_pilot(t) ? pilot_by_id(s, task_pilot(t)) : NULL;

    s->counts[t->state] += delta;
    if (p)
        p->counts[t->state] += delta;
}

static void task_transition(struct sched *s, struct task *t,
                            enum task_state state, int64_t run_pilot_id)
{
    counts_add(s, t, -1);
    t->state = state;
    t->run_pilot_id = run_pilot_id;
    counts_add(s, t, +1);
}

/* Fires the waiters of task_id (0: all of them). */
static void fire_waiters(struct sched *s, int64_t task_id)
{
    struct sched_waiter *w = s->waiters, *next;
    struct task *t;

    for (; w; w = next) {
        next = w->next;
        if (task_id && w->task_id != task_id)
            continue;
        if (w->prev)
            w->prev->next = w->next;
        else
            s->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->registered = false;
        t = task_find(s, w->task_id);
        if (t)
            t->nwaiters--;
        w->fire(w);
    }
}

static void pilot_wake(struct pilot *p)
{
    if (p->workers)
        pthread_cond_broadcast(&p->cond);
}

static void queue_push(struct sched *s, struct task *t)
{
    struct pilot *p = t->pilot_id ? pilot_by_id(s, t->pilot_id) : NULL;

    t->queue = p ? &p->queue : &s->any_queue;
    TAILQ_INSERT_TAIL(t->queue, t, qlink);
}

static void queue_remove(struct task *t)
{
    if (t->queue) {
        TAILQ_REMOVE(t->queue, t, qlink);
        t->queue = NULL;
    }
}

static void wake_for(struct sched *s, const struct task *t)
{
    if (t->pilot_id) {
        struct pilot *p = pilot_by_id(s, t->pilot_id);

        if (p)
            pilot_wake(p);
        return;
    }
    for (size_t i = 0; i < s->npilots; i++)
        pilot_wake(s->pilots[i]);
}

/* Ends a task that is not running (pending, or just finished an attempt)
 * in a terminal state, with its metrics row for an attempt that never
 * started when it was pending. */
static void task_end_pending(struct sched *s, struct task *t,
                             enum task_state state, const char *msg)
{
    double now = time_now();

    queue_remove(t);
    t->attempts++;
    free(t->error_msg);
    t->error_msg = xstrdup(msg);
    t->start_time = 0;
    t->end_time = now;
    t->exit_code = -1;
    t->term_signal = 0;
    metrics_record(s, t, state, msg, 0, now, -1, 0, 0);
    task_transition(s, t, state, 0);
    task_persist(s, t);
    if (t->nwaiters)
        fire_waiters(s, t->id);
}

/* Records the outcome of the attempt t just ran on p. */
static void task_finish(struct sched *s, struct task *t, struct pilot *p,
                        const struct exec_result *res)
{
    enum task_state status;
    const char *msg = res->error_msg[0] ? res->error_msg : NULL;

    if (t->interrupt) {
        status = TASK_FAILED;
        msg = t->interrupt;
    } else if (res->outcome == EXEC_CANCELED) {
        status = TASK_CANCELED;
    } else if (res->outcome == EXEC_EXITED && res->exit_code == 0) {
        status = TASK_SUCCESS;
    } else {
        status = TASK_FAILED;
    }
    t->start_time = res->start_time;
    t->end_time = res->end_time;
    t->exit_code = res->exit_code;
    t->term_signal = res->term_signal;
    free(t->error_msg);
    t->error_msg = xstrdup(msg);
    metrics_record(s, t, status, msg, res->start_time, res->end_time,
                   res->exit_code, res->term_signal, p->id);

    if (t->interrupt && (t->pilot_id == 0 || s->draining)) {
        /* not the task's fault (its pilot was lost, or qtaud is stopping):
         * back to the queue, retries untouched */
        t->requeues++;
        free(t->interrupt);
        t->interrupt = NULL;
        task_transition(s, t, TASK_PENDING, p->id);
        queue_push(s, t);
        if (!s->draining)
            wake_for(s, t);
    } else if (status == TASK_FAILED && !t->interrupt && !t->cancel_requested
               && t->attempts - t->requeues <= t->spec.max_retries) {
        task_transition(s, t, TASK_PENDING, p->id);
        queue_push(s, t);
        wake_for(s, t);
    } else {
        free(t->interrupt);
        t->interrupt = NULL;
        task_transition(s, t, status, p->id);
        if (t->nwaiters)
            fire_waiters(s, t->id);
    }
    task_persist(s, t);
}

/* ---- local pools ----------------------------------------------------- */

static struct task *pick(struct sched *s, struct pilot *p)
{
    struct task *named = TAILQ_FIRST(&p->queue);
    struct task *any = TAILQ_FIRST(&s->any_queue);
    struct task *t;
    int scanned = 0;

    while (any && any->spec.cores > p->cores && scanned++ < PICK_SCAN_LIMIT)
        any = TAILQ_NEXT(any, qlink);
    if (any && any->spec.cores > p->cores)
        any = NULL;
    if (named && any)
        t = named->id < any->id ? named : any;
    else
        t = named ? named : any;
    if (t && t->spec.cores <= p->free_slots)
        return t;
    return NULL;
}

static void output_path(const struct sched *s, int64_t id, int which,
                        char *path, size_t len)
{
    snprintf(path, len, "%s/%lld.%s", s->output_dir, (long long)id,
             which == 1 ? "out" : "err");
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct sched *s = wk->s;
    struct pilot *p = wk->p;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct task *t = NULL;
        struct exec_spec spec;
        struct exec_result res;
        char out[PATH_MAX], err[PATH_MAX];

        while (p->state == PILOT_RUNNING && !s->draining && !(t = pick(s, p)))
            pthread_cond_wait(&p->cond, &s->lock);
        if (!t)
            break;
        queue_remove(t);
        t->attempts++;
        t->start_time = time_now();
        t->end_time = 0;
        t->exit_code = -1;
        t->term_signal = 0;
        free(t->error_msg);
        t->error_msg = NULL;
        p->free_slots -= t->spec.cores;
        p->running++;
        s->running++;
        exec_ctl_reset(wk->ctl);
        t->ctl = wk->ctl;
        task_transition(s, t, TASK_RUNNING, p->id);
        task_persist(s, t);

        output_path(s, t->id, 1, out, sizeof(out));
        output_path(s, t->id, 2, err, sizeof(err));
        spec = (struct exec_spec){
            .argv = t->spec.argv, .shell = t->spec.shell, .env_add = t->spec.env,
            .cwd = t->spec.cwd, .stdout_path = out, .stderr_path = err,
            .timeout = t->spec.timeout, .kill_grace = s->cfg.kill_grace,
        };
        pthread_mutex_unlock(&s->lock);

        exec_run(&spec, wk->ctl, &res);

        pthread_mutex_lock(&s->lock);
        t->ctl = NULL;
        p->free_slots += t->spec.cores;
        p->running--;
        s->running--;
        task_finish(s, t, p, &res);
        pthread_cond_broadcast(&p->cond);
        if (s->running == 0)
            pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Starts p's workers; called with s->lock held. */
static int pilot_start_pool(struct sched *s, struct pilot *p, struct qt_error *err)
{
    p->free_slots = p->cores;
    p->workers = xcalloc((size_t)p->cores, sizeof(*p->workers));
    p->nworkers = p->cores;
    for (int i = 0; i < p->nworkers; i++) {
        struct worker *wk = &p->workers[i];
        int rc;

        wk->s = s;
        wk->p = p;
        wk->ctl = exec_ctl_create();
        if (!wk->ctl)
            return qt_error_set(err, 503, "unavailable", NULL,
                                "cannot create worker: %s", strerror(errno));
        rc = pthread_create(&wk->thread, NULL, worker_main, wk);
        if (rc != 0)
            return qt_error_set(err, 503, "unavailable", NULL,
                                "cannot start worker thread: %s", strerror(rc));
        wk->started = true;
    }
    return 0;
}

/* Joins p's workers; called without s->lock. */
static void pilot_join_pool(struct pilot *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        if (p->workers[i].started)
            pthread_join(p->workers[i].thread, NULL);
        exec_ctl_destroy(p->workers[i].ctl);
    }
    free(p->workers);
    p->workers = NULL;
    p->nworkers = 0;
}

/* ---- JSON views ------------------------------------------------------ */

static json_t *time_json(double t)
{
    char stamp[40];

    return t > 0 ? json_string(time_iso8601(t, stamp, sizeof(stamp))) : json_null();
}

static json_t *counts_json(const int *counts)
{
    json_t *o = json_object();

    for (int i = 0; i < NSTATES; i++)
        json_object_set_new(o, task_state_name((enum task_state)i),
                            json_integer(counts[i]));
    return o;
}

static json_t *pilot_json(const struct pilot *p)
{
    json_t *o = json_loads(p->description, 0, NULL);

    if (!o)
        o = json_object();
    json_object_set_new(o, "id", json_integer(p->id));
    json_object_set_new(o, "name", json_string(p->name));
    json_object_set_new(o, "state", json_string(pilot_state_name(p->state)));
    json_object_set_new(o, "cores", json_integer(p->cores));
    json_object_set_new(o, "reason", p->reason ? json_string(p->reason) : json_null());
    json_object_set_new(o, "slurm_job_id", json_null());
    json_object_set_new(o, "slurm_state", json_null());
    json_object_set_new(o, "create_time", time_json(p->create_time));
    json_object_set_new(o, "start_time", time_json(p->start_time));
    json_object_set_new(o, "end_time", time_json(p->end_time));
    json_object_set_new(o, "free_cores", json_integer(p->workers ? p->free_slots : 0));
    json_object_set_new(o, "tasks", counts_json(p->counts));
    return o;
}

static json_t *task_json(struct sched *s, const struct task *t)
{
    json_t *o = json_loads(t->description, 0, NULL);
    struct pilot *rp = t->run_pilot_id ? pilot_by_id(s, t->run_pilot_id) : NULL;
    char url[64];

    if (!o)
        o = json_object();
    json_object_set_new(o, "id", json_integer(t->id));
    json_object_set_new(o, "name", t->spec.name ? json_string(t->spec.name) : json_null());
    json_object_set_new(o, "state", json_string(task_state_name(t->state)));
    json_object_set_new(o, "attempts", json_integer(t->attempts));
    json_object_set_new(o, "run_pilot", rp ? json_string(rp->name) : json_null());
    json_object_set_new(o, "submit_time", time_json(t->submit_time));
    json_object_set_new(o, "start_time", time_json(t->start_time));
    json_object_set_new(o, "end_time", time_json(t->end_time));
    json_object_set_new(o, "exit_code",
                        t->exit_code >= 0 ? json_integer(t->exit_code) : json_null());
    json_object_set_new(o, "signal",
                        t->term_signal > 0 ? json_integer(t->term_signal) : json_null());
    json_object_set_new(o, "error_msg",
                        t->error_msg ? json_string(t->error_msg) : json_null());
    if (t->state == TASK_RUNNING && t->cancel_requested)
        json_object_set_new(o, "cancel_requested", json_true());
    snprintf(url, sizeof(url), "/v1/tasks/%lld/stdout", (long long)t->id);
    json_object_set_new(o, "stdout", json_string(url));
    snprintf(url, sizeof(url), "/v1/tasks/%lld/stderr", (long long)t->id);
    json_object_set_new(o, "stderr", json_string(url));
    return o;
}

/* ---- pilots ---------------------------------------------------------- */

static struct pilot *pilot_new(int64_t id, const char *name)
{
    struct pilot *p = xcalloc(1, sizeof(*p));

    p->id = id;
    p->name = xstrdup(name);
    TAILQ_INIT(&p->queue);
    pthread_cond_init(&p->cond, NULL);
    return p;
}

static void pilot_free(struct pilot *p)
{
    if (!p)
        return;
    pthread_cond_destroy(&p->cond);
    free(p->name);
    free(p->description);
    free(p->reason);
    free(p);
}

static void pilots_append(struct sched *s, struct pilot *p)
{
    s->pilots = realloc(s->pilots, (s->npilots + 1) * sizeof(*s->pilots));
    if (!s->pilots)
        abort();
    s->pilots[s->npilots++] = p;
    if (p->id > s->next_pilot_id)
        s->next_pilot_id = p->id;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? (int)n : 1;
}

/* Ends pilot p: pending tasks that named it fail; tasks running on it are
 * stopped (requeued if ANY, failed if they named it).  s->lock held. */
static void pilot_end(struct sched *s, struct pilot *p, enum pilot_state state,
                      const char *reason)
{
    char msg[384];
    struct task *t;

    p->state = state;
    free(p->reason);
    p->reason = xstrdup(reason);
    p->end_time = time_now();
    snprintf(msg, sizeof(msg), "pilot %s ended: %s", p->name, reason);
    while ((t = TAILQ_FIRST(&p->queue)))
        task_end_pending(s, t, TASK_FAILED, msg);
    for (int64_t id = 1; id <= s->next_task_id && p->running; id++) {
        t = task_find(s, id);
        if (t && t->state == TASK_RUNNING && t->run_pilot_id == p->id && t->ctl) {
            free(t->interrupt);
            t->interrupt = xstrdup(msg);
            exec_ctl_cancel(t->ctl);
        }
    }
    pilot_persist(s, p);
    pilot_wake(p);
}

json_t *sched_pilot_create(struct sched *s, json_t *body, struct qt_error *err)
{
    struct pilot_spec spec;
    struct pilot *p = NULL;
    json_t *desc, *out = NULL;
    char name[80];
    uint64_t seq;

    if (pilot_spec_parse(body, &spec, err) < 0)
        return NULL;
    if (spec.resource == RESOURCE_SLURM) {
#ifdef HAVE_SLURM
        qt_error_set(err, 501, "not_implemented", "resource",
                     "slurm pilots are not implemented in this version yet");
#else
        qt_error_set(err, 400, "invalid_argument", "resource",
                     "this qtaud was built without SLURM support "
                     "(configure --without-slurm); only local pilots are possible");
#endif
        goto done;
    }
    if (spec.cores == 0)
        spec.cores = online_cpus();
    desc = pilot_spec_to_json(&spec);
    json_object_del(desc, "name");
    json_object_del(desc, "cores");

    pthread_mutex_lock(&s->lock);
    if (s->draining) {
        pthread_mutex_unlock(&s->lock);
        json_decref(desc);
        qt_error_set(err, 503, "unavailable", NULL, "qtaud is shutting down");
        goto done;
    }
    if (spec.name && pilot_find(s, spec.name)) {
        pthread_mutex_unlock(&s->lock);
        json_decref(desc);
        qt_error_set(err, 409, "conflict", "name", "a pilot named '%s' exists",
                     spec.name);
        goto done;
    }
    snprintf(name, sizeof(name), "pilot-%lld", (long long)s->next_pilot_id + 1);
    p = pilot_new(s->next_pilot_id + 1, spec.name ? spec.name : name);
    p->resource = spec.resource;
    p->engine = spec.engine;
    p->cores = spec.cores;
    p->description = json_dumps(desc, JSON_COMPACT);
    json_decref(desc);
    p->state = PILOT_RUNNING;
    p->create_time = p->start_time = time_now();
    pilots_append(s, p);
    seq = pilot_persist(s, p);
    pthread_mutex_unlock(&s->lock);

    if (db_writer_wait(s->w, seq, err) < 0) {
        /* not acknowledged: take it back out */
        pthread_mutex_lock(&s->lock);
        p->state = PILOT_FAILED;
        p->reason = xstrdup("the store could not record it");
        pthread_mutex_unlock(&s->lock);
        goto done;
    }
    pthread_mutex_lock(&s->lock);
    if (pilot_start_pool(s, p, err) < 0) {
        pilot_end(s, p, PILOT_FAILED, err->message);
        pthread_mutex_unlock(&s->lock);
        goto done;
    }
    out = pilot_json(p);
    pthread_mutex_unlock(&s->lock);
    log_info("pilot %lld '%s' started: local, %d cores", (long long)p->id,
             p->name, p->cores);
done:
    pilot_spec_release(&spec);
    return out;
}

json_t *sched_pilot_get(struct sched *s, const char *ref, struct qt_error *err)
{
    struct pilot *p;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    p = pilot_find(s, ref);
    if (p)
        out = pilot_json(p);
    else
        qt_error_set(err, 404, "not_found", NULL, "no pilot '%.64s'", ref);
    pthread_mutex_unlock(&s->lock);
    return out;
}

json_t *sched_pilot_list(struct sched *s, struct qt_error *err)
{
    json_t *arr = json_array();

    (void)err;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->npilots; i++)
        json_array_append_new(arr, pilot_json(s->pilots[i]));
    pthread_mutex_unlock(&s->lock);
    return json_pack("{s:o, s:n}", "pilots", arr, "next");
}

json_t *sched_pilot_cancel(struct sched *s, const char *ref, struct qt_error *err)
{
    struct pilot *p;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    p = pilot_find(s, ref);
    if (!p) {
        qt_error_set(err, 404, "not_found", NULL, "no pilot '%.64s'", ref);
    } else if (pilot_state_terminal(p->state)) {
        qt_error_set(err, 409, "conflict", NULL, "pilot '%s' already ended (%s)",
                     p->name, pilot_state_name(p->state));
    } else {
        pilot_end(s, p, PILOT_CANCELED, "canceled by user");
        out = pilot_json(p);
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

int sched_pilot_id(struct sched *s, const char *ref, int64_t *id,
                   struct qt_error *err)
{
    struct pilot *p;

    pthread_mutex_lock(&s->lock);
    p = pilot_find(s, ref);
    if (p)
        *id = p->id;
    pthread_mutex_unlock(&s->lock);
    if (!p)
        return qt_error_arg(err, "pilot", "no pilot '%.64s'", ref);
    return 0;
}

/* ---- tasks ----------------------------------------------------------- */

static void task_free(struct task *t)
{
    if (!t)
        return;
    task_spec_release(&t->spec);
    free(t->description);
    free(t->pilot_scheduled);
    free(t->error_msg);
    free(t->interrupt);
    free(t);
}

/* Checks that the pilot a spec names can take it; s->lock held. */
static int resolve_pilot(struct sched *s, const struct task_spec *spec,
                         const char *prefix, int64_t *pilot_id,
                         struct qt_error *err)
{
    struct pilot *p;
    char field[80];

    *pilot_id = 0;
    snprintf(field, sizeof(field), "%spilot", prefix);
    if (!spec->pilot)
        return 0;
    p = pilot_find(s, spec->pilot);
    if (!p)
        return qt_error_arg(err, field, "no pilot '%.64s'", spec->pilot);
    if (pilot_state_terminal(p->state))
        return qt_error_set(err, 409, "conflict", field,
                            "pilot '%s' has ended (%s)", p->name,
                            pilot_state_name(p->state));
    if (spec->cores > p->cores) {
        snprintf(field, sizeof(field), "%scores", prefix);
        return qt_error_arg(err, field, "task needs %d cores, pilot '%s' has %d",
                            spec->cores, p->name, p->cores);
    }
    *pilot_id = p->id;
    return 0;
}

json_t *sched_tasks_submit(struct sched *s, json_t *body, struct qt_error *err)
{
    bool is_array = json_is_array(body);
    size_t n = is_array ? json_array_size(body) : 1;
    struct task **ts;
    struct db_task_row *rows = NULL;
    json_t *out = NULL;
    int64_t first_id;
    double now = time_now();
    uint64_t seq;
    size_t parsed = 0;

    if (is_array && n == 0) {
        qt_error_arg(err, NULL, "an array submission needs at least one task");
        return NULL;
    }
    ts = xcalloc(n, sizeof(*ts));
    for (size_t i = 0; i < n; i++) {
        char prefix[32] = "";
        json_t *desc;

        if (is_array)
            snprintf(prefix, sizeof(prefix), "[%zu].", i);
        ts[i] = xcalloc(1, sizeof(**ts));
        parsed++;
        if (task_spec_parse(is_array ? json_array_get(body, i) : body, prefix,
                            &ts[i]->spec, err) < 0)
            goto out;
        desc = task_spec_to_json(&ts[i]->spec);
        ts[i]->description = json_dumps(desc, JSON_COMPACT);
        json_decref(desc);
    }

    pthread_mutex_lock(&s->lock);
    if (s->draining) {
        pthread_mutex_unlock(&s->lock);
        qt_error_set(err, 503, "unavailable", NULL, "qtaud is shutting down");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char prefix[32] = "";
        struct pilot *p;

        if (is_array)
            snprintf(prefix, sizeof(prefix), "[%zu].", i);
        if (resolve_pilot(s, &ts[i]->spec, prefix, &ts[i]->pilot_id, err) < 0) {
            pthread_mutex_unlock(&s->lock);
            goto out;
        }
        p = ts[i]->pilot_id ? pilot_by_id(s, ts[i]->pilot_id) : NULL;
        ts[i]->pilot_scheduled = xstrdup(p ? p->name : "ANY");
    }
    first_id = s->next_task_id + 1;
    s->next_task_id += (int64_t)n;
    tasks_reserve(s, s->next_task_id);
    pthread_mutex_unlock(&s->lock);

    rows = xcalloc(n, sizeof(*rows));
    for (size_t i = 0; i < n; i++) {
        struct task *t = ts[i];

        t->id = first_id + (int64_t)i;
        t->state = TASK_PENDING;
        t->submit_time = now;
        t->exit_code = -1;
        task_row(t, &rows[i], true);
    }
    seq = db_writer_tasks(s->w, rows, n);
    if (db_writer_wait(s->w, seq, err) < 0)
        goto out;

    /* committed: now the tasks exist */
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++) {
        struct task *t = ts[i];
        struct pilot *p = t->pilot_id ? pilot_by_id(s, t->pilot_id) : NULL;

        s->tasks[t->id] = t;
        counts_add(s, t, +1);
        if (p && pilot_state_terminal(p->state)) {
            char msg[384];

            snprintf(msg, sizeof(msg), "pilot %s ended: %s", p->name,
                     p->reason ? p->reason : pilot_state_name(p->state));
            task_end_pending(s, t, TASK_FAILED, msg);
            continue;
        }
        queue_push(s, t);
    }
    if (is_array) {
        json_t *ids = json_array();

        for (size_t i = 0; i < n; i++)
            json_array_append_new(ids, json_integer(ts[i]->id));
        out = json_pack("{s:o}", "ids", ids);
    } else {
        out = task_json(s, ts[0]);
    }
    /* one wake per pilot involved, not one per task */
    for (size_t i = 0; i < s->npilots; i++)
        pilot_wake(s->pilots[i]);
    pthread_mutex_unlock(&s->lock);
    free(rows);
    free(ts);
    return out;

out:
    for (size_t i = 0; i < parsed; i++)
        task_free(ts[i]);
    free(rows);
    free(ts);
    return NULL;
}

json_t *sched_task_get(struct sched *s, int64_t id, struct qt_error *err)
{
    struct task *t;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    t = task_find(s, id);
    if (t)
        out = task_json(s, t);
    else
        qt_error_set(err, 404, "not_found", NULL, "no task %lld", (long long)id);
    pthread_mutex_unlock(&s->lock);
    return out;
}

json_t *sched_task_list(struct sched *s, const struct sched_task_filter *f,
                        struct qt_error *err)
{
    json_t *arr = json_array();
    int limit = f->limit ? f->limit : LIST_DEFAULT_LIMIT;
    int64_t pilot_id = 0, last = 0;
    bool more = false;

    if (limit < 1 || limit > LIST_MAX_LIMIT) {
        json_decref(arr);
        qt_error_arg(err, "limit", "limit must be between 1 and %d",
                     LIST_MAX_LIMIT);
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    if (f->pilot) {
        struct pilot *p = pilot_find(s, f->pilot);

        if (!p) {
            pthread_mutex_unlock(&s->lock);
            json_decref(arr);
            qt_error_arg(err, "pilot", "no pilot '%.64s'", f->pilot);
            return NULL;
        }
        pilot_id = p->id;
    }
    for (int64_t id = f->after + 1; id <= s->next_task_id; id++) {
        struct task *t = task_find(s, id);

        if (!t)
            continue;
        if (f->state >= 0 && (int)t->state != f->state)
            continue;
        if (pilot_id && t->pilot_id != pilot_id && t->run_pilot_id != pilot_id)
            continue;
        if (f->name && (!t->spec.name || strcmp(t->spec.name, f->name) != 0))
            continue;
        if ((int)json_array_size(arr) == limit) {
            more = true;
            break;
        }
        json_array_append_new(arr, task_json(s, t));
        last = id;
    }
    pthread_mutex_unlock(&s->lock);
    return json_pack("{s:o, s:o}", "tasks", arr, "next",
                     more ? json_integer(last) : json_null());
}

json_t *sched_task_cancel(struct sched *s, int64_t id, struct qt_error *err)
{
    struct task *t;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    t = task_find(s, id);
    if (!t) {
        qt_error_set(err, 404, "not_found", NULL, "no task %lld", (long long)id);
    } else if (task_state_terminal(t->state)) {
        qt_error_set(err, 409, "conflict", NULL, "task %lld already ended (%s)",
                     (long long)id, task_state_name(t->state));
    } else if (t->state == TASK_PENDING) {
        t->cancel_requested = true;
        task_end_pending(s, t, TASK_CANCELED, "canceled");
        out = task_json(s, t);
    } else {
        t->cancel_requested = true;
        if (t->ctl)
            exec_ctl_cancel(t->ctl);
        out = task_json(s, t);
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

int sched_task_output_path(struct sched *s, int64_t id, int which, char *path,
                           size_t len, struct qt_error *err)
{
    struct task *t;
    int attempts = 0;

    pthread_mutex_lock(&s->lock);
    t = task_find(s, id);
    if (t)
        attempts = t->attempts;
    pthread_mutex_unlock(&s->lock);
    if (!t)
        return qt_error_set(err, 404, "not_found", NULL, "no task %lld",
                            (long long)id);
    if (attempts == 0)
        return qt_error_set(err, 404, "not_found", NULL,
                            "task %lld has not started yet", (long long)id);
    output_path(s, id, which, path, len);
    return 0;
}

/* ---- long poll ------------------------------------------------------- */

int sched_task_watch(struct sched *s, int64_t id, struct sched_waiter *w,
                     struct qt_error *err)
{
    struct task *t;
    int rc;

    pthread_mutex_lock(&s->lock);
    t = task_find(s, id);
    if (!t) {
        rc = qt_error_set(err, 404, "not_found", NULL, "no task %lld",
                          (long long)id);
    } else if (task_state_terminal(t->state) || s->stopping) {
        rc = 1;
    } else {
        w->task_id = id;
        w->prev = NULL;
        w->next = s->waiters;
        if (s->waiters)
            s->waiters->prev = w;
        s->waiters = w;
        w->registered = true;
        t->nwaiters++;
        pthread_cond_signal(&s->timer_cond);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void sched_task_unwatch(struct sched *s, struct sched_waiter *w)
{
    pthread_mutex_lock(&s->lock);
    if (w->registered) {
        struct task *t = task_find(s, w->task_id);

        if (w->prev)
            w->prev->next = w->next;
        else
            s->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->registered = false;
        if (t)
            t->nwaiters--;
    }
    pthread_mutex_unlock(&s->lock);
}

static void *timer_main(void *arg)
{
    struct sched *s = arg;

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        double now = time_mono(), next = now + 60;
        struct sched_waiter *w = s->waiters, *nw;
        struct timespec ts;

        for (; w; w = nw) {
            nw = w->next;
            if (w->deadline <= now) {
                struct task *t = task_find(s, w->task_id);

                if (w->prev)
                    w->prev->next = w->next;
                else
                    s->waiters = w->next;
                if (w->next)
                    w->next->prev = w->prev;
                w->registered = false;
                if (t)
                    t->nwaiters--;
                w->fire(w);
            } else if (w->deadline < next) {
                next = w->deadline;
            }
        }
        ts.tv_sec = (time_t)next;
        ts.tv_nsec = (long)((next - floor(next)) * 1e9);
        pthread_cond_timedwait(&s->timer_cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------ */

struct load_ctx {
    struct sched *s;
    int requeued;
    int bad;
};

static void load_pilot(void *arg, const struct db_pilot_row *r)
{
    struct load_ctx *lc = arg;
    struct pilot *p = pilot_new(r->id, r->name ? r->name : "?");

    p->resource = (enum pilot_resource)r->resource;
    p->engine = (enum pilot_engine)r->engine;
    p->state = (enum pilot_state)r->state;
    p->description = xstrdup(r->description ? r->description : "{}");
    p->reason = xstrdup(r->reason);
    p->cores = r->cores > 0 ? r->cores : 1;
    p->create_time = r->create_time;
    p->start_time = r->start_time;
    p->end_time = r->end_time;
    pilots_append(lc->s, p);
}

static void load_task(void *arg, const struct db_task_row *r)
{
    struct load_ctx *lc = arg;
    struct sched *s = lc->s;
    struct task *t = xcalloc(1, sizeof(*t));
    struct qt_error err;
    json_t *desc = json_loads(r->description ? r->description : "", 0, NULL);

    if (!desc || task_spec_parse(desc, "", &t->spec, &err) < 0) {
        /* the store holds only descriptions this code validated; one that
         * no longer parses is kept out of the queues, not run */
        log_err("task %lld: stored description unreadable, not loaded",
                (long long)r->id);
        json_decref(desc);
        free(t);
        lc->bad++;
        return;
    }
    json_decref(desc);
    t->id = r->id;
    t->description = xstrdup(r->description);
    t->pilot_id = r->pilot_id;
    t->pilot_scheduled = xstrdup(r->pilot_scheduled ? r->pilot_scheduled : "ANY");
    t->state = (enum task_state)r->state;
    t->attempts = r->attempts;
    t->requeues = r->requeues;
    t->run_pilot_id = r->run_pilot_id;
    t->submit_time = r->submit_time;
    t->start_time = r->start_time;
    t->end_time = r->end_time;
    t->exit_code = r->exit_code;
    t->term_signal = r->term_signal;
    t->error_msg = xstrdup(r->error_msg);
    tasks_reserve(s, t->id);
    s->tasks[t->id] = t;
    if (t->id > s->next_task_id)
        s->next_task_id = t->id;
    counts_add(s, t, +1);
    if (t->state == TASK_RUNNING) {
        /* qtaud stopped while this attempt ran: record it, requeue */
        const char *msg = "interrupted: qtaud restarted";
        double now = time_now();

        metrics_record(s, t, TASK_FAILED, msg, t->start_time, now, -1, 0,
                       t->run_pilot_id);
        free(t->error_msg);
        t->error_msg = xstrdup(msg);
        t->requeues++;
        task_transition(s, t, TASK_PENDING, t->run_pilot_id);
        task_persist(s, t);
        lc->requeued++;
    }
    if (t->state == TASK_PENDING)
        queue_push(s, t);
}

struct sched *sched_create(const struct sched_config *cfg, struct db_writer *w,
                           sqlite3 *db, struct qt_error *err)
{
    struct sched *s = xcalloc(1, sizeof(*s));
    struct load_ctx lc = { .s = s };
    pthread_condattr_t ca;

    s->cfg = *cfg;
    s->state_dir = xstrdup(cfg->state_dir);
    s->hostname = xstrdup(cfg->hostname);
    s->cfg.state_dir = s->state_dir;
    s->cfg.hostname = s->hostname;
    s->w = w;
    snprintf(s->output_dir, sizeof(s->output_dir), "%s/output", cfg->state_dir);
    if (mkdir(s->output_dir, 0700) < 0 && errno != EEXIST) {
        qt_error_set(err, 503, "unavailable", NULL, "cannot create %s: %s",
                     s->output_dir, strerror(errno));
        free(s->state_dir);
        free(s->hostname);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    TAILQ_INIT(&s->any_queue);

    pthread_mutex_lock(&s->lock);
    if (db_load_pilots(db, load_pilot, &lc, err) < 0
        || db_load_tasks(db, load_task, &lc, err) < 0) {
        pthread_mutex_unlock(&s->lock);
        sched_destroy(s);
        return NULL;
    }
    pthread_mutex_unlock(&s->lock);
    log_info("loaded %zu pilots and %lld tasks (%d interrupted tasks requeued)",
             s->npilots, (long long)s->next_task_id, lc.requeued);
    return s;
}

int sched_start(struct sched *s, struct qt_error *err)
{
    struct pilot *local;
    int rc;

    pthread_mutex_lock(&s->lock);
    local = pilot_find(s, "local");
    if (s->cfg.local_pilot) {
        int cores = s->cfg.local_cores > 0 ? s->cfg.local_cores : online_cpus();

        if (!local || pilot_state_terminal(local->state)) {
            if (local) {
                /* an ended "local" from an earlier run keeps its name; the
                 * new default pilot takes it over */
                free(local->name);
                local->name = xstrdup("local-old");
                pilot_persist(s, local);
            }
            local = pilot_new(s->next_pilot_id + 1, "local");
            local->description = xstrdup("{\"resource\":\"local\",\"engine\":\"qtau\"}");
            local->create_time = local->start_time = time_now();
            pilots_append(s, local);
        }
        local->cores = cores;
        local->state = PILOT_RUNNING;
        pilot_persist(s, local);
    } else if (local && !pilot_state_terminal(local->state)) {
        pilot_end(s, local, PILOT_DONE, "local pilot disabled by configuration");
    }
    for (size_t i = 0; i < s->npilots; i++) {
        struct pilot *p = s->pilots[i];

        if (p->resource == RESOURCE_LOCAL && p->state == PILOT_RUNNING
            && pilot_start_pool(s, p, err) < 0) {
            pthread_mutex_unlock(&s->lock);
            return -1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    rc = pthread_create(&s->timer, NULL, timer_main, s);
    if (rc != 0)
        return qt_error_set(err, 503, "unavailable", NULL,
                            "cannot start timer thread: %s", strerror(rc));
    s->timer_started = true;
    return 0;
}

void sched_drain(struct sched *s, double grace)
{
    struct timespec ts;
    double until = time_now() + (grace > 0 ? grace : 0);

    pthread_mutex_lock(&s->lock);
    s->draining = true;
    for (size_t i = 0; i < s->npilots; i++)
        pilot_wake(s->pilots[i]);
    if (s->running)
        log_info("draining: waiting up to %g s for %d running tasks", grace,
                 s->running);
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - floor(until)) * 1e9);
    while (s->running > 0) {
        if (pthread_cond_timedwait(&s->idle, &s->lock, &ts) == ETIMEDOUT)
            break;
    }
    if (s->running > 0) {
        log_warn("grace period over: stopping %d running tasks", s->running);
        for (int64_t id = 1; id <= s->next_task_id; id++) {
            struct task *t = task_find(s, id);

            if (t && t->state == TASK_RUNNING && t->ctl) {
                free(t->interrupt);
                t->interrupt = xstrdup("interrupted: qtaud shut down");
                exec_ctl_cancel(t->ctl);
            }
        }
        while (s->running > 0)
            pthread_cond_wait(&s->idle, &s->lock);
    }
    s->stopping = true;
    fire_waiters(s, 0);
    pthread_cond_signal(&s->timer_cond);
    pthread_mutex_unlock(&s->lock);

    for (size_t i = 0; i < s->npilots; i++)
        pilot_join_pool(s->pilots[i]);
    if (s->timer_started) {
        pthread_join(s->timer, NULL);
        s->timer_started = false;
    }
}

void sched_destroy(struct sched *s)
{
    if (!s)
        return;
    for (int64_t id = 0; id < s->tasks_cap; id++)
        task_free(s->tasks[id]);
    free(s->tasks);
    for (size_t i = 0; i < s->npilots; i++) {
        if (s->pilots[i]->workers)
            pilot_join_pool(s->pilots[i]);
        pilot_free(s->pilots[i]);
    }
    free(s->pilots);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    pthread_cond_destroy(&s->timer_cond);
    free(s->state_dir);
    free(s->hostname);
    free(s);
}

int sched_sync(struct sched *s, struct qt_error *err)
{
    return db_writer_sync(s->w, err);
}
