/*
 * agent.c - qtau-agent: runs one pilot's tasks on this node for qtaud
 * (wire protocol: agent/PROTOCOL.md).
 *
 * Threads.  SIGTERM, SIGINT, SIGHUP and SIGUSR1 are blocked before any
 * thread starts, so every thread inherits the mask and no handler runs:
 *   main       start-up; then joins lease and report, ends heartbeat,
 *              the pool and the signal thread, in that order, and exits
 *   signal     sigwaitinfo(): SIGTERM/SIGINT abort the agent (a second one
 *              stops retrying the last report); SIGUSR1 from main ends it
 *   lease      while slots are free, long-polls /v1/agent/lease sized to
 *              them and hands the tasks to the pool
 *   report     as soon as results wait and no report is in flight, sends
 *              them all (up to REPORT_BATCH_MAX) to /v1/agent/report
 *   heartbeat  every heartbeat_interval, however long tasks run: the ids
 *              of held tasks out, cancel and stop in
 *   workers    pool.c: one per slot, each runs one task with exec_run()
 * lease, report and heartbeat each own one http_client: one CURL handle
 * and one kept-alive connection apiece.
 *
 * State.  struct agent is guarded by a->lock; one condition variable,
 * a->cond (CLOCK_MONOTONIC), is broadcast on every change: mode, session,
 * and the pool's status (its notify callback).  Lock order: a->lock, then
 * the pool's own lock (status reads); the pool notifies without its lock.
 *
 * Lifecycle.  a->mode only moves forward:
 *   RUN    leasing and running
 *   DRAIN  `stop: true`, or walltime nearly over: no more leases; running
 *          tasks finish and every result is reported, retrying as long as
 *          it takes; exit 0
 *   ABORT  SIGTERM/SIGINT, 410 (the pilot ended) or qtaud refusing the
 *          agent: running tasks are cancelled, and once they have ended
 *          the results are reported with a bounded retry (none after a
 *          410); exit 0, or 1 when refused
 *
 * Session.  A thread that needs an agent id and finds none registers
 * (the others wait for it), retrying with backoff while qtaud cannot be
 * reached.  401/404 from a later call means qtaud lost the agent (it
 * restarted): the id is forgotten and the next call registers again.
 * Results live in the pool until a 200 report, whatever happens meanwhile.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "agent/conf.h"
#include "agent/guard.h"
#include "agent/http.h"
#include "agent/pool.h"
#include "agent/task.h"
#include "common/log.h"
#include "common/timeutil.h"

/* Time kept free before walltime_end: enough to report the last results
 * and exit before SLURM's own SIGTERM at the time limit. */
#define WALLTIME_MARGIN 10.0
/* Retry delays while qtaud cannot be reached (PROTOCOL.md). */
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 10.0
/* Timeout of every call but the lease, which adds its wait to it. */
#define CALL_TIMEOUT 10.0
/* Results per report: about 250 bytes each, so a batch stays far below
 * qtaud's body limit even after a long outage piled up thousands. */
#define REPORT_BATCH_MAX 1000
/* After SIGTERM, how long the last report is retried; SLURM's KillWait
 * (30 s by default) must also cover kill_grace for the tasks. */
#define ABORT_REPORT_SECS 5.0
/* How long a report holding a task killed by SIGTERM or SIGKILL waits for
 * the agent's own SIGTERM, if one is coming (pool.c marks such results
 * interrupted when it does). */
#define STOP_SIGNAL_WAIT 1.0
/* Used until the register answer says otherwise. */
#define DEFAULT_HEARTBEAT 5.0
#define DEFAULT_LEASE_WAIT 20.0
#define DEFAULT_KILL_GRACE 5.0
/* Bounds on what register may answer; outside them the answer is wrong. */
#define MAX_INTERVAL 3600.0

enum agent_mode { MODE_RUN, MODE_DRAIN, MODE_ABORT };

struct agent {
    const struct agent_conf *conf;
    char hostname[256];
    struct pool *pool;
    struct http_client *lease_http, *report_http, *heartbeat_http;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum agent_mode mode;
    char stop_reason[200];
    int exit_code;
    double final_retry;         /* ABORT: seconds the last report is retried */
    unsigned changes;           /* bumped on mode changes: ends agent_sleep() */
    bool lease_done;            /* no more tasks will be submitted */
    atomic_bool stop_leasing;   /* mode != RUN: aborts a lease in flight */
    atomic_bool quit;           /* set by main when lease and report ended */

