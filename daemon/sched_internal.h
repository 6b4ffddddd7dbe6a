/*
 * sched_internal.h - the scheduler's data, shared by sched.c (tasks, local
 * pools, long polls) and slurm_pilot.c (SLURM pilots and their agents).
 * Nothing outside daemon/ includes it.
 *
 * Every field that changes is guarded by sched.lock; every function below
 * expects it held unless it says otherwise.
 */
#ifndef QT_SCHED_INTERNAL_H
#define QT_SCHED_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "common/enums.h"
#include "common/exec.h"
#include "common/hist.h"
#include "daemon/sched.h"
#include "daemon/spec.h"
#include "db/db.h"

#define NSTATES SCHED_NTASK_STATES
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
    int64_t agent_id;           /* the agent it is leased to (SLURM pilots);
                                   0 after a restart until one claims it */
    double lease_seen;          /* monotonic: last lease or heartbeat naming it */
    struct exec_result *deferred;/* a reported death by SLURM's signals, held
                                   until a poll tells whose doing it was */
    uint64_t deferred_poll;     /* polls started when it was reported */
    const struct worker *worker;/* the local worker running it */
    pid_t run_pid;              /* its local attempt's process, 0 none */
    unsigned long long run_pid_start; /* and that process's start time */
    char *hostname;             /* host of the current or last attempt */
};

struct pilot;

/* A qtau-agent of a SLURM pilot, one per node. */
struct agent {
    int64_t id;
    char *hostname;
    int slots;
    long long pid;              /* on its host, as it said */
    bool stopping;              /* it reported tasks it stopped: no more leases */
    double last_seen;           /* monotonic seconds */
    struct agent *next;
};

struct worker {
    struct sched *s;
    struct pilot *p;
    struct exec_ctl *ctl;
    pthread_t thread;
    bool started;
    /* where its running task's output goes, renamed to the task's own
     * files afterwards when not empty (see keep_output()) */
    char live_out[PATH_MAX], live_err[PATH_MAX];
    struct task *task;          /* the one it runs, under the lock */
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
    uint64_t submitted;         /* tasks submitted naming it, this run */
    uint64_t ended[NSTATES];    /* tasks that reached a terminal state
                                   counted against it, this run */

    struct task_queue queue;    /* PENDING tasks that name this pilot */
    pthread_cond_t cond;        /* work or slots may be available */
    struct worker *workers;
    int nworkers;
    int running;

    /* SLURM pilots (resource slurm); see slurm_pilot.c */
    uint32_t slurm_job_id;      /* 0 until submitted */
    char *slurm_state;          /* SLURM's name for the job's state */
    char *slurm_reason;         /* its pending reason, NULL for none */
    char *token;                /* its agents' bearer token */
    char *workdir;              /* the job's working directory */
    int node_cores;             /* largest task one node takes; 0 unknown */
    double walltime_end;        /* epoch seconds; 0 unknown */
    bool winding_down;          /* the job is ending: lease nothing more */
    int leased_cores;           /* cores of its tasks leased to agents */
    int submit_status;          /* HTTP status of a failed submission */
    struct agent *agents;
};

struct sched {
    struct sched_config cfg;
    char *state_dir;
    char *hostname;
    char *agent_path, *agent_url;
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
    /* for /metrics, since this start: what no pilot counts (ANY tasks
     * submitted, tasks that ended before any pilot took them), and the
     * wait (submit -> start) and run (start -> end) times of attempts */
    uint64_t any_submitted;
    uint64_t any_ended[NSTATES];
    struct hist wait_hist, run_hist;

    struct sched_waiter *waiters;  /* registered long polls */
    pthread_t timer;
    pthread_cond_t timer_cond;
    bool timer_started;
    bool stopping;

    int64_t next_agent_id;
    struct slurm_pilots *slurm; /* the SLURM thread's state (slurm_pilot.c) */
};


/* Allocation that cannot fail (out of memory aborts). */
char *sched_xstrdup(const char *s);
void *sched_xcalloc(size_t n, size_t size);

struct task *sched_find_task(struct sched *s, int64_t id);
struct pilot *sched_pilot_by_id(struct sched *s, int64_t id);
/* A pilot by name, or by decimal id. */
struct pilot *sched_find_pilot(struct sched *s, const char *ref);

/* Queue the task's / pilot's row to the writer; returns the change's
 * sequence number for the pilot (see db_writer_wait). */
