/*
 * slurm_drv.h - the one door to libslurm: submit a pilot's batch job, read
 * the state of many jobs with one call, kill a job.
 *
 * Only slurm_drv.c includes <slurm/slurm.h>; the rest of qtaud sees plain
 * structs.  The calls block while slurmctld answers (up to its
 * MessageTimeout), so the daemon makes them from its SLURM thread, never
 * from an HTTP server thread.  Built without libslurm (configure
 * --without-slurm), every call fails with a 400 saying so.
 */
#ifndef QT_SLURM_DRV_H
#define QT_SLURM_DRV_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/enums.h"
#include "common/error.h"

/* What a pilot asks of SLURM.  Optional strings are NULL when absent; the
 * pilot description's rules (absent, null, "" and "None" all mean absent)
 * were applied when it was parsed.  All pointers are borrowed. */
struct slurm_submit {
    const char *name;          /* job name */
    const char *script;        /* batch script, starts with "#!" */
    int nodes;                 /* >= 1 */
    int cores_per_node;        /* 0: SLURM's default */
    int gpus_per_node;         /* 0: none */
    int walltime;              /* minutes, >= 1 */
    const char *partition, *qos, *account, *reservation;
    const char *work_dir;      /* absolute */
    const char *std_out;       /* absolute; also used for stderr */
    char *const *env;          /* NULL-terminated "NAME=value", not empty */
};

/* A job's state as qtaud needs it. */
struct slurm_job {
    uint32_t job_id;           /* in: the job to look for */
    bool found;                /* false: slurmctld no longer knows it */
    enum pilot_state state;    /* mapped through the one table */
    bool ended;                /* state is terminal for the pilot */
    char slurm_state[32];      /* SLURM's name, e.g. "PENDING", "RUNNING+COMPLETING" */
    char reason[64];           /* pending reason, "" for none */
    double start_time;         /* epoch seconds, 0 if not started */
    double end_time;           /* actual or expected (walltime end) */
};

/* True when this build has libslurm. */
bool slurm_drv_available(void);
/* Once at start-up / exit.  libslurm itself is set up on the first call
 * that needs it, once a slurm.conf ($SLURM_CONF, else /etc/slurm) exists:
 * until then every call answers 503. */
int slurm_drv_init(struct qt_error *err);
void slurm_drv_fini(void);

/* The job description qtaud would hand to slurm_submit_batch_job(), as
 * JSON named by job_desc_msg_t's fields (null for a field left unset): what
 * tests and logs check.  A new reference. */
json_t *slurm_drv_describe(const struct slurm_submit *sub);

/* Submits; on success stores the job id and returns 0.  On failure fills
 * err with SLURM's own text: 503 when slurmctld cannot be reached, 400
 * for a request SLURM refused (an invalid partition, say). */
int slurm_drv_submit(const struct slurm_submit *sub, uint32_t *job_id,
                     struct qt_error *err);

/* Fills each jobs[i] (job_id set by the caller) from one slurm_load_jobs()
 * call.  Returns 0, or -1 with err (503) when slurmctld cannot be reached;
 * then nothing in jobs is changed. */
int slurm_drv_poll(struct slurm_job *jobs, size_t n, struct qt_error *err);

/* Maps SLURM's job_state bits (base state | flags) through the one table
 * onto j's state, ended and slurm_state. */
void slurm_drv_map_state(uint32_t job_state, struct slurm_job *j);

/* SIGKILLs the job.  A job that already ended is not an error. */
int slurm_drv_kill(uint32_t job_id, struct qt_error *err);

#endif
