/*
 * slurm_drv.c - libslurm calls (see slurm_drv.h).  The only file that
 * includes <slurm/slurm.h>.
 *
 * SLURM states reach qtaud through one table, state_map[] below: the base
 * state (job_state & JOB_STATE_BASE) picks the pilot state, and the flags
 * OR-ed on top are read only for what they mean: CONFIGURING (nodes
 * booting) keeps a job PENDING, COMPLETING (epilog still running) keeps
 * an ended job from counting as ended until SLURM has let go of its nodes.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/slurm_drv.h"

#ifdef HAVE_SLURM
#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

static const struct {
    uint32_t base;
    const char *name;
    enum pilot_state state;
    bool ended;
} state_map[] = {
    { JOB_PENDING, "PENDING", PILOT_PENDING, false },
    { JOB_RUNNING, "RUNNING", PILOT_RUNNING, false },
    { JOB_SUSPENDED, "SUSPENDED", PILOT_RUNNING, false },
    { JOB_COMPLETE, "COMPLETED", PILOT_DONE, true },
    { JOB_CANCELLED, "CANCELLED", PILOT_CANCELED, true },
    { JOB_FAILED, "FAILED", PILOT_FAILED, true },
    /* a pilot that used up its walltime did its job */
    { JOB_TIMEOUT, "TIMEOUT", PILOT_DONE, true },
    { JOB_NODE_FAIL, "NODE_FAIL", PILOT_FAILED, true },
    { JOB_PREEMPTED, "PREEMPTED", PILOT_FAILED, true },
    { JOB_BOOT_FAIL, "BOOT_FAIL", PILOT_FAILED, true },
    { JOB_DEADLINE, "DEADLINE", PILOT_FAILED, true },
    { JOB_OOM, "OUT_OF_MEMORY", PILOT_FAILED, true },
};

/* Pending reasons users meet most; others print as their number. */
static const struct {
    uint16_t reason;
    const char *name;
} reason_map[] = {
    { WAIT_NO_REASON, "" },
    { WAIT_PRIORITY, "Priority" },
    { WAIT_DEPENDENCY, "Dependency" },
    { WAIT_RESOURCES, "Resources" },
    { WAIT_PART_NODE_LIMIT, "PartitionNodeLimit" },
    { WAIT_PART_TIME_LIMIT, "PartitionTimeLimit" },
    { WAIT_PART_DOWN, "PartitionDown" },
    { WAIT_PART_INACTIVE, "PartitionInactive" },
    { WAIT_HELD, "JobHeldAdmin" },
    { WAIT_HELD_USER, "JobHeldUser" },
    { WAIT_TIME, "BeginTime" },
    { WAIT_LICENSES, "Licenses" },
    { WAIT_RESERVATION, "Reservation" },
    { WAIT_NODE_NOT_AVAIL, "ReqNodeNotAvail" },
    { WAIT_QOS, "QOS" },
    { FAIL_LAUNCH, "JobLaunchFailure" },
    { FAIL_EXIT_CODE, "NonZeroExitCode" },
    { FAIL_TIMEOUT, "TimeLimit" },
    { FAIL_DOWN_NODE, "NodeDown" },
};

bool slurm_drv_available(void)
{
    return true;
}

/* libslurm is set up on first use, from the one thread that calls it:
 * slurm_init() exits the process when it finds no configuration, so it is
 * called only once a slurm.conf is there to read. */
static bool initialized;

static int ensure_init(struct qt_error *err)
{
    const char *conf = getenv("SLURM_CONF");

    if (initialized)
        return 0;
    if (!conf)
        conf = "/etc/slurm/slurm.conf";
    if (access(conf, R_OK) < 0)
        return qt_error_set(err, 503, "slurm_unavailable", NULL,
                            "SLURM is not configured on this host: cannot read %s: %s",
                            conf, strerror(errno));
    slurm_init(NULL);
    initialized = true;
    return 0;
}

int slurm_drv_init(struct qt_error *err)
{
    (void)err;
    return 0;
}

void slurm_drv_fini(void)
{
    if (initialized)
        slurm_fini();
    initialized = false;
}

/* Fills err from slurm_get_errno(): SLURM's words, and 503 for the codes
 * that mean slurmctld could not be talked to. */