void sched_task_persist(struct sched *s, const struct task *t);
uint64_t sched_pilot_persist(struct sched *s, const struct pilot *p);
/* The metrics row of the attempt that just ended (copied), for
 * db_writer_task_ended with the task's new state. */
struct db_change *sched_metrics_record(struct sched *s, const struct task *t,
                                       enum task_state status, const char *error_msg,
                                       double start, double end, int exit_code,
                                       int sig, int64_t pilot_id);

void sched_task_transition(struct sched *s, struct task *t,
                           enum task_state state, int64_t run_pilot_id);
/* Starts an attempt of t, taken from its queue, on p: RUNNING, attempt
 * counted.  The caller queues the row (a local worker once the process
 * exists, with its pid). */
void sched_task_start(struct sched *s, struct task *t, struct pilot *p,
                      const char *hostname);
/* Records the outcome of the attempt t ran on p and moves it on: done,
 * retried, or requeued when it was interrupted through no fault of its own
 * (t->interrupt set).  Gives back the slots it held. */
void sched_task_finish(struct sched *s, struct task *t, struct pilot *p,
                       const struct exec_result *res);
/* Ends a task that is not running, with a metrics row. */
void sched_task_end_pending(struct sched *s, struct task *t,
                            enum task_state state, const char *msg);

/* Fires the long polls on task_id (0: every waiter). */
void sched_fire_waiters(struct sched *s, int64_t task_id);
/* Fires the waiters on pilot_id: its agents' leases (lease), or its
 * creation's answer (!lease). */
void sched_fire_pilot_waiters(struct sched *s, int64_t pilot_id, bool lease);
/* Registers w (task_id or pilot_id set by the caller) with the timer. */
void sched_add_waiter(struct sched *s, struct sched_waiter *w);

/* Work or slots may be there for p: wake its workers or agents. */
void sched_pilot_wake(struct sched *s, struct pilot *p);
void sched_queue_push(struct sched *s, struct task *t);
void sched_queue_remove(struct task *t);
void sched_wake_for(struct sched *s, const struct task *t);

/* The oldest queued task that p may run in free_slots cores and, when
 * deadline > 0, whose timeout ends within deadline seconds; NULL if none. */
struct task *sched_pick(struct sched *s, struct pilot *p, int free_slots,
                        double deadline);

void sched_output_path(const struct sched *s, const struct task *t, int which,
                       char *path, size_t len);

json_t *sched_time_json(double t);
json_t *sched_pilot_json(const struct pilot *p);
json_t *sched_task_json(struct sched *s, const struct task *t);

struct pilot *sched_pilot_new(int64_t id, const char *name);
void sched_pilots_append(struct sched *s, struct pilot *p);
/* Ends the attempt of t, leased to an agent of p, that can no longer be
 * reported (the agent or its pilot is lost): a metrics row, and back to
 * the queue (ANY) or FAILED (named), with why. */
void sched_task_lost(struct sched *s, struct task *t, struct pilot *p, const char *why);
/* Ends p: pending tasks that named it fail; running ones are stopped and
 * requeued (ANY) or failed (named). */
void sched_pilot_end(struct sched *s, struct pilot *p, enum pilot_state state,
                     const char *reason);

/* ---- slurm_pilot.c --------------------------------------------------- */

/* Starts / stops the SLURM thread (called without the lock). */
int slurm_pilots_start(struct sched *s, struct qt_error *err);
void slurm_pilots_stop(struct sched *s);
/* Seconds a pilot's creation waits for SLURM's answer before it is
 * answered with the pilot as it stands (PENDING, no job id yet). */
#define SLURM_SUBMIT_WAIT 120.0
/* Fills a new SLURM pilot's own fields (token, folder, shape) from spec. */
void slurm_pilot_prepare(struct sched *s, struct pilot *p,
                         const struct pilot_spec *spec);
/* Queues p's submission to the SLURM thread, which fires p's creation
 * waiter when SLURM has answered. */
void slurm_pilot_submit(struct sched *s, struct pilot *p);
/* Asks the SLURM thread to kill p's job (lock held). */
void slurm_pilot_kill(struct sched *s, struct pilot *p);
void slurm_pilot_free(struct pilot *p);
/* Drops p's agents (it ended: their calls get 410 now). */
void slurm_pilot_forget_agents(struct pilot *p);

#endif
