/*
 * sched.h - the daemon's working set: pilots, tasks, queues, local pools.
 *
 * All pilots and tasks live in memory, indexed by id, under one mutex; the
 * store (db/) is their durable record, written through the writer.  The API
 * threads call in here to submit, look up and cancel; each local pilot runs
 * a pool of worker threads that take tasks from the queues, run them with
 * common/exec and record the outcome.  A timer thread fires long-poll
 * deadlines.
 *
 * Functions that answer the API return new JSON references (the caller
 * owns them) or NULL with err filled.
 */
#ifndef QT_SCHED_H
#define QT_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "common/error.h"
#include "common/hist.h"
#include "db/db.h"

struct sched;

struct sched_config {
    const char *state_dir;     /* task outputs go to <state_dir>/output */
    const char *hostname;
    int local_cores;           /* 0: online CPUs */
    bool local_pilot;          /* create/keep the default pilot "local" */
    double kill_grace;         /* SIGTERM -> SIGKILL, seconds */
    int max_requeues;          /* pilot losses a task survives */
    /* SLURM pilots */
    const char *agent_path;    /* qtau-agent, as the nodes see it */
    double slurm_poll;         /* seconds between job state polls */
    double heartbeat;          /* seconds between agent heartbeats */
    double agent_timeout;      /* seconds without a heartbeat: agent lost */
};

/* A long-poll waiter, owned by the API.  fire() is called exactly once,
 * with the scheduler's lock held, when the task ends, the deadline passes
 * or the scheduler shuts down; it must not call back into the scheduler. */
struct sched_waiter {
    struct sched_waiter *next, *prev;  /* the scheduler's lists */
    int64_t task_id;                   /* a task's long poll, or */
    int64_t pilot_id;                  /* an agent's lease, or a SLURM submission */
    bool lease;                        /* pilot_id's waiter is a lease */
    double deadline;                   /* monotonic seconds */
    bool registered;
    void (*fire)(struct sched_waiter *w);
};

/* Creates the scheduler on a running writer and loads db's pilots and tasks
 * (db is only read during the call).  Tasks found RUNNING - interrupted by a
 * crash - are requeued.  Returns NULL with err filled. */
struct sched *sched_create(const struct sched_config *cfg, struct db_writer *w,
                           sqlite3 *db, struct qt_error *err);
/* Starts pools and the timer.  Returns 0 or -1 with err. */
int sched_start(struct sched *s, struct qt_error *err);
/* Stops taking new work and waits up to grace seconds for running tasks;
 * those still running are then killed and recorded as interrupted (their
 * tasks go back to PENDING for the next start).  Fires all waiters. */
void sched_drain(struct sched *s, double grace);
void sched_destroy(struct sched *s);

/* Pilots.  A local pilot is created at once: returns 0 and sets *out.  A
 * SLURM pilot is answered once SLURM has answered: returns 1 with w
 * registered (w->pilot_id set; fire() is called then) and the caller asks
 * sched_pilot_submitted() for the answer.  -1 with err on a bad request. */
int sched_pilot_create(struct sched *s, json_t *body, struct sched_waiter *w,
                       json_t **out, struct qt_error *err);
/* The answer to a SLURM pilot's creation: the pilot, or SLURM's refusal
 * (status 400 with SLURM's text, 503 when slurmctld could not be reached). */
json_t *sched_pilot_submitted(struct sched *s, int64_t pilot_id,
                              struct qt_error *err);
json_t *sched_pilot_get(struct sched *s, const char *ref, struct qt_error *err);
json_t *sched_pilot_list(struct sched *s, struct qt_error *err);
json_t *sched_pilot_cancel(struct sched *s, const char *ref, struct qt_error *err);

/* Tasks.  body is one description (answer: the task) or an array (answer:
 * {"ids": [...]}); returns only after the rows are committed. */
json_t *sched_tasks_submit(struct sched *s, json_t *body, struct qt_error *err);
json_t *sched_task_get(struct sched *s, int64_t id, struct qt_error *err);

