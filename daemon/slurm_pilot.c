/*
 * slurm_pilot.c - SLURM pilots: their batch jobs, and the agents that run
 * their tasks (agent/PROTOCOL.md).
 *
 * A SLURM pilot is one batch job whose script starts one qtau-agent per
 * node.  The agents pull work: a lease hands an agent the oldest tasks that
 * fit its free slots and the time its pilot has left, and marks them
 * RUNNING on the pilot; a report ends their attempts.  qtaud never starts
 * anything on a node itself.
 *
 * Threads: one SLURM thread makes every libslurm call, since each may block
 * for slurmctld's MessageTimeout.  It takes submissions and kills from two
 * small queues and, every slurm_poll seconds, reads the state of all active
 * SLURM pilots with one slurm_load_jobs() call.  Everything else here runs
 * on HTTP server threads, under the scheduler's lock, and never waits for
 * SLURM.  The lock is not held across a libslurm call.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/token.h"
#include "daemon/sched_internal.h"
#include "daemon/slurm_drv.h"

/* Seconds before the walltime ends that a leased task must be done by:
 * the agent needs them to report, SLURM to deliver its SIGTERM. */
#define WALLTIME_MARGIN 10.0
/* Longest lease long poll an agent may ask for, seconds. */
#define LEASE_MAX_WAIT 60.0
/* Default walltime, minutes (DESIGN.md). */
#define DEFAULT_WALLTIME 60

extern char **environ;

struct slurm_pilots {
    uint64_t polls;           /* job state reads started */
    pthread_t thread;
    pthread_cond_t cond;      /* work queued, or stop */
    bool started, stop;
    int64_t *submits;         /* pilot ids waiting to be submitted */
    size_t nsubmits;
    uint32_t *kills;          /* job ids to kill */
    size_t nkills;
};

/* ---- helpers ---------------------------------------------------------- */

static void push_id(int64_t **v, size_t *n, int64_t id)
{
    *v = realloc(*v, (*n + 1) * sizeof(**v));
    if (!*v)
        abort();
    (*v)[(*n)++] = id;
}

/* A new pilot token (common/token.h). */
static char *token_new(void)
{
    char *hex = sched_xcalloc(1, QT_TOKEN_LEN + 1);

    if (qt_token_new(hex) < 0)
        abort();   /* no entropy source: nothing safe to hand out */
    return hex;
}

/* mkdir -p for a path the daemon owns. */
static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp))
        return errno = ENAMETOOLONG, -1;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Single-quotes s for /bin/sh. */
static void sh_quote(struct buf *b, const char *s)
{
    buf_addc(b, '\'');
    for (; *s; s++) {
        if (*s == '\'')
            buf_adds(b, "'\\''");
        else
            buf_addc(b, *s);
    }
    buf_addc(b, '\'');
}

/* ---- preparing and submitting ----------------------------------------- */

void slurm_pilot_prepare(struct sched *s, struct pilot *p,
                         const struct pilot_spec *spec)
{
    char dir[PATH_MAX];
    int nodes = spec->number_of_nodes > 0 ? spec->number_of_nodes : 1;

    p->token = token_new();
    if (spec->working_directory)
        snprintf(dir, sizeof(dir), "%s", spec->working_directory);
    else
        snprintf(dir, sizeof(dir), "%s/pilots/%lld", s->state_dir, (long long)p->id);
    p->workdir = sched_xstrdup(dir);
    p->node_cores = spec->cores_per_node;
    p->cores = nodes * (spec->cores_per_node > 0 ? spec->cores_per_node : 1);
    p->slurm_state = sched_xstrdup("SUBMITTING");
}

void slurm_pilot_submit(struct sched *s, struct pilot *p)
{
    push_id(&s->slurm->submits, &s->slurm->nsubmits, p->id);
    pthread_cond_signal(&s->slurm->cond);
}

void slurm_pilot_kill(struct sched *s, struct pilot *p)
{
    struct slurm_pilots *sp = s->slurm;

    if (!p->slurm_job_id || !sp)
        return;
    sp->kills = realloc(sp->kills, (sp->nkills + 1) * sizeof(*sp->kills));
    if (!sp->kills)
        abort();
    sp->kills[sp->nkills++] = p->slurm_job_id;
    pthread_cond_signal(&sp->cond);
}

void slurm_pilot_forget_agents(struct pilot *p)
{
    struct agent *a, *next;

    for (a = p->agents; a; a = next) {
        next = a->next;
        free(a->hostname);
        free(a);
    }
    p->agents = NULL;
}