static int slurm_error(struct qt_error *err, const char *what)
{
    int e = slurm_get_errno();
    bool unreachable =
        (e >= SLURM_COMMUNICATIONS_CONNECTION_ERROR
         && e <= SLURM_COMMUNICATIONS_SHUTDOWN_ERROR)
        || e == SLURM_COMMUNICATIONS_MISSING_SOCKET_ERROR
        || (e >= SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR
            && e <= SLURMCTLD_COMMUNICATIONS_SHUTDOWN_ERROR)
        || (e >= SLURM_PROTOCOL_SOCKET_IMPL_ZERO_RECV_LENGTH
            && e <= SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT)
        || e == ETIMEDOUT || e == ECONNREFUSED;

    if (unreachable)
        return qt_error_set(err, 503, "slurm_unavailable", NULL,
                            "%s: slurmctld cannot be reached: %s", what,
                            slurm_strerror(e));
    return qt_error_set(err, 400, "slurm_rejected", NULL, "%s: SLURM: %s", what,
                        slurm_strerror(e));
}

/* Fills d from sub.  Pointers into sub are borrowed (d is only read by
 * libslurm); the one string built here, tres, is the caller's buffer. */
static void desc_fill(job_desc_msg_t *d, const struct slurm_submit *sub,
                      char *tres, size_t tres_len)
{
    size_t n = 0;

    slurm_init_job_desc_msg(d);
    d->name = (char *)sub->name;
    d->script = (char *)sub->script;
    d->min_nodes = d->max_nodes = (uint32_t)sub->nodes;
    /* one agent per node, owning the node's cores */
    d->ntasks_per_node = 1;
    d->num_tasks = (uint32_t)sub->nodes;
    if (sub->cores_per_node > 0)
        d->cpus_per_task = (uint16_t)sub->cores_per_node;
    if (sub->gpus_per_node > 0) {
        snprintf(tres, tres_len, "gres/gpu:%d", sub->gpus_per_node);
        d->tres_per_node = tres;
    }
    d->time_limit = (uint32_t)sub->walltime;
    d->partition = (char *)sub->partition;
    d->qos = (char *)sub->qos;
    d->account = (char *)sub->account;
    d->reservation = (char *)sub->reservation;
    d->work_dir = (char *)sub->work_dir;
    d->std_out = (char *)sub->std_out;
    d->std_err = (char *)sub->std_out;
    d->user_id = (uint32_t)getuid();
    d->group_id = (uint32_t)getgid();
    while (sub->env && sub->env[n])
        n++;
    d->environment = (char **)sub->env;
    d->env_size = (uint32_t)n;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *slurm_drv_describe(const struct slurm_submit *sub)
{
    job_desc_msg_t d;
    char tres[64];
    json_t *env = json_array();

    desc_fill(&d, sub, tres, sizeof(tres));
    for (uint32_t i = 0; i < d.env_size; i++)
        json_array_append_new(env, json_string(d.environment[i]));
    return json_pack("{s:o, s:o, s:I, s:I, s:I, s:o, s:o, s:I, s:o, s:o, s:o,"
                     " s:o, s:o, s:o, s:o, s:o}",
                     "name", str_or_null(d.name),
                     "script", str_or_null(d.script),
                     "min_nodes", (json_int_t)d.min_nodes,
                     "max_nodes", (json_int_t)d.max_nodes,
                     "ntasks_per_node", (json_int_t)d.ntasks_per_node,
                     "cpus_per_task", d.cpus_per_task == (uint16_t)NO_VAL
                         ? json_null() : json_integer(d.cpus_per_task),
                     "tres_per_node", str_or_null(d.tres_per_node),
                     "time_limit", (json_int_t)d.time_limit,
                     "partition", str_or_null(d.partition),
                     "qos", str_or_null(d.qos),
                     "account", str_or_null(d.account),
                     "reservation", str_or_null(d.reservation),
                     "work_dir", str_or_null(d.work_dir),
                     "std_out", str_or_null(d.std_out),
                     "std_err", str_or_null(d.std_err),
                     "environment", env);
}

int slurm_drv_submit(const struct slurm_submit *sub, uint32_t *job_id,
                     struct qt_error *err)
{
    submit_response_msg_t *resp = NULL;
    job_desc_msg_t d;
    char tres[64];

    if (ensure_init(err) < 0)
        return -1;
    /* callers without libslurm call this with NULL only to hear why (the
     * other half of this file); here that would be a bug, not a crash */
    if (!sub || !job_id)
        return qt_error_set(err, 500, "internal", NULL, "no batch job to submit");
    desc_fill(&d, sub, tres, sizeof(tres));
    if (slurm_submit_batch_job(&d, &resp) != SLURM_SUCCESS || !resp) {
        slurm_error(err, "submitting the pilot's batch job failed");
        if (resp)
            slurm_free_submit_response_response_msg(resp);
        return -1;
    }
    *job_id = resp->job_id;
    slurm_free_submit_response_response_msg(resp);
    return 0;
}

void slurm_drv_map_state(uint32_t job_state, struct slurm_job *j)
{
    uint32_t base = job_state & JOB_STATE_BASE;
    const char *name = NULL;

    j->found = true;
    j->state = PILOT_PENDING;
    j->ended = false;
    for (size_t i = 0; i < sizeof(state_map) / sizeof(state_map[0]); i++) {
        if (state_map[i].base == base) {
            name = state_map[i].name;
            j->state = state_map[i].state;
            j->ended = state_map[i].ended;
            break;
        }
    }
    if (!name) {
        /* a state newer than this table: not ended, show its number */
        snprintf(j->slurm_state, sizeof(j->slurm_state), "STATE_%u", base);
    } else {
        snprintf(j->slurm_state, sizeof(j->slurm_state), "%s%s%s", name,
                 job_state & JOB_CONFIGURING ? "+CONFIGURING" : "",
                 job_state & JOB_COMPLETING ? "+COMPLETING" : "");
    }
    if (job_state & JOB_CONFIGURING)
        j->state = PILOT_PENDING;
    if (job_state & JOB_COMPLETING)
        j->ended = false;   /* not DONE until its nodes are let go */
}

static void job_fill(struct slurm_job *j, const slurm_job_info_t *info)
{
    uint32_t base = info->job_state & JOB_STATE_BASE;
    size_t i;

    slurm_drv_map_state(info->job_state, j);
    j->reason[0] = '\0';
    for (i = 0; i < sizeof(reason_map) / sizeof(reason_map[0]); i++)
        if (reason_map[i].reason == info->state_reason)
            break;
    if (i < sizeof(reason_map) / sizeof(reason_map[0]))
        snprintf(j->reason, sizeof(j->reason), "%s", reason_map[i].name);
    else
        snprintf(j->reason, sizeof(j->reason), "reason %u", info->state_reason);
    j->start_time = base == JOB_PENDING ? 0 : (double)info->start_time;
    j->end_time = (double)info->end_time;
}

int slurm_drv_poll(struct slurm_job *jobs, size_t n, struct qt_error *err)
{
    job_info_msg_t *msg = NULL;

    if (ensure_init(err) < 0)
        return -1;
    if (slurm_load_jobs((time_t)0, &msg, SHOW_ALL) != SLURM_SUCCESS || !msg)
        return slurm_error(err, "reading SLURM job states failed");
    for (size_t i = 0; i < n; i++) {
        jobs[i].found = false;
        for (uint32_t k = 0; k < msg->record_count; k++) {
            if (msg->job_array[k].job_id == jobs[i].job_id) {
                job_fill(&jobs[i], &msg->job_array[k]);
                break;
            }
        }
    }
    slurm_free_job_info_msg(msg);
    return 0;
}

int slurm_drv_kill(uint32_t job_id, struct qt_error *err)
{
    if (ensure_init(err) < 0)
        return -1;
    if (slurm_kill_job(job_id, SIGKILL, 0) == SLURM_SUCCESS)
        return 0;
    if (slurm_get_errno() == ESLURM_ALREADY_DONE
        || slurm_get_errno() == ESLURM_INVALID_JOB_ID)
        return 0;
    return slurm_error(err, "cancelling the pilot's SLURM job failed");
}

#else /* !HAVE_SLURM */

static int no_slurm(struct qt_error *err)
{
    return qt_error_set(err, 400, "invalid_argument", "resource",
                        "this qtaud was built without SLURM support "
                        "(configure --without-slurm); only local pilots are "
                        "possible");
}

bool slurm_drv_available(void)
{
    return false;
}

int slurm_drv_init(struct qt_error *err)
{
    (void)err;
    return 0;
}

void slurm_drv_fini(void)
{
}

json_t *slurm_drv_describe(const struct slurm_submit *sub)
{
    (void)sub;
    return json_null();
}

void slurm_drv_map_state(uint32_t job_state, struct slurm_job *j)
{
    (void)job_state;
    memset(j, 0, sizeof(*j));
}

int slurm_drv_submit(const struct slurm_submit *sub, uint32_t *job_id,
                     struct qt_error *err)
{
    (void)sub;
    (void)job_id;
    return no_slurm(err);
}

int slurm_drv_poll(struct slurm_job *jobs, size_t n, struct qt_error *err)
{
    (void)jobs;
    (void)n;
    return no_slurm(err);
}

int slurm_drv_kill(uint32_t job_id, struct qt_error *err)
{
    (void)job_id;
    return no_slurm(err);
}

#endif