    int64_t agent_id;           /* 0: not registered */
    bool registering;
    int lost;                   /* sessions lost without a good call since */
    double heartbeat_interval, lease_wait, walltime_end;  /* 0: no walltime */
};

/* ---- waiting -------------------------------------------------------- */

static void agent_wake(void *arg)
{
    struct agent *a = arg;

    pthread_mutex_lock(&a->lock);
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

/* Waits on a->cond until the monotonic time until; a->lock held. */
static void cond_wait_until(struct agent *a, double until)
{
    struct timespec ts;

    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&a->cond, &a->lock, &ts);
}

/* Sleeps secs, or less when the agent's mode changes or main says quit. */
static void agent_sleep(struct agent *a, double secs)
{
    double until = time_mono() + secs;
    unsigned changes;

    pthread_mutex_lock(&a->lock);
    changes = a->changes;
    while (a->changes == changes && !atomic_load(&a->quit) && time_mono() < until)
        cond_wait_until(a, until);
    pthread_mutex_unlock(&a->lock);
}

static enum agent_mode agent_mode(struct agent *a)
{
    enum agent_mode m;

    pthread_mutex_lock(&a->lock);
    m = a->mode;
    pthread_mutex_unlock(&a->lock);
    return m;
}

/* ---- stopping -------------------------------------------------------- */

/* Moves the agent to mode (never back) for the reason why (lowercase, for
 * the log).  ABORT cancels every task with "canceled: <why>"; final_retry
 * and exit_code then only ever get stricter. */