void slurm_pilot_free(struct pilot *p)
{
    free(p->slurm_state);
    free(p->slurm_reason);
    free(p->token);
    free(p->workdir);
    slurm_pilot_forget_agents(p);
}

/* The batch script: #SBATCH lines the user asked for, then one agent per
 * node.  The agent finds qtaud and its token in the environment. */
static char *batch_script(const struct sched *s, const struct pilot_spec *spec)
{
    struct buf b = BUF_INIT;

    buf_adds(&b, "#!/bin/sh\n");
    for (char **l = spec->scheduler_script_commands; l && *l; l++)
        buf_addf(&b, "%s\n", *l);
    buf_adds(&b, "# a qtaud pilot: one qtau-agent on every node of the allocation\n"
                 "exec srun --export=ALL --ntasks-per-node=1 --kill-on-bad-exit=0");
    if (spec->cores_per_node > 0)
        buf_addf(&b, " --cpus-per-task=%d", spec->cores_per_node);
    buf_addc(&b, ' ');
    sh_quote(&b, s->cfg.agent_path);
    buf_addc(&b, '\n');
    return buf_detach(&b, NULL);
}

/* The job's environment: qtaud's own (as sbatch would pass a user's), the
 * pilot's additions, and what the agent needs.  NULL-terminated, malloc'd
 * strings in a malloc'd array. */
static char **job_environment(const struct sched *s, const struct pilot *p,
                              const struct pilot_spec *spec)
{
    size_t n = 0, k = 0;
    char **env;

    for (char **e = environ; *e; e++)
        n++;
    for (char **e = spec->environment; e && *e; e++)
        n++;
    env = sched_xcalloc(n + 8, sizeof(*env));
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "QTAU_", 5) != 0)   /* never a stale token */
            env[k++] = sched_xstrdup(*e);
    for (char **e = spec->environment; e && *e; e++)
        env[k++] = sched_xstrdup(*e);
#define ENV_ADD(fmt, ...) do { \
        char *v_; \
        if (asprintf(&v_, fmt, __VA_ARGS__) < 0) \
            abort(); \
        env[k++] = v_; \
    } while (0)
    ENV_ADD("QTAU_URL=%s", s->agent_url);
    ENV_ADD("QTAU_PILOT_ID=%lld", (long long)p->id);
    ENV_ADD("QTAU_PILOT_TOKEN=%s", p->token);
    ENV_ADD("QTAU_AGENT_WORKDIR=%s/output", p->workdir);
#undef ENV_ADD
    env[k] = NULL;
    return env;
}

static void strv_free_all(char **v)
{
    for (char **e = v; e && *e; e++)
        free(*e);
    free(v);
}

/* Fills sub from spec: each optional field only when the description had
 * it (the parser already dropped null, "" and "None"). */
static void submission(const struct pilot_spec *spec, const char *name,
                       const char *script, const char *workdir, const char *out,
                       char *const *env, struct slurm_submit *sub)
{
    *sub = (struct slurm_submit){
        .name = name, .script = script,
        .nodes = spec->number_of_nodes > 0 ? spec->number_of_nodes : 1,
        .cores_per_node = spec->cores_per_node,
        .gpus_per_node = spec->gpus_per_node,
        .walltime = spec->walltime > 0 ? spec->walltime : DEFAULT_WALLTIME,
        .partition = spec->queue, .qos = spec->qos, .account = spec->project,
        .reservation = spec->reservation, .work_dir = workdir,
        .std_out = out, .env = env,
    };
}

json_t *slurm_pilot_describe(struct sched *s, json_t *body, struct qt_error *err)
{
    struct pilot_spec spec;
    struct slurm_submit sub;
    struct pilot p = { .id = 1, .name = "describe", .token = "TOKEN" };
    char workdir[PATH_MAX], out[PATH_MAX + 32], *script;
    char **env;
    json_t *desc;

    if (pilot_spec_parse(body, &spec, err) < 0)
        return NULL;
    if (spec.resource != RESOURCE_SLURM) {
        pilot_spec_release(&spec);
        qt_error_arg(err, "resource", "only a slurm pilot has a job description");
        return NULL;
    }
    snprintf(workdir, sizeof(workdir), "%s", spec.working_directory
                                                 ? spec.working_directory
                                                 : "/pilot-folder");
    snprintf(out, sizeof(out), "%s/slurm-%%j.out", workdir);
    p.workdir = workdir;
    pthread_mutex_lock(&s->lock);
    script = batch_script(s, &spec);
    env = job_environment(s, &p, &spec);
    pthread_mutex_unlock(&s->lock);
    submission(&spec, "qtau-describe", script, workdir, out, env, &sub);
    desc = slurm_drv_describe(&sub);
    free(script);
    strv_free_all(env);
    pilot_spec_release(&spec);
    return desc;
}