struct sched_task_filter {
    int state;                 /* enum task_state, or -1 for any */
    const char *pilot;         /* name or id, NULL any */
    const char *name;          /* exact task name, NULL any */
    int64_t after;             /* ids greater than this */
    int limit;
};
json_t *sched_task_list(struct sched *s, const struct sched_task_filter *f,
                        struct qt_error *err);
json_t *sched_task_cancel(struct sched *s, int64_t id, struct qt_error *err);
/* Path of the task's captured stdout (which = 1) or stderr (2). */
int sched_task_output_path(struct sched *s, int64_t id, int which, char *path,
                           size_t len, struct qt_error *err);

/* Long poll: registers w for task id.  Returns 1 if the task is already
 * terminal (w not registered), 0 when registered, -1 (404) if unknown. */
int sched_task_watch(struct sched *s, int64_t id, struct sched_waiter *w,
                     struct qt_error *err);
/* Removes w if still registered (a no-op after it fired). */
void sched_task_unwatch(struct sched *s, struct sched_waiter *w);

/* Agents (agent/PROTOCOL.md).  token is the bearer token the request
 * carried; each call checks it against the pilot named in body.  Lease is
 * a long poll: it returns 0 with *out, or 1 with w registered until
 * deadline (monotonic), to be called again when w fires (fresh false:
 * that call is not the agent's). */
json_t *sched_agent_register(struct sched *s, const char *token, json_t *body,
                             struct qt_error *err);
int sched_agent_lease(struct sched *s, const char *token, json_t *body,
                      struct sched_waiter *w, double deadline, bool fresh,
                      json_t **out, struct qt_error *err);
json_t *sched_agent_report(struct sched *s, const char *token, json_t *body,
                           struct qt_error *err);
json_t *sched_agent_heartbeat(struct sched *s, const char *token, json_t *body,
                              struct qt_error *err);

/* Resolves a pilot name or id to its id; the metrics CSV filter uses it. */
int sched_pilot_id(struct sched *s, const char *ref, int64_t *id,
                   struct qt_error *err);
/* The SLURM job description a pilot description body would be submitted
 * as (slurm_drv_describe's form), without submitting it; tests check the
 * optional fields with it.  A new reference, or NULL with err. */
json_t *slurm_pilot_describe(struct sched *s, json_t *body, struct qt_error *err);

/* What /metrics exports (api/prom.c).  Counters count since this start;
 * gauges are the moment of the call.  Indexes are enum task_state. */
#define SCHED_NTASK_STATES 5
struct sched_pilot_stats {
    char name[72];             /* pilot names are at most 64 bytes */
    int resource;              /* enum pilot_resource */
    int state;                 /* enum pilot_state */
    int tasks[SCHED_NTASK_STATES];       /* by state, now */
    uint64_t submitted;                  /* tasks submitted naming it */
    uint64_t ended[SCHED_NTASK_STATES];  /* reached SUCCESS, FAILED, CANCELED */
};
struct sched_stats {
    struct sched_pilot_stats *pilots;    /* owned by the struct */
    size_t npilots;
    /* "ANY": tasks on no pilot - waiting for any pilot, or ended before
     * one took them - and submissions that named none */
    struct sched_pilot_stats any;
    struct hist wait;          /* submission -> attempt start, seconds */
    struct hist run;           /* attempt start -> end, seconds */
    struct db_writer_stats writer;
};
/* Fills st (release it with sched_stats_release).  Returns 0, or -1 with
 * errno (ENOMEM). */
int sched_stats_get(struct sched *s, struct sched_stats *st);
/* Frees what st holds; NULL ok. */
void sched_stats_release(struct sched_stats *st);

/* Applies settings a running scheduler can change (SIGHUP). */
void sched_reconfigure(struct sched *s, double kill_grace, int max_requeues,
                       double agent_timeout);

/* Whether qtaud is shutting down (new work is refused). */
bool sched_draining(struct sched *s);

/* Where agents reach qtaud (known once the listener is bound). */
void sched_set_agent_url(struct sched *s, const char *url);
/* Makes every change queued so far durable (for readers of the store). */
int sched_sync(struct sched *s, struct qt_error *err);

/* This host's online CPUs (at least 1): the default local pilot's cores. */
int sched_online_cpus(void);

#endif