static void agent_stop(struct agent *a, enum agent_mode mode, int exit_code,
                       double final_retry, const char *why)
{
    char msg[240];
    bool abort_now = false, changed = false;

    pthread_mutex_lock(&a->lock);
    if (mode > a->mode) {
        struct pool_status st;

        pool_status(a->pool, &st);
        if (mode == MODE_DRAIN)
            log_info("%s: taking no more tasks, finishing the %d running",
                     why, st.running + st.queued);
        else
            log_info("%s: cancelling %d running tasks, reporting and exiting", why,
                     st.running + st.queued);
        a->mode = mode;
        snprintf(a->stop_reason, sizeof(a->stop_reason), "%s", why);
        abort_now = mode == MODE_ABORT;
        atomic_store(&a->stop_leasing, true);
        changed = true;
    }
    if (mode == MODE_ABORT) {
        if (exit_code > a->exit_code)
            a->exit_code = exit_code;
        if (final_retry < a->final_retry) {
            a->final_retry = final_retry;
            changed = true;
        }
    }
    /* a repeated `stop: true` changes nothing: it must not cut short the
     * backoff sleeps agent_sleep() is doing */
    if (changed) {
        a->changes++;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    if (abort_now) {
        /* outside a->lock: the pool notifies, which takes it */
        snprintf(msg, sizeof(msg), "canceled: %s", why);
        pool_close(a->pool, msg);
    }
}

static void agent_drain(struct agent *a, const char *why)
{
    agent_stop(a, MODE_DRAIN, 0, 0, why);
}

/* ---- calls ------------------------------------------------------------ */

/* Backoff state of one thread's calls. */
struct retry {
    const char *what;       /* "lease", "report", ... for the log */
    double delay;
    bool failing;
};

#define RETRY_INIT(what) { what, BACKOFF_MIN, false }

enum call_kind {
    CALL_OK,        /* 200 with a JSON object */
    CALL_RETRY,     /* no answer, 5xx, or a garbled 200: try again later */
    CALL_SESSION,   /* 401/404: qtaud does not know this agent (any more) */
    CALL_GONE,      /* 410: the pilot has ended */
    CALL_REFUSED,   /* any other 4xx: qtaud rejects the call itself */
    CALL_ABORTED,   /* the client's abort check stopped it */
};

struct call {
    long status;
    json_t *reply;          /* owned by the caller after agent_call() */
    char msg[300];          /* qtaud's error message, or why there was none */
};

/* The delay before the next retry, doubling up to BACKOFF_MAX. */
static double retry_delay(struct retry *r)
{
    double d = r->delay;

    r->delay = fmin(r->delay * 2, BACKOFF_MAX);
    return d;
}

/* Logs a failed attempt: a warning when the trouble starts, debug after. */
static void retry_failed(struct retry *r, const char *msg)
{
    if (!r->failing)
        log_warn("%s: qtaud unavailable (%s): retrying with backoff up to %g s",
                 r->what, msg, BACKOFF_MAX);
    else
        log_debug("%s: qtaud still unavailable (%s)", r->what, msg);
    r->failing = true;
}

static void retry_ok(struct retry *r)
{
    if (r->failing)
        log_info("%s: qtaud available again", r->what);
    r->failing = false;
    r->delay = BACKOFF_MIN;
}

/* POSTs body to path and sorts the answer into a call_kind.  Failures to
 * reach qtaud are logged here; the other kinds are the caller's to log,
 * with qtaud's message in call->msg.  body is borrowed. */
static enum call_kind agent_call(struct http_client *c, struct retry *r,
                                 const char *path, json_t *body, double timeout,
                                 struct call *call)
{
    json_t *error;
    const char *text;

    memset(call, 0, sizeof(*call));
    if (http_post_json(c, path, body, timeout, &call->status, &call->reply,
                       call->msg, sizeof(call->msg)) < 0) {
        if (errno == ECANCELED)
            return CALL_ABORTED;
        retry_failed(r, call->msg);
        return CALL_RETRY;
    }
    if (call->status == 200) {
        if (json_is_object(call->reply)) {
            retry_ok(r);
            return CALL_OK;
        }
        snprintf(call->msg, sizeof(call->msg), "200 without a JSON object");
        retry_failed(r, call->msg);
        return CALL_RETRY;
    }
    error = json_object_get(call->reply, "error");
    text = json_string_value(json_object_get(error, "message"));
    snprintf(call->msg, sizeof(call->msg), "HTTP %ld: %s", call->status,
             text ? text : "no error message");
    if (call->status >= 500 || call->status == 408 || call->status == 429) {
        retry_failed(r, call->msg);
        return CALL_RETRY;
    }
    switch (call->status) {
    case 401:
    case 404:
        retry_ok(r);    /* it answered: reachable */
        return CALL_SESSION;
    case 410:
        retry_ok(r);
        return CALL_GONE;
    default:
        /* reachable but refusing: the delay keeps growing, so a refusal
         * that persists is not retried ten times a second */
        return CALL_REFUSED;
    }
}

/* Acts on the `cancel` and `stop` of a report or heartbeat answer. */
static void handle_orders(struct agent *a, json_t *reply)
{
    json_t *cancel = json_object_get(reply, "cancel"), *v;
    size_t i;

    json_array_foreach(cancel, i, v) {
        json_int_t id = json_integer_value(v);

        if (!json_is_integer(v))
            continue;
        if (pool_cancel(a->pool, id, NULL) == 0)
            log_info("task %lld: cancelling on request", (long long)id);
        else
            log_debug("task %lld: cancel for a task not held here", (long long)id);
    }
    if (json_is_true(json_object_get(reply, "stop")))
        agent_drain(a, "qtaud asked the agent to stop");
}

/* ---- session ---------------------------------------------------------- */

struct session {
    int64_t agent_id;
    double heartbeat_interval, lease_wait, kill_grace, walltime_end;
};

/* Reads a register answer into s; returns -1 (msg says why) if it is not
 * one the agent can work with. */
static int session_parse(json_t *reply, struct session *s, char *msg, size_t len)
{
    json_t *walltime = NULL;
    json_int_t id;
    json_error_t jerr;

    memset(s, 0, sizeof(*s));
    if (json_unpack_ex(reply, &jerr, 0, "{s:I s:F s:F s:F s?o}", "agent_id", &id,
                       "heartbeat_interval", &s->heartbeat_interval, "lease_wait",
                       &s->lease_wait, "kill_grace", &s->kill_grace, "walltime_end",
                       &walltime) < 0) {
        snprintf(msg, len, "unexpected register answer: %s", jerr.text);
        return -1;
    }
    s->agent_id = id;
    if (id <= 0 || !(s->heartbeat_interval > 0) || s->heartbeat_interval > MAX_INTERVAL
        || !(s->lease_wait >= 0) || s->lease_wait > MAX_INTERVAL
        || !(s->kill_grace >= 0) || s->kill_grace > MAX_INTERVAL) {
        snprintf(msg, len, "register answer out of range: agent_id %lld, "
                 "heartbeat_interval %g, lease_wait %g, kill_grace %g",
                 (long long)id, s->heartbeat_interval, s->lease_wait, s->kill_grace);
        return -1;
    }
    /* A long poll of 0 s would turn the lease loop into a busy loop. */
    if (s->lease_wait < 1)
        s->lease_wait = 1;
    if (walltime && !json_is_null(walltime)
        && (!json_is_string(walltime)
            || time_parse_iso8601(json_string_value(walltime), &s->walltime_end) < 0)) {
        snprintf(msg, len, "register answer: walltime_end is not an ISO 8601 time");
        return -1;
    }
    return 0;
}

/* Registers with qtaud on c, retrying while it cannot be reached.  Fills
 * s and returns 0; returns -1 when the agent is aborting, when c's call
 * was aborted, or when qtaud refused (the agent then aborts). */
static int agent_register(struct agent *a, struct http_client *c, struct session *s)
{
    struct retry r = RETRY_INIT("register");
    struct call call;
    json_t *body;
    int lost, rc = -1;

    body = json_pack("{s:I s:s s:i s:i}", "pilot", (json_int_t)a->conf->pilot_id,
                     "hostname", a->hostname, "slots", a->conf->slots,
                     "pid", (int)getpid());
    if (!body) {
        agent_stop(a, MODE_ABORT, 1, 0, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&a->lock);
    lost = a->lost;
    pthread_mutex_unlock(&a->lock);
    /* qtaud knew nothing of the agent straight after registering it
     * before: do not hammer it */
    if (lost > 1)
        agent_sleep(a, fmin(BACKOFF_MIN * pow(2, lost - 2), BACKOFF_MAX));

    while (agent_mode(a) != MODE_ABORT) {
        enum call_kind kind = agent_call(c, &r, "/v1/agent/register", body,
                                         CALL_TIMEOUT, &call);
        char why[400];

        if (kind == CALL_OK) {
            if (session_parse(call.reply, s, call.msg, sizeof(call.msg)) == 0) {
                rc = 0;
                json_decref(call.reply);
                break;
            }
            log_err("register: %s", call.msg);
            kind = CALL_RETRY;
        }
        json_decref(call.reply);
        if (kind == CALL_RETRY) {
            agent_sleep(a, retry_delay(&r));
        } else if (kind == CALL_GONE) {
            snprintf(why, sizeof(why), "pilot %lld has ended",
                     (long long)a->conf->pilot_id);
            agent_stop(a, MODE_ABORT, 0, 0, why);
        } else if (kind == CALL_SESSION || kind == CALL_REFUSED) {
            snprintf(why, sizeof(why), "qtaud refused to register the agent (%s)",
                     call.msg);
            log_err("%s", why);
            agent_stop(a, MODE_ABORT, 1, 0, why);
        } else {
            break;      /* CALL_ABORTED */
        }
    }
    json_decref(body);
    return rc;
}

/* The agent id to use in a call on c, registering first if there is none
 * and no other thread is registering.  Returns 0 when there is no session
 * to be had: the agent is aborting without one, or c's call was aborted. */
static int64_t session_get(struct agent *a, struct http_client *c)
{
    struct session s;
    char end[40];
    int64_t id;

    pthread_mutex_lock(&a->lock);
    while (!a->agent_id && a->registering && a->mode != MODE_ABORT
           && !atomic_load(&a->quit))
        pthread_cond_wait(&a->cond, &a->lock);
    if (a->agent_id || a->registering || a->mode == MODE_ABORT
        || atomic_load(&a->quit)) {
        id = a->agent_id;
        pthread_mutex_unlock(&a->lock);
        return id;
    }
    a->registering = true;
    pthread_mutex_unlock(&a->lock);

    id = 0;
    if (agent_register(a, c, &s) == 0) {
        id = s.agent_id;
        pool_set_kill_grace(a->pool, s.kill_grace);
        time_iso8601(s.walltime_end, end, sizeof(end));
        log_info("registered as agent %lld of pilot %lld (heartbeat every %g s, "
                 "lease wait %g s, kill grace %g s, walltime ends %s)",
                 (long long)id, (long long)a->conf->pilot_id, s.heartbeat_interval,
                 s.lease_wait, s.kill_grace, end[0] ? end : "never");
    }
    pthread_mutex_lock(&a->lock);
    a->registering = false;
    if (id) {
        a->agent_id = id;
        a->heartbeat_interval = s.heartbeat_interval;
        a->lease_wait = s.lease_wait;
        a->walltime_end = s.walltime_end;
    }
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return id;
}

/* A call with agent id `id` answered 401/404: forget the id (unless some
 * other thread already did and registered again). */
static void session_lost(struct agent *a, int64_t id, const char *what,
                         const char *msg)
{
    pthread_mutex_lock(&a->lock);
    if (a->agent_id == id) {
        log_warn("%s: qtaud no longer knows agent %lld (%s): registering again",
                 what, (long long)id, msg);
        a->agent_id = 0;
        a->lost++;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
}

static void session_ok(struct agent *a)
{
    pthread_mutex_lock(&a->lock);
    a->lost = 0;
    pthread_mutex_unlock(&a->lock);
}

/* ---- lease ------------------------------------------------------------ */

static bool lease_should_abort(void *arg)
{
    struct agent *a = arg;

    return atomic_load(&a->stop_leasing);
}

/* Hands the tasks of a lease answer to the pool. */
static void lease_take(struct agent *a, json_t *reply)
{
    json_t *tasks = json_object_get(reply, "tasks"), *v;
    char err[300];
    size_t i;

    if (tasks && !json_is_array(tasks))
        log_err("lease: tasks is not an array: answer ignored");
    json_array_foreach(tasks, i, v) {
        struct agent_task *t = agent_task_parse(v, err, sizeof(err));

        if (!t) {
            log_err("lease: %s", err);
            continue;
        }
        log_debug("task %lld attempt %d: leased", (long long)t->id, t->attempt);
        pool_submit(a->pool, t);
    }
    if (json_is_true(json_object_get(reply, "stop")))
        agent_drain(a, "qtaud asked the agent to stop");
}

static void *lease_main(void *arg)
{
    struct agent *a = arg;
    struct retry r = RETRY_INIT("lease");

    for (;;) {
        struct pool_status st;
        enum call_kind kind;
        struct call call;
        double wait, left = -1, walltime_end;
        json_t *body;
        int64_t id;

        bool run;

        pthread_mutex_lock(&a->lock);
        for (;;) {
            pool_status(a->pool, &st);
            run = a->mode == MODE_RUN;
            if (!run || st.free_slots > 0)
                break;
            pthread_cond_wait(&a->cond, &a->lock);
        }
        pthread_mutex_unlock(&a->lock);
        if (!run)
            break;
        /* only this thread takes slots, so st.free_slots can only grow */
        id = session_get(a, a->lease_http);
        if (!id)
            continue;   /* aborted: the mode check above ends the loop */

        pthread_mutex_lock(&a->lock);
        wait = a->lease_wait;
        walltime_end = a->walltime_end;
        pthread_mutex_unlock(&a->lock);
        if (walltime_end > 0) {
            left = walltime_end - time_now() - WALLTIME_MARGIN;
            if (left < 1) {
                char why[80];

                snprintf(why, sizeof(why), "walltime ends in under %g s",
                         WALLTIME_MARGIN + 1);
                agent_drain(a, why);
                break;
            }
            /* a long poll should not outlast the time tasks may start in */
            wait = fmin(wait, left);
        }
        body = json_pack("{s:I s:I s:i s:I}", "pilot", (json_int_t)a->conf->pilot_id,
                         "agent_id", (json_int_t)id, "slots", st.free_slots,
                         "wait", (json_int_t)wait);
        if (body && left >= 0)
            json_object_set_new(body, "deadline_secs", json_integer((json_int_t)left));
        if (!body) {
            log_err("lease: out of memory");
            agent_sleep(a, BACKOFF_MAX);
            continue;
        }
        kind = agent_call(a->lease_http, &r, "/v1/agent/lease", body,
                          floor(wait) + CALL_TIMEOUT, &call);
        json_decref(body);
        switch (kind) {
        case CALL_OK:
            session_ok(a);
            lease_take(a, call.reply);
            break;
        case CALL_RETRY:
            agent_sleep(a, retry_delay(&r));
            break;
        case CALL_SESSION:
            session_lost(a, id, "lease", call.msg);
            break;
        case CALL_GONE:
            agent_stop(a, MODE_ABORT, 0, 0, "the pilot has ended");
            break;
        case CALL_REFUSED:
            log_err("lease: qtaud refused the call (%s)", call.msg);
            agent_sleep(a, retry_delay(&r));
            break;
        case CALL_ABORTED:
            break;
        }
        json_decref(call.reply);
    }
    pthread_mutex_lock(&a->lock);
    a->lease_done = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    log_debug("lease: done");
    return NULL;
}

/* ---- report ----------------------------------------------------------- */

/* Waits until there is something to report or nothing will ever be.
 * Returns the number of results to send (0: the reporter is done) and sets
 * *mode to the mode that decided it. */
static size_t report_wait(struct agent *a, enum agent_mode *mode)
{
    struct pool_status st;

    pthread_mutex_lock(&a->lock);
    for (;;) {
        bool settled;

        pool_status(a->pool, &st);
        /* settled: no task is queued or running, and none can be leased */
        settled = a->lease_done && st.queued == 0 && st.running == 0;
        *mode = a->mode;
        if (*mode == MODE_ABORT ? settled : st.results > 0)
            break;      /* in ABORT, wait for the cancelled tasks' results */
        if (*mode != MODE_RUN && settled)
            break;
        pthread_cond_wait(&a->cond, &a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return st.results;
}

/* Whether a result of batch is a death by SIGTERM or SIGKILL, the signals
 * SLURM ends a job's processes with - or a shell's exit status saying its
 * child died so (128 + the signal). */
static bool killed_by_stop_signal(json_t *batch)
{
    size_t i;
    json_t *r;

    json_array_foreach(batch, i, r) {
        json_int_t sig = json_integer_value(json_object_get(r, "signal"));
        json_int_t code = json_integer_value(json_object_get(r, "exit_code"));

        if (json_object_get(r, "interrupted"))
            continue;
        if (sig == SIGTERM || sig == SIGKILL || code == 128 + SIGTERM
            || code == 128 + SIGKILL)
            return true;
    }
    return false;
}

static void *report_main(void *arg)
{
    struct agent *a = arg;
    struct retry r = RETRY_INIT("report");
    double final_start = 0;     /* ABORT: when the last report began */
    size_t waiting;
    enum agent_mode mode;

    while ((waiting = report_wait(a, &mode)) > 0) {
        enum call_kind kind;
        struct call call;
        json_t *batch, *body;
        double final_left = INFINITY;
        size_t n;
        int64_t id;

        if (mode == MODE_ABORT) {
            if (final_start == 0)
                final_start = time_mono();
            pthread_mutex_lock(&a->lock);
            final_left = final_start + a->final_retry - time_mono();
            pthread_mutex_unlock(&a->lock);
        }
        id = session_get(a, a->report_http);
        if (!id) {
            if (agent_mode(a) == MODE_ABORT) {
                log_warn("report: %zu results not reported: no session with qtaud",
                         waiting);
                break;
            }
            continue;
        }
        batch = pool_results(a->pool, REPORT_BATCH_MAX);
        if (mode != MODE_ABORT && killed_by_stop_signal(batch)) {
            /* SLURM's SIGTERM reaches the tasks and the agent together: give
             * the agent's own a moment to arrive and mark these interrupted */
            json_decref(batch);
            agent_sleep(a, STOP_SIGNAL_WAIT);
            batch = pool_results(a->pool, REPORT_BATCH_MAX);
        }
        n = json_array_size(batch);
        body = json_pack("{s:I s:I s:o}", "pilot", (json_int_t)a->conf->pilot_id,
                         "agent_id", (json_int_t)id, "results", batch);
        if (!body) {
            log_err("report: out of memory");
            agent_sleep(a, BACKOFF_MAX);
            continue;
        }
        kind = agent_call(a->report_http, &r, "/v1/agent/report", body, CALL_TIMEOUT,
                          &call);
        json_decref(body);
        if (kind == CALL_OK) {
            pool_results_ack(a->pool, n);
            session_ok(a);
            log_debug("report: %zu results sent, %lld accepted", n,
                      (long long)json_integer_value(json_object_get(call.reply,
                                                                    "accepted")));
            handle_orders(a, call.reply);
        } else if (kind == CALL_SESSION) {
            session_lost(a, id, "report", call.msg);
        } else if (kind == CALL_GONE && mode == MODE_ABORT) {
            log_info("report: the pilot has ended: %zu results not reported", waiting);
            json_decref(call.reply);
            break;
        } else if (kind == CALL_GONE) {
            agent_stop(a, MODE_ABORT, 0, 0, "the pilot has ended");
        } else {
            if (kind == CALL_REFUSED)
                log_err("report: qtaud refused the call (%s)", call.msg);
            if (final_left <= 0) {
                log_warn("report: giving up: %zu results not reported", waiting);
                json_decref(call.reply);
                break;
            }
            agent_sleep(a, fmin(retry_delay(&r), final_left));
        }
        json_decref(call.reply);
    }
    log_debug("report: done");
    return NULL;
}

/* ---- heartbeat -------------------------------------------------------- */

static bool heartbeat_should_abort(void *arg)
{
    struct agent *a = arg;

    return atomic_load(&a->quit);
}

static void *heartbeat_main(void *arg)
{
    struct agent *a = arg;
    struct retry r = RETRY_INIT("heartbeat");

    while (!atomic_load(&a->quit)) {
        double interval, next;
        enum call_kind kind;
        struct call call;
        json_t *body;
        int64_t id;

        id = session_get(a, a->heartbeat_http);
        pthread_mutex_lock(&a->lock);
        interval = a->heartbeat_interval;
        pthread_mutex_unlock(&a->lock);
        next = time_mono() + interval;
        if (id) {
            body = json_pack("{s:I s:I s:o}", "pilot", (json_int_t)a->conf->pilot_id,
                             "agent_id", (json_int_t)id, "running",
                             pool_held_ids(a->pool));
            memset(&call, 0, sizeof(call));
            kind = CALL_RETRY;
            if (body)
                kind = agent_call(a->heartbeat_http, &r, "/v1/agent/heartbeat", body,
                                  CALL_TIMEOUT, &call);
            json_decref(body);
            switch (kind) {
            case CALL_OK:
                session_ok(a);
                handle_orders(a, call.reply);
                break;
            case CALL_SESSION:
                session_lost(a, id, "heartbeat", call.msg);
                next = time_mono();     /* register and beat again now */
                break;
            case CALL_GONE:
                agent_stop(a, MODE_ABORT, 0, 0, "the pilot has ended");
                break;
            case CALL_REFUSED:
                log_err("heartbeat: qtaud refused the call (%s)", call.msg);
                /* fall through */
            case CALL_RETRY:
                next = time_mono() + fmin(retry_delay(&r), interval);
                break;
            case CALL_ABORTED:
                break;
            }
            json_decref(call.reply);
        }
        /* mode changes wake agent_sleep early; beat at the interval anyway */
        while (!atomic_load(&a->quit) && time_mono() < next)
            agent_sleep(a, next - time_mono());
    }
    log_debug("heartbeat: done");
    return NULL;
}

/* ---- signals and main -------------------------------------------------- */

static void agent_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

static void *signal_main(void *arg)
{
    struct agent *a = arg;
    int taken = 0;
    sigset_t set;

    agent_signals(&set);
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        char why[64];

        if (sig < 0)
            continue;
        if (sig == SIGUSR1) {
            if (atomic_load(&a->quit))     /* from main: the agent is done */
                break;
            continue;
        }
        if (sig == SIGHUP) {
            log_info("got SIGHUP: nothing to reload, ignored");
            continue;
        }
        snprintf(why, sizeof(why), "agent got %s", exec_signal_name(sig));
        if (taken++ == 0) {
            agent_stop(a, MODE_ABORT, 0, ABORT_REPORT_SECS, why);
        } else {
            log_warn("%s again: not retrying the last report", why);
            agent_stop(a, MODE_ABORT, 0, 0, why);
        }
    }
    return NULL;
}

/* Sets up a (conf is borrowed for a's life): the lock, the HTTP clients
 * and the pool with its workers.  Returns 0, or -1 with errno set; either
 * way agent_release() undoes it. */
static int agent_init(struct agent *a, const struct agent_conf *conf)
{
    pthread_condattr_t attr;

    memset(a, 0, sizeof(*a));
    a->conf = conf;
    a->mode = MODE_RUN;
    a->final_retry = ABORT_REPORT_SECS;
    a->heartbeat_interval = DEFAULT_HEARTBEAT;
    a->lease_wait = DEFAULT_LEASE_WAIT;
    atomic_init(&a->stop_leasing, false);
    atomic_init(&a->quit, false);
    snprintf(a->stop_reason, sizeof(a->stop_reason), "not stopped");
    if (gethostname(a->hostname, sizeof(a->hostname)) < 0)
        snprintf(a->hostname, sizeof(a->hostname), "localhost");
    a->hostname[sizeof(a->hostname) - 1] = '\0';
    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &attr);
    pthread_condattr_destroy(&attr);

    a->lease_http = http_client_create(conf->url, conf->token);
    a->report_http = http_client_create(conf->url, conf->token);
    a->heartbeat_http = http_client_create(conf->url, conf->token);
    if (!a->lease_http || !a->report_http || !a->heartbeat_http)
        return -1;
    http_client_set_abort(a->lease_http, lease_should_abort, a);
    http_client_set_abort(a->heartbeat_http, heartbeat_should_abort, a);
    a->pool = pool_create(&(struct pool_config){
        .slots = conf->slots,
        .workdir = conf->workdir,
        .kill_grace = DEFAULT_KILL_GRACE,
        .notify = agent_wake,
        .notify_arg = a,
    });
    return a->pool ? 0 : -1;
}

/* Joins the pool's (idle) workers and frees what agent_init() made. */
static void agent_release(struct agent *a)
{
    pool_destroy(a->pool);
    http_client_destroy(a->lease_http);
    http_client_destroy(a->report_http);
    http_client_destroy(a->heartbeat_http);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
}

int main(int argc, char **argv)
{
    struct agent_conf conf;
    struct agent a;
    pthread_t sig_thread, lease_thread, report_thread, heartbeat_thread;
    bool sig_started = false, lease_started = false, report_started = false,
         heartbeat_started = false;
    char err[512];
    sigset_t sigs;
    int rc;

    if (agent_conf_load(&conf, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "qtau-agent: %s\n", err);
        return 2;
    }
    if (conf.help) {
        agent_conf_usage(stdout);
        return 0;
    }
    if (conf.version) {
        printf("qtau-agent %s\n", PACKAGE_VERSION);
        return 0;
    }
    log_ident = "qtau-agent";
    log_threshold = conf.log_level;
    /* first: the guardian must be forked while there is one thread */
    if (guard_start() < 0)
        log_warn("no guardian (%s): if this agent is killed, its tasks run on",
                 strerror(errno));

    /* Before any thread exists, so all inherit the mask and only
     * sigwaitinfo() in the signal thread sees these.  SIGPIPE: a dropped
     * connection is an error return, not a reason to die. */
    agent_signals(&sigs);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        log_err("cannot initialize libcurl");
        agent_conf_release(&conf);
        return 1;
    }

    if (agent_init(&a, &conf) < 0) {
        log_err("cannot start: %s", strerror(errno));
        rc = 1;
        goto out;
    }
    log_info("qtau-agent %s: pilot %lld, %d slots on %s, output in %s, qtaud at %s",
             PACKAGE_VERSION, (long long)conf.pilot_id, conf.slots, a.hostname,
             conf.workdir, conf.url);

    if ((rc = pthread_create(&sig_thread, NULL, signal_main, &a)) == 0)
        sig_started = true;
    if (rc == 0 && (rc = pthread_create(&heartbeat_thread, NULL, heartbeat_main, &a)) == 0)
        heartbeat_started = true;
    if (rc == 0 && (rc = pthread_create(&report_thread, NULL, report_main, &a)) == 0)
        report_started = true;
    if (rc == 0 && (rc = pthread_create(&lease_thread, NULL, lease_main, &a)) == 0)
        lease_started = true;
    if (rc != 0) {
        char why[120];

        snprintf(why, sizeof(why), "cannot start a thread: %s", strerror(rc));
        log_err("%s", why);
        agent_stop(&a, MODE_ABORT, 1, 0, why);
        pthread_mutex_lock(&a.lock);
        a.lease_done = true;
        pthread_cond_broadcast(&a.cond);
        pthread_mutex_unlock(&a.lock);
    }

    if (lease_started)
        pthread_join(lease_thread, NULL);
    if (report_started)
        pthread_join(report_thread, NULL);
    pthread_mutex_lock(&a.lock);
    atomic_store(&a.quit, true);
    a.changes++;
    pthread_cond_broadcast(&a.cond);
    pthread_mutex_unlock(&a.lock);
    if (heartbeat_started)
        pthread_join(heartbeat_thread, NULL);
    if (sig_started) {
        pthread_kill(sig_thread, SIGUSR1);
        pthread_join(sig_thread, NULL);
    }
    rc = a.exit_code;
    log_info("exiting (%s)", a.stop_reason);
out:
    agent_release(&a);
    curl_global_cleanup();
    agent_conf_release(&conf);
    return rc;
}