/* Submits pilot id's job (SLURM thread, lock not held). */
static void submit_one(struct sched *s, int64_t id)
{
    struct pilot_spec spec;
    struct qt_error err = { 0 };
    struct pilot *p;
    json_t *desc;
    char name[96], out[PATH_MAX + 32], workdir[PATH_MAX], *script;
    char **env;
    uint32_t job_id = 0;
    int rc;

    pthread_mutex_lock(&s->lock);
    p = sched_pilot_by_id(s, id);
    if (!p || p->state != PILOT_PENDING || p->slurm_job_id) {
        pthread_mutex_unlock(&s->lock);
        return;   /* cancelled before it was submitted */
    }
    desc = json_loads(p->description, 0, NULL);
    if (!desc) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    json_object_set_new(desc, "name", json_string(p->name));
    rc = pilot_spec_parse(desc, &spec, &err);
    json_decref(desc);
    if (rc < 0) {
        /* the stored description was validated when it came in */
        log_err("pilot %lld: stored description unreadable: %s", (long long)id,
                err.message);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    snprintf(name, sizeof(name), "qtau-%s", p->name);
    snprintf(workdir, sizeof(workdir), "%s", p->workdir);
    script = batch_script(s, &spec);
    env = job_environment(s, p, &spec);
    pthread_mutex_unlock(&s->lock);

    snprintf(out, sizeof(out), "%s/slurm-%%j.out", workdir);
    {
        char outdir[PATH_MAX + 8];

        snprintf(outdir, sizeof(outdir), "%s/output", workdir);
        if (mkdirs(outdir) < 0) {
            qt_error_set(&err, 400, "invalid_argument", "working_directory",
                         "cannot create %s: %s", outdir, strerror(errno));
            rc = -1;
        }
    }
    if (rc == 0) {
        struct slurm_submit sub;

        submission(&spec, name, script, workdir, out, env, &sub);
        rc = slurm_drv_submit(&sub, &job_id, &err);
    }
    free(script);
    strv_free_all(env);
    pilot_spec_release(&spec);

    pthread_mutex_lock(&s->lock);
    p = sched_pilot_by_id(s, id);
    if (p && rc == 0) {
        p->slurm_job_id = job_id;
        free(p->slurm_state);
        p->slurm_state = sched_xstrdup("PENDING");
        log_info("pilot %lld '%s': SLURM job %u submitted", (long long)id, p->name,
                 job_id);
        if (p->state != PILOT_PENDING)   /* cancelled meanwhile */
            slurm_pilot_kill(s, p);
        sched_pilot_persist(s, p);
    } else if (p) {
        log_warn("pilot %lld '%s': %s", (long long)id, p->name, err.message);
        p->submit_status = err.status ? err.status : 400;
        free(p->slurm_state);
        p->slurm_state = NULL;
        if (!pilot_state_terminal(p->state))
            sched_pilot_end(s, p, PILOT_FAILED, err.message);
    }
    sched_fire_pilot_waiters(s, id, false);
    pthread_mutex_unlock(&s->lock);
}

/* ---- following jobs ----------------------------------------------------- */

/* Applies one job's state to its pilot (lock held). */
static void job_apply(struct sched *s, struct pilot *p, const struct slurm_job *j)
{
    char reason[128];

    if (!j->found) {
        /* aged out of slurmctld (MinJobAge): it ended while we were not
         * looking, or long ago */
        snprintf(reason, sizeof(reason), "SLURM job %u ended (no longer known to SLURM)",
                 p->slurm_job_id);
        free(p->slurm_state);
        p->slurm_state = sched_xstrdup("GONE");
        sched_pilot_end(s, p, PILOT_DONE, reason);
        return;
    }
    if (!p->slurm_state || strcmp(p->slurm_state, j->slurm_state) != 0) {
        log_info("pilot %lld '%s': SLURM job %u is %s", (long long)p->id, p->name,
                 p->slurm_job_id, j->slurm_state);
        free(p->slurm_state);
        p->slurm_state = sched_xstrdup(j->slurm_state);
    }
    free(p->slurm_reason);
    p->slurm_reason = j->reason[0] ? sched_xstrdup(j->reason) : NULL;
    if (j->state == PILOT_RUNNING && j->end_time > 0)
        p->walltime_end = j->end_time;
    if (j->ended) {
        snprintf(reason, sizeof(reason), "SLURM job %u %s", p->slurm_job_id,
                 j->slurm_state);
        sched_pilot_end(s, p, j->state, reason);
        return;
    }
    /* the job is leaving (COMPLETING, or cancelled): no new leases */
    if (strstr(j->slurm_state, "COMPLETING") && !p->winding_down) {
        p->winding_down = true;
        sched_pilot_wake(s, p);
    }
    if (j->state == PILOT_RUNNING && p->state == PILOT_PENDING && p->agents) {
        p->state = PILOT_RUNNING;
        sched_pilot_persist(s, p);
    }
}

/* Deaths by SIGTERM or SIGKILL that p's agents reported before poll gen
 * started: the job was still running then and not winding down, so the
 * signal was not SLURM ending it, and the failure is the task's own. */
static void settle_deferred(struct sched *s, struct pilot *p, uint64_t gen)
{
    for (int64_t id = 1; p->running && id <= s->next_task_id; id++) {
        struct task *t = sched_find_task(s, id);
        struct exec_result res;

        if (!t || !t->deferred || t->run_pilot_id != p->id || t->deferred_poll >= gen)
            continue;
        res = *t->deferred;
        if (p->winding_down) {
            char why[384];

            snprintf(why, sizeof(why), "pilot %s ended: SLURM job %u is %s", p->name,
                     p->slurm_job_id, p->slurm_state ? p->slurm_state : "ending");
            sched_task_lost(s, t, p, why);
        } else {
            sched_task_finish(s, t, p, &res);
        }
    }
}

/* Whether res is a death by the signals SLURM ends a job's processes with
 * (or a shell saying its child died so). */
static bool stop_signal_death(const struct exec_result *res)
{
    return res->term_signal == SIGTERM || res->term_signal == SIGKILL
           || (res->outcome == EXEC_EXITED
               && (res->exit_code == 128 + SIGTERM || res->exit_code == 128 + SIGKILL));
}

/* One slurm_load_jobs() for every active SLURM pilot (lock not held). */
static void poll_jobs(struct sched *s)
{
    struct slurm_job *jobs = NULL;
    int64_t *ids = NULL;
    size_t n = 0;
    struct qt_error err = { 0 };
    static double last_warn;
    uint64_t gen;

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->npilots; i++) {
        struct pilot *p = s->pilots[i];

        if (p->resource != RESOURCE_SLURM || !p->slurm_job_id
            || pilot_state_terminal(p->state))
            continue;
        {
            /* out of memory aborts (as in buf.c): nothing to free after */
            struct slurm_job *more_jobs = realloc(jobs, (n + 1) * sizeof(*jobs));
            int64_t *more_ids;

            if (!more_jobs)
                abort();
            jobs = more_jobs;
            more_ids = realloc(ids, (n + 1) * sizeof(*ids));
            if (!more_ids)
                abort();
            ids = more_ids;
        }
        memset(&jobs[n], 0, sizeof(jobs[n]));
        jobs[n].job_id = p->slurm_job_id;
        ids[n++] = p->id;
    }
    gen = ++s->slurm->polls;
    pthread_mutex_unlock(&s->lock);
    if (n == 0)
        goto out;
    if (slurm_drv_poll(jobs, n, &err) < 0) {
        /* say so once a minute, not every poll */
        if (time_mono() - last_warn > 60) {
            log_warn("%s", err.message);
            last_warn = time_mono();
        }
        goto out;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++) {
        struct pilot *p = sched_pilot_by_id(s, ids[i]);

        if (p && !pilot_state_terminal(p->state))
            job_apply(s, p, &jobs[i]);
        if (p && !pilot_state_terminal(p->state))
            settle_deferred(s, p, gen);
    }
    pthread_mutex_unlock(&s->lock);
out:
    free(jobs);
    free(ids);
}

