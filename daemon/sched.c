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
#include <signal.h>
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
#include "daemon/sched_internal.h"
#include "daemon/slurm_drv.h"

char *sched_xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;

    if (s && !d)
        abort();
    return d;
}

void *sched_xcalloc(size_t n, size_t size)
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
    r->run_pid = t->run_pid;
    r->run_pid_start = (int64_t)t->run_pid_start;
}

void sched_task_persist(struct sched *s, const struct task *t)
{
    struct db_task_row r;

    task_row(t, &r, false);
    r.hostname = t->run_pilot_id ? t->hostname : NULL;
    db_writer_task(s->w, &r);
}

/* Queues t's row together with the metrics row of its attempt that ended
 * (from sched_metrics_record), as one unit. */
static void task_persist_ended(struct sched *s, const struct task *t,
                               struct db_change *metrics)
{
    struct db_task_row r;

    task_row(t, &r, false);
    r.hostname = t->run_pilot_id ? t->hostname : NULL;
    db_writer_task_ended(s->w, &r, metrics);
}

static void pilot_row(const struct pilot *p, struct db_pilot_row *r)
{
    *r = (struct db_pilot_row){
        .id = p->id, .name = p->name, .resource = (int)p->resource,
        .engine = (int)p->engine, .state = (int)p->state,
        .description = p->description, .cores = p->cores, .reason = p->reason,
        .create_time = p->create_time, .start_time = p->start_time,
        .end_time = p->end_time, .slurm_job_id = p->slurm_job_id,
        .token = p->token, .workdir = p->workdir,
    };
}

uint64_t sched_pilot_persist(struct sched *s, const struct pilot *p)
{
    struct db_pilot_row r;

    pilot_row(p, &r);
    return db_writer_pilot(s->w, &r);
}

/* A new pilot's first row: dropped, not retried, if its batch fails. */
static uint64_t pilot_persist_new(struct sched *s, const struct pilot *p)
{
    struct db_pilot_row r;

    pilot_row(p, &r);
    r.is_new = true;
    return db_writer_pilot(s->w, &r);
}

/* The metrics row of the attempt that just ended, to be queued with the
 * task's new state (task_persist_ended). */
struct db_change *sched_metrics_record(struct sched *s, const struct task *t,
                                       enum task_state status, const char *error_msg,
                                       double start, double end, int exit_code,
                                       int sig, int64_t pilot_id)
{
    struct db_metrics_row m = {
        .task_id = t->id, .attempt = t->attempts, .task_name = t->spec.name,
        .status = (int)status, .error_msg = error_msg,
        .submit_time = t->submit_time, .start_time = start,
        .completion_time = end, .pilot_scheduled = t->pilot_scheduled,
        .exit_code = exit_code, .term_signal = sig, .pilot_id = pilot_id,
        .hostname = pilot_id ? t->hostname : NULL,
    };

    (void)s;
    return db_change_metrics(&m);
}

/* ---- lookups --------------------------------------------------------- */

struct task *sched_find_task(struct sched *s, int64_t id)
{
    if (id <= 0 || id >= s->tasks_cap)
        return NULL;
    return s->tasks[id];
}

struct pilot *sched_pilot_by_id(struct sched *s, int64_t id)
{
    for (size_t i = 0; i < s->npilots; i++)
        if (s->pilots[i]->id == id)
            return s->pilots[i];
    return NULL;
}

/* A name, or a decimal id. */
/* Gives the ended pilot p the name "NAME~ID", which no user can choose
 * ('~' is not allowed in names) and no other pilot holds (ids are
 * unique), so its name can be taken by a new pilot while p stays
 * reachable (lock held). */
static void pilot_retire_name(struct sched *s, struct pilot *p)
{
    char *name;

    if (asprintf(&name, "%s~%lld", p->name, (long long)p->id) < 0)
        abort();
    log_info("pilot %lld '%s' has ended: now named '%s', its name is free", (long long)p->id,
             p->name, name);
    free(p->name);
    p->name = name;
    sched_pilot_persist(s, p);
}

struct pilot *sched_find_pilot(struct sched *s, const char *ref)
{
    char *end;
    long long id;

    for (size_t i = 0; i < s->npilots; i++)
        if (strcmp(s->pilots[i]->name, ref) == 0)
            return s->pilots[i];
    errno = 0;
    id = strtoll(ref, &end, 10);
    if (errno == 0 && *ref && *end == '\0' && id > 0)
        return sched_pilot_by_id(s, id);
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

/* Returns the pilot t counts against, NULL for none. */
static struct pilot *counts_add(struct sched *s, const struct task *t, int delta)
{
    struct pilot *p = task_pilot(t) ? sched_pilot_by_id(s, task_pilot(t)) : NULL;

    s->counts[t->state] += delta;
    if (p)
        p->counts[t->state] += delta;
    return p;
}

void sched_task_transition(struct sched *s, struct task *t,
                            enum task_state state, int64_t run_pilot_id)
{
    struct pilot *p;

    counts_add(s, t, -1);
    t->state = state;
    t->run_pilot_id = run_pilot_id;
    p = counts_add(s, t, +1);
    /* the ended counters follow the state gauges' attribution, so that a
     * pilot's counter and its gauge tell the same story */
    if (task_state_terminal(state)) {
        if (p)
            p->ended[state]++;
        else
            s->any_ended[state]++;
    }
}

static void waiter_unlink(struct sched *s, struct sched_waiter *w)
{
    struct task *t = w->task_id ? sched_find_task(s, w->task_id) : NULL;

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

/* Fires the waiters of task_id (0: all of them). */
void sched_fire_waiters(struct sched *s, int64_t task_id)
{
    struct sched_waiter *w = s->waiters, *next;

    for (; w; w = next) {
        next = w->next;
        if (task_id && (w->pilot_id || w->task_id != task_id))
            continue;
        waiter_unlink(s, w);
        w->fire(w);
    }
}

void sched_fire_pilot_waiters(struct sched *s, int64_t pilot_id, bool lease)
{
    struct sched_waiter *w = s->waiters, *next;

    for (; w; w = next) {
        next = w->next;
        if (w->pilot_id == pilot_id && w->lease == lease) {
            waiter_unlink(s, w);
            w->fire(w);
        }
    }
}

void sched_add_waiter(struct sched *s, struct sched_waiter *w)
{
    struct task *t = w->task_id ? sched_find_task(s, w->task_id) : NULL;

    w->prev = NULL;
    w->next = s->waiters;
    if (s->waiters)
        s->waiters->prev = w;
    s->waiters = w;
    w->registered = true;
    if (t)
        t->nwaiters++;
    pthread_cond_signal(&s->timer_cond);
}

void sched_pilot_wake(struct sched *s, struct pilot *p)
{
    if (p->workers)
        pthread_cond_broadcast(&p->cond);
    if (p->resource == RESOURCE_SLURM)
        sched_fire_pilot_waiters(s, p->id, true);
}

void sched_queue_push(struct sched *s, struct task *t)
{
    struct pilot *p = t->pilot_id ? sched_pilot_by_id(s, t->pilot_id) : NULL;

    t->queue = p ? &p->queue : &s->any_queue;
    TAILQ_INSERT_TAIL(t->queue, t, qlink);
}

void sched_queue_remove(struct task *t)
{
    if (t->queue) {
        TAILQ_REMOVE(t->queue, t, qlink);
        t->queue = NULL;
    }
}

void sched_wake_for(struct sched *s, const struct task *t)
{
    if (t->pilot_id) {
        struct pilot *p = sched_pilot_by_id(s, t->pilot_id);

        if (p)
            sched_pilot_wake(s, p);
        return;
    }
    for (size_t i = 0; i < s->npilots; i++)
        sched_pilot_wake(s, s->pilots[i]);
}

/* Ends a task that is not running (pending, or just finished an attempt)
 * in a terminal state, with its metrics row for an attempt that never
 * started when it was pending. */
void sched_task_end_pending(struct sched *s, struct task *t,
                             enum task_state state, const char *msg)
{
    double now = time_now();
    struct db_change *m;

    sched_queue_remove(t);
    t->attempts++;
    free(t->error_msg);
    t->error_msg = sched_xstrdup(msg);
    t->start_time = 0;
    t->end_time = now;
    t->exit_code = -1;
    t->term_signal = 0;
    m = sched_metrics_record(s, t, state, msg, 0, now, -1, 0, 0);
    sched_task_transition(s, t, state, 0);
    task_persist_ended(s, t, m);
    if (t->nwaiters)
        sched_fire_waiters(s, t->id);
}

/* Records the outcome of the attempt t just ran on p. */
void sched_task_finish(struct sched *s, struct task *t, struct pilot *p,
                        const struct exec_result *res)
{
    enum task_state status;
    const char *msg = res->error_msg[0] ? res->error_msg : NULL;
    struct db_change *m;

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
    p->running--;
    if (p->resource == RESOURCE_SLURM)
        p->leased_cores -= t->spec.cores;
    t->agent_id = 0;
    free(t->deferred);
    t->deferred = NULL;
    t->start_time = res->start_time;
    t->end_time = res->end_time;
    if (res->start_time > 0)
        hist_observe(&s->run_hist, res->end_time - res->start_time);
    t->exit_code = res->exit_code;
    t->term_signal = res->term_signal;
    free(t->error_msg);
    t->error_msg = sched_xstrdup(msg);
    m = sched_metrics_record(s, t, status, msg, res->start_time, res->end_time,
                             res->exit_code, res->term_signal, p->id);

    if (t->interrupt && (s->draining
                         || (t->pilot_id == 0 && t->requeues < s->cfg.max_requeues))) {
        /* not the task's fault (its pilot was lost, or qtaud is stopping):
         * back to the queue, retries untouched; losing pilot after pilot
         * ends it, though, with the last pilot's reason */
        t->requeues++;
        free(t->interrupt);
        t->interrupt = NULL;
        sched_task_transition(s, t, TASK_PENDING, p->id);
        sched_queue_push(s, t);
        if (!s->draining)
            sched_wake_for(s, t);
    } else if (status == TASK_FAILED && !t->interrupt && !t->cancel_requested
               && t->attempts - t->requeues <= t->spec.max_retries) {
        sched_task_transition(s, t, TASK_PENDING, p->id);
        sched_queue_push(s, t);
        sched_wake_for(s, t);
    } else {
        free(t->interrupt);
        t->interrupt = NULL;
        sched_task_transition(s, t, status, p->id);
        if (t->nwaiters)
            sched_fire_waiters(s, t->id);
    }
    task_persist_ended(s, t, m);
}

/* ---- local pools ----------------------------------------------------- */

/* Whether t could ever run on p: it fits one of p's nodes and, when a
 * deadline is given, its timeout ends before it. */
static bool task_fits(const struct task *t, const struct pilot *p,
                      double deadline)
{
    int node_cores = p->resource == RESOURCE_LOCAL ? p->cores : p->node_cores;

    if (node_cores > 0 && t->spec.cores > node_cores)
        return false;
    /* a task without a timeout may run past the deadline: its pilot's end
     * requeues it, so it is not kept from a pilot that may finish it */
    return deadline <= 0 || t->spec.timeout <= 0 || t->spec.timeout <= deadline;
}

/* The first of queue that fits p, looking past at most PICK_SCAN_LIMIT
 * that never can (a large task is not overtaken by ones that fit only
 * because they are small: free_slots is checked after). */
static struct task *queue_first_fit(struct task_queue *q, const struct pilot *p,
                                    double deadline)
{
    struct task *t = TAILQ_FIRST(q);
    int scanned = 0;

    while (t && !task_fits(t, p, deadline)) {
        if (++scanned > PICK_SCAN_LIMIT)
            return NULL;
        t = TAILQ_NEXT(t, qlink);
    }
    return t;
}

struct task *sched_pick(struct sched *s, struct pilot *p, int free_slots,
                        double deadline)
{
    struct task *named = queue_first_fit(&p->queue, p, deadline);
    struct task *any = queue_first_fit(&s->any_queue, p, deadline);
    struct task *t;

    if (named && any)
        t = named->id < any->id ? named : any;
    else
        t = named ? named : any;
    if (t && t->spec.cores <= free_slots)
        return t;
    return NULL;
}

void sched_task_start(struct sched *s, struct task *t, struct pilot *p,
                      const char *hostname)
{
    sched_queue_remove(t);
    t->attempts++;
    t->start_time = time_now();
    t->end_time = 0;
    /* from submission: a retried attempt's wait includes the earlier ones */
    hist_observe(&s->wait_hist, t->start_time - t->submit_time);
    t->exit_code = -1;
    t->term_signal = 0;
    free(t->error_msg);
    t->error_msg = NULL;
    free(t->hostname);
    t->hostname = sched_xstrdup(hostname);
    p->running++;
    sched_task_transition(s, t, TASK_RUNNING, p->id);
}

void sched_output_path(const struct sched *s, const struct task *t, int which,
                       char *path, size_t len)
{
    struct pilot *p = t->run_pilot_id ? sched_pilot_by_id((struct sched *)s, t->run_pilot_id)
                                      : NULL;

    if (p && p->resource == RESOURCE_SLURM && p->workdir) {
        /* written by the agent on the node, into the job's folder */
        snprintf(path, len, "%s/output/%lld.%d.%s", p->workdir, (long long)t->id,
                 t->attempts, which == 1 ? "out" : "err");
    } else if (t->worker) {
        /* running: its worker's live files */
        snprintf(path, len, "%s", which == 1 ? t->worker->live_out : t->worker->live_err);
    } else {
        snprintf(path, len, "%s/%lld.%s", s->output_dir, (long long)t->id,
                 which == 1 ? "out" : "err");
    }
}

/* Gives a finished attempt's output its task's name - or, when it wrote
 * nothing, no file at all.  A worker writes every task into the same two
 * live files, so a task that prints nothing costs no new inode: creating
 * two files per task was most of a no-op task's cost on ext4 (inode
 * allocation, and workers contending for the folder's lock). */
static void keep_output(const char *live, const char *final, bool first_attempt)
{
    struct stat st;

    if (stat(live, &st) == 0 && st.st_size > 0) {
        if (rename(live, final) < 0)
            log_warn("cannot keep task output %s: %s", final, strerror(errno));
    } else if (!first_attempt && unlink(final) < 0 && errno != ENOENT) {
        /* an earlier attempt's output must not pass for this one's */
        log_warn("cannot remove stale task output %s: %s", final, strerror(errno));
    }
}

/* exec_run's on_spawn: the attempt's process is on disk (pid and start
 * time) before it can outlive a crash of qtaud. */
static void worker_spawned(void *arg, pid_t pid)
{
    struct worker *wk = arg;
    struct sched *s = wk->s;

    pthread_mutex_lock(&s->lock);
    if (wk->task) {
        wk->task->run_pid = pid;
        wk->task->run_pid_start = exec_proc_start(pid);
        sched_task_persist(s, wk->task);
    }
    pthread_mutex_unlock(&s->lock);
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
        bool first_attempt;

        while (p->state == PILOT_RUNNING && !s->draining
               && !(t = sched_pick(s, p, p->free_slots, 0)))
            pthread_cond_wait(&p->cond, &s->lock);
        if (!t)
            break;
        p->free_slots -= t->spec.cores;
        s->running++;
        exec_ctl_reset(wk->ctl);
        t->ctl = wk->ctl;
        sched_task_start(s, t, p, s->hostname);

        sched_output_path(s, t, 1, out, sizeof(out));
        sched_output_path(s, t, 2, err, sizeof(err));
        t->worker = wk;
        first_attempt = t->attempts == 1;
        spec = (struct exec_spec){
            .argv = t->spec.argv, .shell = t->spec.shell, .env_add = t->spec.env,
            .cwd = t->spec.cwd, .stdout_path = wk->live_out,
            .stderr_path = wk->live_err,
            .timeout = t->spec.timeout, .kill_grace = s->cfg.kill_grace,
            .on_spawn = worker_spawned, .on_spawn_arg = wk,
        };
        wk->task = t;
        pthread_mutex_unlock(&s->lock);

        exec_run(&spec, wk->ctl, &res);
        /* before the end is visible: whoever sees it finds the output */
        keep_output(wk->live_out, out, first_attempt);
        keep_output(wk->live_err, err, first_attempt);

        pthread_mutex_lock(&s->lock);
        wk->task = NULL;
        t->run_pid = 0;
        t->run_pid_start = 0;
        t->worker = NULL;
        t->ctl = NULL;
        p->free_slots += t->spec.cores;
        s->running--;
        sched_task_finish(s, t, p, &res);
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
    p->workers = sched_xcalloc((size_t)p->cores, sizeof(*p->workers));
    p->nworkers = p->cores;
    for (int i = 0; i < p->nworkers; i++) {
        struct worker *wk = &p->workers[i];
        int rc;

        wk->s = s;
        wk->p = p;
        snprintf(wk->live_out, sizeof(wk->live_out), "%s/.live-%lld-%d.out",
                 s->output_dir, (long long)p->id, i);
        snprintf(wk->live_err, sizeof(wk->live_err), "%s/.live-%lld-%d.err",
                 s->output_dir, (long long)p->id, i);
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

json_t *sched_time_json(double t)
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

/* Cores not running a task: a local pool's own count; for a SLURM pilot
 * its agents' slots less what is leased (a pilot's tasks count its
 * RUNNING ones). */
static int free_cores(const struct pilot *p)
{
    int slots = 0;

    if (p->workers)
        return p->free_slots;
    if (p->resource != RESOURCE_SLURM || pilot_state_terminal(p->state))
        return 0;
    for (const struct agent *a = p->agents; a; a = a->next)
        slots += a->slots;
    return slots > p->leased_cores ? slots - p->leased_cores : 0;
}

json_t *sched_pilot_json(const struct pilot *p)
{
    json_t *o = json_loads(p->description, 0, NULL);

    if (!o)
        o = json_object();
    json_object_set_new(o, "id", json_integer(p->id));
    json_object_set_new(o, "name", json_string(p->name));
    json_object_set_new(o, "state", json_string(pilot_state_name(p->state)));
    json_object_set_new(o, "cores", json_integer(p->cores));
    json_object_set_new(o, "reason", p->reason ? json_string(p->reason) : json_null());
    json_object_set_new(o, "slurm_job_id",
                        p->slurm_job_id ? json_integer(p->slurm_job_id) : json_null());
    json_object_set_new(o, "slurm_state",
                        p->slurm_state ? json_string(p->slurm_state) : json_null());
    if (p->resource == RESOURCE_SLURM) {
        json_t *agents = json_array();
        double now = time_mono();

        for (const struct agent *a = p->agents; a; a = a->next)
            json_array_append_new(agents,
                                  json_pack("{s:I, s:s, s:I, s:i, s:f}", "id",
                                            (json_int_t)a->id, "hostname", a->hostname,
                                            "pid", (json_int_t)a->pid, "slots", a->slots,
                                            "seen_secs_ago", now - a->last_seen));
        json_object_set_new(o, "slurm_reason", p->slurm_reason
                                                   ? json_string(p->slurm_reason)
                                                   : json_null());
        json_object_set_new(o, "agents", agents);
        json_object_set_new(o, "walltime_end", sched_time_json(p->walltime_end));
    }
    json_object_set_new(o, "create_time", sched_time_json(p->create_time));
    json_object_set_new(o, "start_time", sched_time_json(p->start_time));
    json_object_set_new(o, "end_time", sched_time_json(p->end_time));
    json_object_set_new(o, "free_cores", json_integer(free_cores(p)));
    json_object_set_new(o, "tasks", counts_json(p->counts));
    return o;
}

json_t *sched_task_json(struct sched *s, const struct task *t)
{
    json_t *o = json_loads(t->description, 0, NULL);
    struct pilot *rp = t->run_pilot_id ? sched_pilot_by_id(s, t->run_pilot_id) : NULL;
    char url[64];

    if (!o)
        o = json_object();
    json_object_set_new(o, "id", json_integer(t->id));
    json_object_set_new(o, "name", t->spec.name ? json_string(t->spec.name) : json_null());
    json_object_set_new(o, "state", json_string(task_state_name(t->state)));
    json_object_set_new(o, "attempts", json_integer(t->attempts));
    json_object_set_new(o, "run_pilot", rp ? json_string(rp->name) : json_null());
    json_object_set_new(o, "submit_time", sched_time_json(t->submit_time));
    json_object_set_new(o, "start_time", sched_time_json(t->start_time));
    json_object_set_new(o, "end_time", sched_time_json(t->end_time));
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

struct pilot *sched_pilot_new(int64_t id, const char *name)
{
    struct pilot *p = sched_xcalloc(1, sizeof(*p));

    p->id = id;
    p->name = sched_xstrdup(name);
    TAILQ_INIT(&p->queue);
    pthread_cond_init(&p->cond, NULL);
    return p;
}

static void pilot_free(struct pilot *p)
{
    if (!p)
        return;
    slurm_pilot_free(p);
    pthread_cond_destroy(&p->cond);
    free(p->name);
    free(p->description);
    free(p->reason);
    free(p);
}

static void sched_pilots_remove(struct sched *s, struct pilot *p)
{
    for (size_t i = 0; i < s->npilots; i++) {
        if (s->pilots[i] == p) {
            memmove(&s->pilots[i], &s->pilots[i + 1],
                    (s->npilots - i - 1) * sizeof(*s->pilots));
            s->npilots--;
            break;
        }
    }
    if (p->id == s->next_pilot_id)
        s->next_pilot_id--;
}

void sched_pilots_append(struct sched *s, struct pilot *p)
{
    s->pilots = realloc(s->pilots, (s->npilots + 1) * sizeof(*s->pilots));
    if (!s->pilots)
        abort();
    s->pilots[s->npilots++] = p;
    if (p->id > s->next_pilot_id)
        s->next_pilot_id = p->id;
}

int sched_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? (int)n : 1;
}

void sched_task_lost(struct sched *s, struct task *t, struct pilot *p, const char *why)
{
    struct exec_result res = {
        .outcome = EXEC_CANCELED, .exit_code = -1,
        .start_time = t->start_time, .end_time = time_now(),
    };

    if (t->deferred)
        res = *t->deferred;   /* it did end, as its agent said */
    free(t->interrupt);
    t->interrupt = sched_xstrdup(why);
    sched_task_finish(s, t, p, &res);
}

/* Ends pilot p: pending tasks that named it fail; tasks running on it are
 * stopped (requeued if ANY, failed if they named it).  s->lock held. */
void sched_pilot_end(struct sched *s, struct pilot *p, enum pilot_state state,
                      const char *reason)
{
    char msg[384];
    struct task *t;

    p->state = state;
    free(p->reason);
    p->reason = sched_xstrdup(reason);
    p->end_time = time_now();
    snprintf(msg, sizeof(msg), "pilot %s ended: %s", p->name, reason);
    while ((t = TAILQ_FIRST(&p->queue)))
        sched_task_end_pending(s, t, TASK_FAILED, msg);
    for (int64_t id = 1; id <= s->next_task_id && p->running; id++) {
        t = sched_find_task(s, id);
        if (!t || t->state != TASK_RUNNING || t->run_pilot_id != p->id)
            continue;
        if (t->ctl) {
            /* a local worker's: it records the attempt when the child is gone */
            free(t->interrupt);
            t->interrupt = sched_xstrdup(msg);
            exec_ctl_cancel(t->ctl);
        } else {
            /* leased to an agent of the lost pilot: its result can no
             * longer count, so the attempt ends here */
            sched_task_lost(s, t, p, msg);
        }
    }
    if (p->resource == RESOURCE_SLURM) {
        if (state == PILOT_CANCELED && p->slurm_job_id) {
            slurm_pilot_kill(s, p);
            free(p->slurm_state);
            p->slurm_state = sched_xstrdup("CANCELLED");   /* asked of SLURM */
        }
        slurm_pilot_forget_agents(p);
    }
    sched_pilot_persist(s, p);
    sched_pilot_wake(s, p);
}

int sched_pilot_create(struct sched *s, json_t *body, struct sched_waiter *w,
                       json_t **out, struct qt_error *err)
{
    struct pilot_spec spec;
    struct pilot *p = NULL;
    json_t *desc;
    char name[80];
    uint64_t seq;
    int rc = -1;

    *out = NULL;
    if (pilot_spec_parse(body, &spec, err) < 0)
        return -1;
    if (spec.resource == RESOURCE_SLURM && !slurm_drv_available()) {
        slurm_drv_submit(NULL, NULL, err);   /* says why */
        goto done;
    }
    if (spec.resource == RESOURCE_LOCAL && spec.cores == 0)
        spec.cores = sched_online_cpus();
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
    if (spec.name && (p = sched_find_pilot(s, spec.name))) {
        if (!pilot_state_terminal(p->state)) {
            pthread_mutex_unlock(&s->lock);
            json_decref(desc);
            qt_error_set(err, 409, "conflict", "name", "a pilot named '%s' exists "
                         "(%s)", spec.name, pilot_state_name(p->state));
            goto done;
        }
        /* an ended pilot's name is free again: tomorrow's "big" */
        pilot_retire_name(s, p);
    }
    /* the default name, made unique: a user may have called a pilot
     * "pilot-3" before pilot 3 came */
    snprintf(name, sizeof(name), "pilot-%lld", (long long)s->next_pilot_id + 1);
    for (int k = 2; !spec.name && sched_find_pilot(s, name); k++)
        snprintf(name, sizeof(name), "pilot-%lld-%d", (long long)s->next_pilot_id + 1, k);
    p = sched_pilot_new(s->next_pilot_id + 1, spec.name ? spec.name : name);
    p->resource = spec.resource;
    p->engine = spec.engine;
    p->cores = spec.cores;
    p->description = json_dumps(desc, JSON_COMPACT);
    json_decref(desc);
    p->create_time = time_now();
    if (p->resource == RESOURCE_SLURM) {
        p->state = PILOT_PENDING;
        slurm_pilot_prepare(s, p, &spec);
    } else {
        p->state = PILOT_RUNNING;
        p->start_time = p->create_time;
    }
    sched_pilots_append(s, p);
    seq = pilot_persist_new(s, p);
    pthread_mutex_unlock(&s->lock);

    if (db_writer_wait(s->w, seq, err) < 0) {
        /* not acknowledged: it never was (its name and id are free again,
         * and a later retry of its row finds nothing to update) */
        pthread_mutex_lock(&s->lock);
        sched_pilots_remove(s, p);
        pthread_mutex_unlock(&s->lock);
        pilot_free(p);
        goto done;
    }
    pthread_mutex_lock(&s->lock);
    if (p->resource == RESOURCE_SLURM) {
        /* answered when SLURM has (or after a generous bound, as it is) */
        w->task_id = 0;
        w->pilot_id = p->id;
        w->lease = false;
        w->deadline = time_mono() + SLURM_SUBMIT_WAIT;
        sched_add_waiter(s, w);
        slurm_pilot_submit(s, p);
        rc = 1;
    } else if (pilot_start_pool(s, p, err) < 0) {
        sched_pilot_end(s, p, PILOT_FAILED, err->message);
    } else {
        *out = sched_pilot_json(p);
        rc = 0;
        log_info("pilot %lld '%s' started: local, %d cores", (long long)p->id,
                 p->name, p->cores);
    }
    pthread_mutex_unlock(&s->lock);
done:
    pilot_spec_release(&spec);
    return rc;
}

json_t *sched_pilot_submitted(struct sched *s, int64_t pilot_id,
                              struct qt_error *err)
{
    struct pilot *p;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    p = sched_pilot_by_id(s, pilot_id);
    if (!p)
        qt_error_set(err, 404, "not_found", NULL, "no pilot %lld", (long long)pilot_id);
    else if (p->submit_status)
        qt_error_set(err, p->submit_status,
                     p->submit_status == 503 ? "slurm_unavailable" : "slurm_rejected",
                     NULL, "%s", p->reason ? p->reason : "SLURM refused the job");
    else
        out = sched_pilot_json(p);
    pthread_mutex_unlock(&s->lock);
    return out;
}

json_t *sched_pilot_get(struct sched *s, const char *ref, struct qt_error *err)
{
    struct pilot *p;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    p = sched_find_pilot(s, ref);
    if (p)
        out = sched_pilot_json(p);
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
        json_array_append_new(arr, sched_pilot_json(s->pilots[i]));
    pthread_mutex_unlock(&s->lock);
    return json_pack("{s:o, s:n}", "pilots", arr, "next");
}

json_t *sched_pilot_cancel(struct sched *s, const char *ref, struct qt_error *err)
{
    struct pilot *p;
    json_t *out = NULL;

    pthread_mutex_lock(&s->lock);
    p = sched_find_pilot(s, ref);
    if (!p) {
        qt_error_set(err, 404, "not_found", NULL, "no pilot '%.64s'", ref);
    } else if (pilot_state_terminal(p->state)) {
        qt_error_set(err, 409, "conflict", NULL, "pilot '%s' already ended (%s)",
                     p->name, pilot_state_name(p->state));
    } else {
        sched_pilot_end(s, p, PILOT_CANCELED, "canceled by user");
        out = sched_pilot_json(p);
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

int sched_pilot_id(struct sched *s, const char *ref, int64_t *id,
                   struct qt_error *err)
{
    struct pilot *p;

    pthread_mutex_lock(&s->lock);
    p = sched_find_pilot(s, ref);
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
    free(t->hostname);
    free(t->deferred);
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
    p = sched_find_pilot(s, spec->pilot);
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
    ts = sched_xcalloc(n, sizeof(*ts));
    for (size_t i = 0; i < n; i++) {
        char prefix[32] = "";
        json_t *desc;

        if (is_array)
            snprintf(prefix, sizeof(prefix), "[%zu].", i);
        ts[i] = sched_xcalloc(1, sizeof(**ts));
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
        p = ts[i]->pilot_id ? sched_pilot_by_id(s, ts[i]->pilot_id) : NULL;
        ts[i]->pilot_scheduled = sched_xstrdup(p ? p->name : "ANY");
    }
    first_id = s->next_task_id + 1;
    s->next_task_id += (int64_t)n;
    tasks_reserve(s, s->next_task_id);
    pthread_mutex_unlock(&s->lock);

    rows = sched_xcalloc(n, sizeof(*rows));
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
        struct pilot *p = t->pilot_id ? sched_pilot_by_id(s, t->pilot_id) : NULL;

        s->tasks[t->id] = t;
        counts_add(s, t, +1);
        if (p)
            p->submitted++;
        else
            s->any_submitted++;
        if (p && pilot_state_terminal(p->state)) {
            char msg[384];

            snprintf(msg, sizeof(msg), "pilot %s ended: %s", p->name,
                     p->reason ? p->reason : pilot_state_name(p->state));
            sched_task_end_pending(s, t, TASK_FAILED, msg);
            continue;
        }
        sched_queue_push(s, t);
    }
    if (is_array) {
        json_t *ids = json_array();

        for (size_t i = 0; i < n; i++)
            json_array_append_new(ids, json_integer(ts[i]->id));
        out = json_pack("{s:o}", "ids", ids);
    } else {
        out = sched_task_json(s, ts[0]);
    }
    /* one wake per pilot involved, not one per task */
    for (size_t i = 0; i < s->npilots; i++)
        sched_pilot_wake(s, s->pilots[i]);
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
    t = sched_find_task(s, id);
    if (t)
        out = sched_task_json(s, t);
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
        struct pilot *p = sched_find_pilot(s, f->pilot);

        if (!p) {
            pthread_mutex_unlock(&s->lock);
            json_decref(arr);
            qt_error_arg(err, "pilot", "no pilot '%.64s'", f->pilot);
            return NULL;
        }
        pilot_id = p->id;
    }
    for (int64_t id = f->after + 1; id <= s->next_task_id; id++) {
        struct task *t = sched_find_task(s, id);

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
        json_array_append_new(arr, sched_task_json(s, t));
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
    t = sched_find_task(s, id);
    if (!t) {
        qt_error_set(err, 404, "not_found", NULL, "no task %lld", (long long)id);
    } else if (task_state_terminal(t->state)) {
        qt_error_set(err, 409, "conflict", NULL, "task %lld already ended (%s)",
                     (long long)id, task_state_name(t->state));
    } else if (t->state == TASK_PENDING) {
        t->cancel_requested = true;
        sched_task_end_pending(s, t, TASK_CANCELED, "canceled");
        out = sched_task_json(s, t);
    } else {
        t->cancel_requested = true;
        if (t->ctl)
            exec_ctl_cancel(t->ctl);
        out = sched_task_json(s, t);
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

int sched_task_output_path(struct sched *s, int64_t id, int which, char *path,
                           size_t len, struct qt_error *err)
{
    struct task *t;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    t = sched_find_task(s, id);
    if (!t)
        rc = qt_error_set(err, 404, "not_found", NULL, "no task %lld",
                          (long long)id);
    else if (t->attempts == 0)
        rc = qt_error_set(err, 404, "not_found", NULL,
                          "task %lld has not started yet", (long long)id);
    else
        sched_output_path(s, t, which, path, len);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- long poll ------------------------------------------------------- */

int sched_task_watch(struct sched *s, int64_t id, struct sched_waiter *w,
                     struct qt_error *err)
{
    struct task *t;
    int rc;

    pthread_mutex_lock(&s->lock);
    t = sched_find_task(s, id);
    if (!t) {
        rc = qt_error_set(err, 404, "not_found", NULL, "no task %lld",
                          (long long)id);
    } else if (task_state_terminal(t->state) || s->stopping) {
        rc = 1;
    } else {
        w->task_id = id;
        w->pilot_id = 0;
        w->lease = false;
        sched_add_waiter(s, w);
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void sched_task_unwatch(struct sched *s, struct sched_waiter *w)
{
    pthread_mutex_lock(&s->lock);
    if (w->registered)
        waiter_unlink(s, w);
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
                waiter_unlink(s, w);
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
    int kept;                   /* running on SLURM pilots, left running */
    int bad;
};

static void load_pilot(void *arg, const struct db_pilot_row *r)
{
    struct load_ctx *lc = arg;
    struct pilot *p = sched_pilot_new(r->id, r->name ? r->name : "?");

    p->resource = (enum pilot_resource)r->resource;
    p->engine = (enum pilot_engine)r->engine;
    p->state = (enum pilot_state)r->state;
    p->description = sched_xstrdup(r->description ? r->description : "{}");
    p->reason = sched_xstrdup(r->reason);
    p->cores = r->cores > 0 ? r->cores : 1;
    p->create_time = r->create_time;
    p->start_time = r->start_time;
    p->end_time = r->end_time;
    if (p->resource == RESOURCE_SLURM) {
        /* followed again by the SLURM thread's polls; its agents register
         * again with the same token */
        p->slurm_job_id = (uint32_t)r->slurm_job_id;
        p->token = sched_xstrdup(r->token);
        p->workdir = sched_xstrdup(r->workdir);
        p->slurm_state = sched_xstrdup(r->slurm_job_id ? "UNKNOWN" : NULL);
    }
    sched_pilots_append(lc->s, p);
}

static void load_task(void *arg, const struct db_task_row *r)
{
    struct load_ctx *lc = arg;
    struct sched *s = lc->s;
    struct task *t = sched_xcalloc(1, sizeof(*t));
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
    t->description = sched_xstrdup(r->description);
    t->pilot_id = r->pilot_id;
    t->pilot_scheduled = sched_xstrdup(r->pilot_scheduled ? r->pilot_scheduled : "ANY");
    t->state = (enum task_state)r->state;
    t->attempts = r->attempts;
    t->requeues = r->requeues;
    t->run_pilot_id = r->run_pilot_id;
    t->submit_time = r->submit_time;
    t->start_time = r->start_time;
    t->end_time = r->end_time;
    t->exit_code = r->exit_code;
    t->term_signal = r->term_signal;
    t->error_msg = sched_xstrdup(r->error_msg);
    t->hostname = sched_xstrdup(r->hostname);
    tasks_reserve(s, t->id);
    s->tasks[t->id] = t;
    if (t->id > s->next_task_id)
        s->next_task_id = t->id;
    counts_add(s, t, +1);
    if (t->state == TASK_RUNNING) {
        struct pilot *p = sched_pilot_by_id(s, t->run_pilot_id);

        if (p && p->resource == RESOURCE_SLURM && !pilot_state_terminal(p->state)) {
            /* leased to an agent that may well still run it: its agent
             * registers again and claims it by heartbeat, or it is taken
             * as lost after agent-timeout */
            p->running++;
            p->leased_cores += t->spec.cores;
            t->lease_seen = time_mono();
            lc->kept++;
        }
    }
    if (t->state == TASK_RUNNING && t->lease_seen == 0 && r->run_pid > 0
        && r->run_pid_start > 0
        && exec_proc_start((pid_t)r->run_pid) == (unsigned long long)r->run_pid_start) {
        /* qtaud died, its task did not (it has a session of its own): stop
         * it before the attempt runs again.  pid and start time together
         * name the process qtaud started, never a stranger that reused the
         * pid; it leads its group, so the group goes with it. */
        if (kill(-(pid_t)r->run_pid, SIGKILL) == 0)
            log_warn("task %lld: stopped its interrupted attempt's process group %lld",
                     (long long)t->id, (long long)r->run_pid);
    }
    if (t->state == TASK_RUNNING && t->lease_seen == 0) {
        /* qtaud stopped while this attempt ran: record it, requeue */
        const char *msg = "interrupted: qtaud restarted";
        double now = time_now();

        struct db_change *m = sched_metrics_record(s, t, TASK_FAILED, msg,
                                                   t->start_time, now, -1, 0,
                                                   t->run_pilot_id);

        free(t->error_msg);
        t->error_msg = sched_xstrdup(msg);
        t->requeues++;
        sched_task_transition(s, t, TASK_PENDING, t->run_pilot_id);
        task_persist_ended(s, t, m);
        lc->requeued++;
    }
    if (t->state == TASK_PENDING)
        sched_queue_push(s, t);
}

struct sched *sched_create(const struct sched_config *cfg, struct db_writer *w,
                           sqlite3 *db, struct qt_error *err)
{
    struct sched *s = sched_xcalloc(1, sizeof(*s));
    struct load_ctx lc = { .s = s };
    pthread_condattr_t ca;

    s->cfg = *cfg;
    s->state_dir = sched_xstrdup(cfg->state_dir);
    s->hostname = sched_xstrdup(cfg->hostname);
    s->cfg.state_dir = s->state_dir;
    s->cfg.hostname = s->hostname;
    s->agent_path = sched_xstrdup(cfg->agent_path ? cfg->agent_path : "qtau-agent");
    s->agent_url = sched_xstrdup("");
    s->cfg.agent_path = s->agent_path;
    if (s->cfg.slurm_poll <= 0)
        s->cfg.slurm_poll = 2;
    if (s->cfg.heartbeat <= 0)
        s->cfg.heartbeat = 5;
    if (s->cfg.agent_timeout <= 0)
        s->cfg.agent_timeout = 60;
    s->w = w;
    hist_init(&s->wait_hist, hist_task_bounds, hist_task_nbounds);
    hist_init(&s->run_hist, hist_task_bounds, hist_task_nbounds);
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
    log_info("loaded %zu pilots and %lld tasks (%d interrupted tasks requeued, "
             "%d left to their SLURM pilots' agents)",
             s->npilots, (long long)s->next_task_id, lc.requeued, lc.kept);
    return s;
}

int sched_start(struct sched *s, struct qt_error *err)
{
    struct pilot *local;
    int rc;

    pthread_mutex_lock(&s->lock);
    local = sched_find_pilot(s, "local");
    if (s->cfg.local_pilot) {
        int cores = s->cfg.local_cores > 0 ? s->cfg.local_cores : sched_online_cpus();

        if (!local || pilot_state_terminal(local->state)) {
            if (local)
                pilot_retire_name(s, local);   /* the new default takes "local" */
            local = sched_pilot_new(s->next_pilot_id + 1, "local");
            local->description = sched_xstrdup("{\"resource\":\"local\",\"engine\":\"qtau\"}");
            local->create_time = local->start_time = time_now();
            sched_pilots_append(s, local);
        }
        local->cores = cores;
        local->state = PILOT_RUNNING;
        sched_pilot_persist(s, local);
    } else if (local && !pilot_state_terminal(local->state)) {
        sched_pilot_end(s, local, PILOT_DONE, "local pilot disabled by configuration");
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
    if (slurm_pilots_start(s, err) < 0)
        return -1;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->npilots; i++) {
        struct pilot *p = s->pilots[i];

        /* accepted, but qtaud stopped before SLURM had answered */
        if (p->resource == RESOURCE_SLURM && p->state == PILOT_PENDING
            && !p->slurm_job_id)
            slurm_pilot_submit(s, p);
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
        sched_pilot_wake(s, s->pilots[i]);
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
            struct task *t = sched_find_task(s, id);

            if (t && t->state == TASK_RUNNING && t->ctl) {
                free(t->interrupt);
                t->interrupt = sched_xstrdup("interrupted: qtaud shut down");
                exec_ctl_cancel(t->ctl);
            }
        }
        while (s->running > 0)
            pthread_cond_wait(&s->idle, &s->lock);
    }
    s->stopping = true;
    sched_fire_waiters(s, 0);
    pthread_mutex_unlock(&s->lock);
    slurm_pilots_stop(s);
    pthread_mutex_lock(&s->lock);
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
    slurm_pilots_stop(s);
    free(s->state_dir);
    free(s->hostname);
    free(s->agent_path);
    free(s->agent_url);
    free(s);
}

void sched_reconfigure(struct sched *s, double kill_grace, int max_requeues,
                       double agent_timeout)
{
    pthread_mutex_lock(&s->lock);
    s->cfg.kill_grace = kill_grace;
    s->cfg.max_requeues = max_requeues;
    s->cfg.agent_timeout = agent_timeout;
    pthread_mutex_unlock(&s->lock);
}

bool sched_draining(struct sched *s)
{
    bool d;

    pthread_mutex_lock(&s->lock);
    d = s->draining;
    pthread_mutex_unlock(&s->lock);
    return d;
}

void sched_set_agent_url(struct sched *s, const char *url)
{
    pthread_mutex_lock(&s->lock);
    free(s->agent_url);
    s->agent_url = sched_xstrdup(url);
    pthread_mutex_unlock(&s->lock);
}

int sched_sync(struct sched *s, struct qt_error *err)
{
    return db_writer_sync(s->w, err);
}

/* One copy under the lock, so a scrape sees the counters of one moment
 * and holds the lock only for the copy (a few hundred bytes a pilot). */
int sched_stats_get(struct sched *s, struct sched_stats *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&s->lock);
    st->pilots = calloc(s->npilots ? s->npilots : 1, sizeof(*st->pilots));
    if (!st->pilots) {
        pthread_mutex_unlock(&s->lock);
        errno = ENOMEM;
        return -1;
    }
    st->npilots = s->npilots;
    snprintf(st->any.name, sizeof(st->any.name), "ANY");
    st->any.submitted = s->any_submitted;
    for (int i = 0; i < NSTATES; i++) {
        /* what no pilot counts is what is left of the totals */
        st->any.tasks[i] = s->counts[i];
        st->any.ended[i] = s->any_ended[i];
    }
    for (size_t k = 0; k < s->npilots; k++) {
        const struct pilot *p = s->pilots[k];
        struct sched_pilot_stats *ps = &st->pilots[k];

        snprintf(ps->name, sizeof(ps->name), "%s", p->name);
        ps->resource = (int)p->resource;
        ps->state = (int)p->state;
        ps->submitted = p->submitted;
        for (int i = 0; i < NSTATES; i++) {
            ps->tasks[i] = p->counts[i];
            ps->ended[i] = p->ended[i];
            st->any.tasks[i] -= p->counts[i];
        }
    }
    st->wait = s->wait_hist;
    st->run = s->run_hist;
    pthread_mutex_unlock(&s->lock);
    /* the writer's own lock, not taken under the scheduler's */
    db_writer_get_stats(s->w, &st->writer);
    return 0;
}

void sched_stats_release(struct sched_stats *st)
{
    if (!st)
        return;
    free(st->pilots);
    st->pilots = NULL;
    st->npilots = 0;
}