/* Agents and leases nobody has vouched for within agent-timeout: an agent
 * that stopped heartbeating (killed, node lost), a task no heartbeat names
 * (its lease answer never arrived, or no agent claimed it after a
 * restart).  Their tasks go back to the queue.  Heartbeats come from their
 * own thread, so a task that merely runs long is always named. */
static void check_agents(struct sched *s)
{
    double now = time_mono(), limit;

    pthread_mutex_lock(&s->lock);
    limit = s->cfg.agent_timeout;   /* SIGHUP may change it */
    for (size_t i = 0; i < s->npilots; i++) {
        struct pilot *p = s->pilots[i];
        struct agent **ap = &p->agents;

        if (p->resource != RESOURCE_SLURM || pilot_state_terminal(p->state))
            continue;
        while (*ap) {
            struct agent *a = *ap;

            if (now - a->last_seen <= limit) {
                ap = &a->next;
                continue;
            }
            log_warn("pilot %lld '%s': agent %lld on %s lost: no heartbeat for %.0f s",
                     (long long)p->id, p->name, (long long)a->id, a->hostname,
                     now - a->last_seen);
            *ap = a->next;
            free(a->hostname);
            free(a);
        }
        for (int64_t id = 1; p->running && id <= s->next_task_id; id++) {
            struct task *t = sched_find_task(s, id);
            char why[384];

            if (!t || t->state != TASK_RUNNING || t->run_pilot_id != p->id || t->ctl
                || now - t->lease_seen <= limit)
                continue;
            snprintf(why, sizeof(why), "pilot %s: its agent on %s was lost "
                     "(no heartbeat named the task for %.0f s)", p->name,
                     t->hostname ? t->hostname : "?", now - t->lease_seen);
            log_warn("task %lld: %s", (long long)t->id, why);
            sched_task_lost(s, t, p, why);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *slurm_main(void *arg)
{
    struct sched *s = arg;
    struct slurm_pilots *sp = s->slurm;
    double next_poll = time_mono();

    pthread_mutex_lock(&s->lock);
    while (!sp->stop) {
        int64_t *submits = sp->submits;
        uint32_t *kills = sp->kills;
        size_t nsubmits = sp->nsubmits, nkills = sp->nkills;

        if (nsubmits == 0 && nkills == 0 && time_mono() < next_poll) {
            struct timespec ts;

            ts.tv_sec = (time_t)next_poll;
            ts.tv_nsec = (long)((next_poll - floor(next_poll)) * 1e9);
            pthread_cond_timedwait(&sp->cond, &s->lock, &ts);
            continue;
        }
        sp->submits = NULL;
        sp->nsubmits = 0;
        sp->kills = NULL;
        sp->nkills = 0;
        pthread_mutex_unlock(&s->lock);

        for (size_t i = 0; i < nsubmits; i++)
            submit_one(s, submits[i]);
        for (size_t i = 0; i < nkills; i++) {
            struct qt_error err = { 0 };

            if (slurm_drv_kill(kills[i], &err) < 0)
                log_warn("SLURM job %u: %s", kills[i], err.message);
        }
        free(submits);
        free(kills);
        if (time_mono() >= next_poll || nkills > 0) {
            poll_jobs(s);
            check_agents(s);
            next_poll = time_mono() + s->cfg.slurm_poll;
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int slurm_pilots_start(struct sched *s, struct qt_error *err)
{
    pthread_condattr_t ca;
    int rc;

    s->slurm = sched_xcalloc(1, sizeof(*s->slurm));
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->slurm->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!slurm_drv_available())
        return 0;
    if (slurm_drv_init(err) < 0)
        return -1;
    rc = pthread_create(&s->slurm->thread, NULL, slurm_main, s);
    if (rc != 0)
        return qt_error_set(err, 503, "unavailable", NULL,
                            "cannot start the SLURM thread: %s", strerror(rc));
    s->slurm->started = true;
    return 0;
}

void slurm_pilots_stop(struct sched *s)
{
    struct slurm_pilots *sp = s->slurm;

    if (!sp)
        return;
    pthread_mutex_lock(&s->lock);
    sp->stop = true;
    pthread_cond_signal(&sp->cond);
    pthread_mutex_unlock(&s->lock);
    if (sp->started) {
        pthread_join(sp->thread, NULL);
        slurm_drv_fini();
    }
    pthread_cond_destroy(&sp->cond);
    free(sp->submits);
    free(sp->kills);
    free(sp);
    s->slurm = NULL;
}

/* ---- agents ----------------------------------------------------------- */

/* The pilot an agent request names, if token is its token and it is
 * active (lock held).  Fills err with 401, 404 or 410 otherwise. */
static struct pilot *agent_pilot(struct sched *s, const char *token, json_int_t id,
                                 struct qt_error *err)
{
    struct pilot *p = id > 0 ? sched_pilot_by_id(s, (int64_t)id) : NULL;

    /* the same answer for "no such pilot" and "wrong token": a token
     * holder learns nothing about other pilots */
    if (!p || p->resource != RESOURCE_SLURM || !p->token || !token
        || !qt_token_equal(p->token, token)) {
        qt_error_set(err, 401, "unauthorized", NULL,
                     "this request needs the token of the pilot it names");
        return NULL;
    }
    if (pilot_state_terminal(p->state)) {
        qt_error_set(err, 410, "gone", "pilot", "pilot %lld has ended (%s)",
                     (long long)p->id, pilot_state_name(p->state));
        return NULL;
    }
    return p;
}

static struct agent *agent_find(struct pilot *p, json_int_t id)
{
    for (struct agent *a = p->agents; a; a = a->next)
        if (a->id == id)
            return a;
    return NULL;
}

/* The registered agent a request names, seen now (lock held); its pilot
 * in *pp.  Fills err as agent_pilot() does, or with 404 for an agent id
 * qtaud does not know (it restarted: the agent registers again). */
static struct agent *agent_seen(struct sched *s, const char *token, json_int_t pilot_id,
                                json_int_t agent_id, bool fresh, struct pilot **pp,
                                struct qt_error *err)
{
    struct pilot *p = agent_pilot(s, token, pilot_id, err);
    struct agent *a = p ? agent_find(p, agent_id) : NULL;

    *pp = p;
    if (p && !a)
        qt_error_set(err, 404, "not_found", "agent_id",
                     "no agent %lld on pilot %lld: register again",
                     (long long)agent_id, (long long)p->id);
    if (a && fresh)
        a->last_seen = time_mono();
    return a;
}

/* Checks token against the pilot body names, then unpacks body strictly
 * (unknown fields refused) into fmt's targets.  The token comes first, so
 * a caller without one learns nothing, not even what a valid body is. */
static int agent_unpack(struct sched *s, const char *token, json_t *body,
                        struct qt_error *err, const char *fmt, ...)
{
    json_t *pilot = json_object_get(body, "pilot");
    json_error_t jerr;
    va_list ap;
    int rc;

    pthread_mutex_lock(&s->lock);
    rc = agent_pilot(s, token, json_is_integer(pilot) ? json_integer_value(pilot) : 0,
                     err) ? 0 : -1;
    pthread_mutex_unlock(&s->lock);
    if (rc < 0)
        return -1;
    va_start(ap, fmt);
    rc = json_vunpack_ex(body, &jerr, JSON_STRICT, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return qt_error_arg(err, NULL, "agent request: %s", jerr.text);
    return 0;
}

json_t *sched_agent_register(struct sched *s, const char *token, json_t *body,
                             struct qt_error *err)
{
    json_int_t pilot_id = 0, slots = 0, pid = 0;
    const char *hostname = NULL;
    struct pilot *p;
    struct agent *a;
    json_t *out = NULL;

    if (agent_unpack(s, token, body, err, "{s:I, s:s, s:I, s?I}", "pilot", &pilot_id,
                     "hostname", &hostname, "slots", &slots, "pid", &pid) < 0)
        return NULL;
    if (slots < 1 || slots > SPEC_MAX_CORES) {
        qt_error_arg(err, "slots", "slots must be from 1 to %d", SPEC_MAX_CORES);
        return NULL;
    }
    if (!hostname[0] || strlen(hostname) > 255) {
        qt_error_arg(err, "hostname", "hostname must be 1-255 bytes");
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    p = agent_pilot(s, token, pilot_id, err);
    if (!p)
        goto done;
    a = sched_xcalloc(1, sizeof(*a));
    a->id = ++s->next_agent_id;
    a->hostname = sched_xstrdup(hostname);
    a->slots = (int)slots;
    a->pid = (long long)pid;
    a->last_seen = time_mono();
    a->next = p->agents;
    p->agents = a;
    if (p->node_cores == 0 || (int)slots > p->node_cores)
        p->node_cores = (int)slots;
    if (p->walltime_end <= 0) {
        /* until the next poll says exactly: the job started no later than now */
        json_t *wt = NULL;
        json_t *desc = json_loads(p->description, 0, NULL);

        if (desc)
            wt = json_object_get(desc, "walltime");
        p->walltime_end = time_now()
                          + 60.0 * (wt ? (double)json_integer_value(wt) : DEFAULT_WALLTIME);
        json_decref(desc);
    }
    if (p->state == PILOT_PENDING) {
        p->state = PILOT_RUNNING;
        p->start_time = time_now();
        sched_pilot_persist(s, p);
    }
    log_info("pilot %lld '%s': agent %lld registered from %s (pid %lld), %lld slots",
             (long long)p->id, p->name, (long long)a->id, hostname, (long long)pid,
             (long long)slots);
    out = json_pack("{s:I, s:f, s:f, s:f, s:o}", "agent_id", (json_int_t)a->id,
                    "heartbeat_interval", s->cfg.heartbeat,
                    "lease_wait", LEASE_MAX_WAIT / 3,
                    "kill_grace", s->cfg.kill_grace,
                    "walltime_end", sched_time_json(p->walltime_end));
done:
    pthread_mutex_unlock(&s->lock);
    return out;
}

/* What an agent needs to run t's attempt. */
static json_t *lease_json(const struct task *t)
{
    json_t *o = task_spec_to_json(&t->spec);

    json_object_del(o, "name");
    json_object_del(o, "pilot");
    json_object_del(o, "max_retries");
    json_object_set_new(o, "id", json_integer(t->id));
    json_object_set_new(o, "attempt", json_integer(t->attempts));
    if (!json_object_get(o, "timeout"))
        json_object_set_new(o, "timeout", json_integer(0));
    return o;
}

/* Running tasks of agent a whose cancel the user asked for. */
static json_t *cancel_list(struct sched *s, const struct pilot *p, int64_t agent_id)
{
    json_t *ids = json_array();

    if (p->running == 0)
        return ids;
    for (int64_t id = 1; id <= s->next_task_id; id++) {
        struct task *t = sched_find_task(s, id);

        if (t && t->state == TASK_RUNNING && t->run_pilot_id == p->id
            && t->agent_id == agent_id && t->cancel_requested)
            json_array_append_new(ids, json_integer(t->id));
    }
    return ids;
}

int sched_agent_lease(struct sched *s, const char *token, json_t *body,
                      struct sched_waiter *w, double deadline, bool fresh,
                      json_t **out, struct qt_error *err)
{
    json_int_t pilot_id = 0, agent_id = 0, slots = 0;
    double wait = 0, deadline_secs = NAN, left;
    struct pilot *p;
    struct agent *a;
    json_t *tasks;
    struct task *t;
    bool stop;
    int rc = -1;

    *out = NULL;
    if (agent_unpack(s, token, body, err, "{s:I, s:I, s:I, s?F, s?F}", "pilot", &pilot_id,
                     "agent_id", &agent_id, "slots", &slots, "wait", &wait,
                     "deadline_secs", &deadline_secs) < 0)
        return -1;
    if (slots < 1 || slots > SPEC_MAX_CORES)
        return qt_error_arg(err, "slots", "slots must be from 1 to %d", SPEC_MAX_CORES);
    if (!(wait >= 0 && wait <= LEASE_MAX_WAIT))
        return qt_error_arg(err, "wait", "wait must be from 0 to %.0f seconds",
                            LEASE_MAX_WAIT);
    if (!isnan(deadline_secs) && !(deadline_secs >= 0))
        return qt_error_arg(err, "deadline_secs",
                            "deadline_secs must be a number of seconds >= 0");
    pthread_mutex_lock(&s->lock);
    /* a wake-up of a waiting lease is qtaud's doing, not a sign of life */
    a = agent_seen(s, token, pilot_id, agent_id, fresh, &p, err);
    if (!a)
        goto done;
    /* the time a task must fit in: the pilot's walltime, less the margin */
    left = p->walltime_end > 0 ? p->walltime_end - time_now() - WALLTIME_MARGIN : 0;
    if (deadline_secs >= 0 && (left <= 0 || deadline_secs < left))
        left = deadline_secs;
    stop = p->winding_down || s->draining || a->stopping
           || (p->walltime_end > 0 && left <= 0);
    tasks = json_array();
    while (!stop && (t = sched_pick(s, p, (int)slots, left > 0 ? left : 0))) {
        sched_task_start(s, t, p, a->hostname);
        sched_task_persist(s, t);
        t->agent_id = a->id;
        t->lease_seen = time_mono();
        p->leased_cores += t->spec.cores;
        slots -= t->spec.cores;
        json_array_append_new(tasks, lease_json(t));
    }
    if (json_array_size(tasks) == 0 && !stop && time_mono() < deadline) {
        json_decref(tasks);
        w->task_id = 0;
        w->pilot_id = p->id;
        w->lease = true;
        w->deadline = deadline;
        sched_add_waiter(s, w);
        rc = 1;
        goto done;
    }
    *out = json_pack("{s:o, s:b}", "tasks", tasks, "stop", stop);
    rc = 0;
done:
    pthread_mutex_unlock(&s->lock);
    /* what was leased is on disk before the agent hears of it */
    if (rc == 0 && json_array_size(json_object_get(*out, "tasks")) > 0
        && db_writer_sync(s->w, err) < 0) {
        json_decref(*out);
        *out = NULL;
        rc = -1;
    }
    return rc;
}

/* One result: the attempt it ends, if it is the running one. */
static int report_one(struct sched *s, struct pilot *p, struct agent *a, json_t *r,
                      size_t i, struct qt_error *err)
{
    struct agent_result ar;
    struct exec_result res;
    struct task *t;
    bool interrupted;

    if (agent_result_parse(r, i, &ar, err) < 0)
        return -1;
    res = ar.res;
    interrupted = ar.interrupted;
    /* an agent that stops tasks because it is going away takes no more */
    if (interrupted && a)
        a->stopping = true;

    t = sched_find_task(s, ar.id);
    /* a result for an attempt qtaud no longer waits for (requeued after
     * its pilot was lost, or reported before) is acknowledged, not used */
    if (!t || t->state != TASK_RUNNING || t->run_pilot_id != p->id
        || t->attempts != ar.attempt || t->ctl)
        return 0;
    /* stopped by its agent because the pilot is going away (SLURM's
     * SIGTERM at walltime or scancel): not the task's fault, so it goes
     * back to the queue like a task of a lost pilot */
    if (interrupted && !t->cancel_requested) {
        char why[384];

        snprintf(why, sizeof(why), "pilot %s ended: its agent on %s was stopped",
                 p->name, t->hostname ? t->hostname : "?");
        free(t->interrupt);
        t->interrupt = sched_xstrdup(why);
    }
    if (!interrupted && !t->cancel_requested && stop_signal_death(&res)) {
        /* SLURM may be ending the job and got to the task before the
         * agent: the next poll decides (settle_deferred) */
        free(t->deferred);
        t->deferred = sched_xcalloc(1, sizeof(*t->deferred));
        *t->deferred = res;
        t->deferred_poll = s->slurm ? s->slurm->polls : 0;
        return 0;
    }
    sched_task_finish(s, t, p, &res);
    return 0;
}

json_t *sched_agent_report(struct sched *s, const char *token, json_t *body,
                           struct qt_error *err)
{
    json_int_t pilot_id = 0, agent_id = 0;
    json_t *results = NULL, *out = NULL, *r;
    struct pilot *p;
    struct agent *a;
    size_t i, accepted = 0;

    if (agent_unpack(s, token, body, err, "{s:I, s:I, s:o}", "pilot", &pilot_id, "agent_id",
                     &agent_id, "results", &results) < 0)
        return NULL;
    if (!json_is_array(results)) {
        qt_error_arg(err, "results", "results must be an array");
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    p = agent_pilot(s, token, pilot_id, err);
    if (!p)
        goto done;
    a = agent_find(p, agent_id);
    if (a)
        a->last_seen = time_mono();
    json_array_foreach(results, i, r) {
        if (report_one(s, p, a, r, i, err) < 0)
            break;
        accepted++;
    }
    if (accepted == json_array_size(results))
        out = json_pack("{s:I, s:o, s:b}", "accepted", (json_int_t)accepted,
                        "cancel", cancel_list(s, p, agent_id), "stop",
                        p->winding_down || s->draining);
done:
    pthread_mutex_unlock(&s->lock);
    /* the results are on disk before the agent may forget them; a bad
     * element refuses the whole report (the good ones before it are
     * recorded, and count again, once, when it is resent) */
    if (out && accepted > 0 && db_writer_sync(s->w, err) < 0) {
        json_decref(out);
        out = NULL;
    }
    return out;
}

json_t *sched_agent_heartbeat(struct sched *s, const char *token, json_t *body,
                              struct qt_error *err)
{
    json_int_t pilot_id = 0, agent_id = 0;
    json_t *running = NULL, *out = NULL;
    struct pilot *p;
    struct agent *a;

    if (agent_unpack(s, token, body, err, "{s:I, s:I, s?o}", "pilot", &pilot_id, "agent_id",
                     &agent_id, "running", &running) < 0)
        return NULL;
    if (running) {
        size_t i;
        json_t *v;
        bool ok = json_is_array(running);

        json_array_foreach(running, i, v)
            ok = ok && json_is_integer(v) && json_integer_value(v) > 0;
        if (!ok) {
            qt_error_arg(err, "running", "running must be an array of task ids");
            return NULL;
        }
    }
    pthread_mutex_lock(&s->lock);
    a = agent_seen(s, token, pilot_id, agent_id, true, &p, err);
    if (!a)
        goto done;
    /* the tasks it holds are alive; after a restart this is how an agent
     * claims the tasks it went on running */
    if (json_is_array(running)) {
        size_t i;
        json_t *v;

        json_array_foreach(running, i, v) {
            struct task *t = json_is_integer(v)
                                 ? sched_find_task(s, (int64_t)json_integer_value(v))
                                 : NULL;

            if (t && t->state == TASK_RUNNING && t->run_pilot_id == p->id && !t->ctl) {
                t->agent_id = a->id;
                t->lease_seen = time_mono();
                free(t->hostname);
                t->hostname = sched_xstrdup(a->hostname);
            }
        }
    }
    out = json_pack("{s:o, s:b}", "cancel", cancel_list(s, p, a->id), "stop",
                    p->winding_down || s->draining);
done:
    pthread_mutex_unlock(&s->lock);
    return out;
}
