/*
 * test_slurm.c - SLURM pilots.
 *
 * "description": how a pilot description becomes the job description
 * handed to slurm_submit_batch_job(), field by field, without a cluster.
 * Every optional field is used only when present, non-null, non-empty and
 * not the string "None" (the Python predecessor passed "None" on as a
 * partition name).
 *
 * "cluster": a real single-node SLURM started by tests/slurm/fixture on
 * loopback, a live qtaud and its qtau-agent.  Skipped, and said so, when
 * SLURM cannot start here; under CI it must start.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "common/csv.h"
#include "common/log.h"
#include "daemon/sched.h"
#include "daemon/slurm_drv.h"
#include "db/db.h"
#include "tests/client.h"

/* ---- description ------------------------------------------------------ */

static char root[200];
static struct sched *sched;
static struct db_writer *writer;

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void desc_setup(void)
{
    struct qt_error err = { 0 };
    char path[300];
    sqlite3 *db, *reader;

    snprintf(root, sizeof(root), "/tmp/qtaud-slurm-desc-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(path, sizeof(path), "%s/qtaud.db", root);
    db = db_open(path, &err);
    ck_assert_msg(db != NULL, "%s", err.message);
    writer = db_writer_start(db);
    ck_assert_ptr_nonnull(writer);
    reader = db_open_reader(path, &err);
    ck_assert_ptr_nonnull(reader);
    sched = sched_create(&(struct sched_config){
                             .state_dir = root, .hostname = "testhost",
                             .local_cores = 1, .local_pilot = false,
                             .kill_grace = 1, .agent_path = "/opt/qtau/qtau-agent" },
                         writer, reader, &err);
    db_close(reader);
    ck_assert_msg(sched != NULL, "%s", err.message);
    sched_set_agent_url(sched, "http://head:8750");
}

static void desc_teardown(void)
{
    sched_destroy(sched);
    db_writer_stop(writer);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The job description of body (a JSON text); fails the test on error. */
static json_t *describe(const char *body)
{
    struct qt_error err = { 0 };
    json_t *in = json_loads(body, 0, NULL), *out;

    ck_assert_msg(in != NULL, "bad test JSON: %s", body);
    out = slurm_pilot_describe(sched, in, &err);
    json_decref(in);
    ck_assert_msg(out != NULL, "%s: %s", body, err.message);
    return out;
}

static const char *field_str(json_t *desc, const char *key)
{
    json_t *v = json_object_get(desc, key);

    ck_assert_msg(v != NULL, "job description has no %s", key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Each optional string field, and the job description field it sets. */
static const struct {
    const char *field;   /* in the pilot description */
    const char *job;     /* in job_desc_msg_t */
} optional_strings[] = {
    { "queue", "partition" },
    { "qos", "qos" },
    { "project", "account" },
    { "reservation", "reservation" },
};

/* The four ways of not giving a value. */
static const char *const absent_forms[] = { NULL, "null", "\"\"", "\"None\"" };

START_TEST(test_optional_strings)
{
    for (size_t f = 0; f < sizeof(optional_strings) / sizeof(optional_strings[0]); f++) {
        char body[256];
        json_t *d;

        for (size_t a = 0; a < 4; a++) {
            if (absent_forms[a])
                snprintf(body, sizeof(body), "{\"resource\": \"slurm\", \"%s\": %s}",
                         optional_strings[f].field, absent_forms[a]);
            else
                snprintf(body, sizeof(body), "{\"resource\": \"slurm\"}");
            d = describe(body);
            ck_assert_msg(field_str(d, optional_strings[f].job) == NULL,
                          "%s: %s was set to '%s'", body, optional_strings[f].job,
                          field_str(d, optional_strings[f].job));
            json_decref(d);
        }
        snprintf(body, sizeof(body), "{\"resource\": \"slurm\", \"%s\": \"x-1\"}",
                 optional_strings[f].field);
        d = describe(body);
        ck_assert_pstr_eq(field_str(d, optional_strings[f].job), "x-1");
        json_decref(d);
    }
}
END_TEST

START_TEST(test_working_directory)
{
    char body[128], want[PATH_MAX];
    json_t *d;

    for (size_t a = 0; a < 4; a++) {
        /* absent: the folder qtaud makes for the pilot under its state dir */
        if (absent_forms[a])
            snprintf(body, sizeof(body),
                     "{\"resource\": \"slurm\", \"working_directory\": %s}",
                     absent_forms[a]);
        else
            snprintf(body, sizeof(body), "{\"resource\": \"slurm\"}");
        d = describe(body);
        ck_assert_pstr_eq(field_str(d, "work_dir"), "/pilot-folder");
        json_decref(d);
    }
    d = describe("{\"resource\": \"slurm\", \"working_directory\": \"/scratch/run1\"}");
    ck_assert_pstr_eq(field_str(d, "work_dir"), "/scratch/run1");
    snprintf(want, sizeof(want), "/scratch/run1/slurm-%%j.out");
    ck_assert_pstr_eq(field_str(d, "std_out"), want);
    ck_assert_pstr_eq(field_str(d, "std_err"), want);
    json_decref(d);
}
END_TEST

static long long field_int(json_t *desc, const char *key)
{
    json_t *v = json_object_get(desc, key);

    ck_assert_msg(v && json_is_integer(v), "job description %s is not a number", key);
    return json_integer_value(v);
}

START_TEST(test_shape_and_walltime)
{
    json_t *d = describe("{\"resource\": \"slurm\"}");

    /* defaults: one node, SLURM's cores, no GPUs, 60 minutes */
    ck_assert_int_eq(field_int(d, "min_nodes"), 1);
    ck_assert_int_eq(field_int(d, "max_nodes"), 1);
    ck_assert_int_eq(field_int(d, "ntasks_per_node"), 1);
    ck_assert(json_is_null(json_object_get(d, "cpus_per_task")));
    ck_assert(json_is_null(json_object_get(d, "tres_per_node")));
    ck_assert_int_eq(field_int(d, "time_limit"), 60);
    json_decref(d);

    d = describe("{\"resource\": \"slurm\", \"number_of_nodes\": null,"
                 " \"cores_per_node\": null, \"gpus_per_node\": null, \"walltime\": null}");
    ck_assert_int_eq(field_int(d, "min_nodes"), 1);
    ck_assert(json_is_null(json_object_get(d, "cpus_per_task")));
    ck_assert_int_eq(field_int(d, "time_limit"), 60);
    json_decref(d);

    d = describe("{\"resource\": \"slurm\", \"number_of_nodes\": 3,"
                 " \"cores_per_node\": 16, \"gpus_per_node\": 2, \"walltime\": 90}");
    ck_assert_int_eq(field_int(d, "min_nodes"), 3);
    ck_assert_int_eq(field_int(d, "max_nodes"), 3);
    ck_assert_int_eq(field_int(d, "cpus_per_task"), 16);
    ck_assert_pstr_eq(field_str(d, "tres_per_node"), "gres/gpu:2");
    /* SLURM's time_limit is minutes: 90 is 1:30:00 */
    ck_assert_int_eq(field_int(d, "time_limit"), 90);
    ck_assert_msg(strstr(field_str(d, "script"), "--cpus-per-task=16") != NULL,
                  "the agents' step gets the node's cores: %s", field_str(d, "script"));
    json_decref(d);
}
END_TEST

/* Every optional field, in each of its absent forms, leaves the job
 * description exactly as if it were not there. */
START_TEST(test_every_field_absent)
{
    static const char *const fields[] = {
        "number_of_nodes", "cores_per_node", "gpus_per_node", "walltime", "queue",
        "qos", "project", "reservation", "scheduler_script_commands", "environment",
        "working_directory",
    };
    json_t *bare = describe("{\"resource\": \"slurm\"}");

    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        for (size_t a = 1; a < 4; a++) {
            char body[160];
            json_t *d;

            snprintf(body, sizeof(body), "{\"resource\": \"slurm\", \"%s\": %s}",
                     fields[f], absent_forms[a]);
            d = describe(body);
            ck_assert_msg(json_equal(d, bare), "%s changed the job description", body);
            json_decref(d);
        }
    }
    json_decref(bare);
}
END_TEST

/* Wrong values are refused with the field named, before SLURM sees them. */
START_TEST(test_bad_values)
{
    static const struct {
        const char *body, *field;
    } cases[] = {
        { "{\"resource\": \"slurm\", \"walltime\": 0}", "walltime" },
        { "{\"resource\": \"slurm\", \"walltime\": -5}", "walltime" },
        { "{\"resource\": \"slurm\", \"walltime\": \"90\"}", "walltime" },
        { "{\"resource\": \"slurm\", \"number_of_nodes\": 0}", "number_of_nodes" },
        { "{\"resource\": \"slurm\", \"cores_per_node\": 1.5}", "cores_per_node" },
        { "{\"resource\": \"slurm\", \"gpus_per_node\": -1}", "gpus_per_node" },
        { "{\"resource\": \"slurm\", \"queue\": 7}", "queue" },
        { "{\"resource\": \"slurm\", \"working_directory\": \"rel/dir\"}", "working_directory" },
        { "{\"resource\": \"slurm\", \"scheduler_script_commands\": [\"--mem=4G\"]}",
          "scheduler_script_commands" },
        { "{\"resource\": \"slurm\", \"scheduler_script_commands\": [\"#SBATCH --a\\nrm -rf x\"]}",
          "scheduler_script_commands" },
        { "{\"resource\": \"slurm\", \"environment\": {\"1BAD\": \"x\"}}", "environment" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qt_error err = { 0 };
        json_t *in = json_loads(cases[i].body, 0, NULL);
        json_t *out = slurm_pilot_describe(sched, in, &err);

        json_decref(in);
        ck_assert_msg(out == NULL, "%s was accepted", cases[i].body);
        ck_assert_int_eq(err.status, 400);
        ck_assert_msg(strncmp(err.field, cases[i].field, strlen(cases[i].field)) == 0,
                      "%s: field '%s', want '%s'", cases[i].body, err.field,
                      cases[i].field);
    }
}
END_TEST

START_TEST(test_script_and_environment)
{
    json_t *d = describe("{\"resource\": \"slurm\","
                         " \"scheduler_script_commands\": [\"#SBATCH --mem=4G\","
                         " \"#SBATCH --constraint=fast\"],"
                         " \"environment\": {\"OMP_NUM_THREADS\": \"4\"}}");
    const char *script = field_str(d, "script");
    json_t *env = json_object_get(d, "environment");
    bool omp = false, url = false, token = false, pilot = false;
    size_t i;
    json_t *e;

    /* #SBATCH lines right after the shebang, before any command */
    ck_assert_msg(strncmp(script, "#!/bin/sh\n#SBATCH --mem=4G\n#SBATCH --constraint=fast\n",
                          52) == 0, "script: %s", script);
    ck_assert_msg(strstr(script, "srun --export=ALL --ntasks-per-node=1") != NULL, "script: %s", script);
    ck_assert_msg(strstr(script, "'/opt/qtau/qtau-agent'") != NULL, "script: %s", script);
    /* the token travels in the environment, never in the script */
    ck_assert_msg(strstr(script, "TOKEN") == NULL, "token in the script: %s", script);
    json_array_foreach(env, i, e) {
        const char *v = json_string_value(e);

        omp |= strcmp(v, "OMP_NUM_THREADS=4") == 0;
        url |= strcmp(v, "QTAU_URL=http://head:8750") == 0;
        token |= strcmp(v, "QTAU_PILOT_TOKEN=TOKEN") == 0;
        pilot |= strcmp(v, "QTAU_PILOT_ID=1") == 0;
    }
    ck_assert(omp && url && token && pilot);
    json_decref(d);

    /* absent, null or empty scheduler_script_commands add nothing */
    for (size_t a = 0; a < 3; a++) {
        static const char *const forms[] = { "", ", \"scheduler_script_commands\": null",
                                             ", \"scheduler_script_commands\": []" };
        char body[128];

        snprintf(body, sizeof(body), "{\"resource\": \"slurm\"%s}", forms[a]);
        d = describe(body);
        ck_assert_msg(strstr(field_str(d, "script"), "#SBATCH") == NULL, "%s", body);
        json_decref(d);
    }
}
END_TEST

/* ---- cluster ---------------------------------------------------------- */

static char cluster[200];        /* the fixture's DIR */
static struct daemon d;

/* Runs the fixture with verb on the cluster dir; returns its exit status.
 * "start" puts SLURM_CONF into the environment (qtaud and scancel read it). */
static int fixture(const char *verb)
{
    const char *srcdir = getenv("QTAUD_SRCDIR");
    char cmd[600], line[400];
    FILE *f;
    int rc;

    snprintf(cmd, sizeof(cmd), "%s/tests/slurm/fixture %s %s", srcdir ? srcdir : ".",
             verb, cluster);
    f = popen(cmd, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "SLURM_CONF=", 11) == 0)
            setenv("SLURM_CONF", line + 11, 1);
    }
    rc = pclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Starts qtaud with this build's agent and quick SLURM polling. */
static void cluster_start(const char *const *more)
{
    const char *agent = getenv("QTAU_AGENT_BIN");
    const char *args[32] = { "--agent-path", agent ? agent : "./qtau-agent",
                             "--slurm-poll", "0.5", "--heartbeat-interval", "1" };
    size_t n = 6;

    for (size_t i = 0; more && more[i] && n < 30; i++)
        args[n++] = more[i];
    args[n] = NULL;
    ck_assert_msg(daemon_start(&d, args) == 0, "qtaud did not start");
}

static void cluster_teardown(void)
{
    /* a test that failed half way leaves its pilots' jobs holding the
     * node: cancel them, so the next test gets the cores */
    if (d.pid > 0) {
        struct http_resp r;

        if (http(&d, "GET", "/v1/pilots", NULL, NULL, &r) == 0 && r.json) {
            size_t i;
            json_t *p;

            json_array_foreach(json_object_get(r.json, "pilots"), i, p) {
                const char *state = jstr(p, "state");
                char path[128];
                struct http_resp rr;

                if (strcmp(state, "PENDING") && strcmp(state, "RUNNING"))
                    continue;
                snprintf(path, sizeof(path), "/v1/pilots/%lld", jint(p, "id"));
                http(&d, "DELETE", path, NULL, NULL, &rr);
                http_resp_free(&rr);
            }
        }
        http_resp_free(&r);
    }

    daemon_must_stop(&d);
}

/* Polls path until its object's state is want (or timeout s); returns the
 * object, or NULL (the caller aborts with what it knows) with *last the
 * object as last seen. */
static json_t *state_wait(const char *path, const char *want, double timeout,
                          json_t **last)
{
    json_t *o = NULL;

    for (double t = 0; t < timeout; t += 0.1) {
        json_decref(o);
        o = http_json(&d, "GET", path, NULL, 200);
        if (strcmp(jstr(o, "state"), want) == 0)
            return o;
        usleep(100000);
    }
    *last = o;
    return NULL;
}

/* Polls the pilot until its state is want (or timeout s); returns it. */
static json_t *pilot_wait(const char *ref, const char *want, double timeout)
{
    char path[128];
    json_t *p, *last = NULL;

    snprintf(path, sizeof(path), "/v1/pilots/%s", ref);
    if ((p = state_wait(path, want, timeout, &last)))
        return p;
    ck_abort_msg("pilot %s is %s after %.0f s, not %s (slurm_state %s, reason %s)",
                 ref, jstr(last, "state"), timeout, want, jstr(last, "slurm_state"),
                 jstr(last, "reason"));
    return NULL;
}

/* Polls task id until its state is want. */
static json_t *task_wait_state(long long id, const char *want, double timeout)
{
    char path[64];
    json_t *t, *last = NULL;

    snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
    if ((t = state_wait(path, want, timeout, &last)))
        return t;
    ck_abort_msg("task %lld is %s after %.0f s, not %s (error_msg %s)", id,
                 jstr(last, "state"), timeout, want, jstr(last, "error_msg"));
    return NULL;
}

static long long submit_one(const char *body)
{
    return task_submit(&d, body);
}

/* The metrics CSV's data rows as parsed records. */
struct rows {
    char ***r;
    size_t *nf;
    size_t n;
};

static void metrics_rows(struct rows *out)
{
    struct http_resp resp;
    size_t pos = 0;
    char **fields;
    size_t nfields;
    int rc;

    memset(out, 0, sizeof(*out));
    ck_assert_int_eq(http(&d, "GET", "/v1/metrics.csv", NULL, NULL, &resp), 0);
    ck_assert_int_eq(resp.status, 200);
    while ((rc = csv_read_record(resp.body, resp.len, &pos, &fields, &nfields)) == 1) {
        out->r = realloc(out->r, (out->n + 1) * sizeof(*out->r));
        out->nf = realloc(out->nf, (out->n + 1) * sizeof(*out->nf));
        out->r[out->n] = fields;
        out->nf[out->n++] = nfields;
    }
    ck_assert_int_eq(rc, 0);
    http_resp_free(&resp);
}

static void rows_free(struct rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        csv_free_record(r->r[i], r->nf[i]);
    free(r->r);
    free(r->nf);
}

enum { M_ERROR = 1, M_STATUS = 6, M_TASK = 8, M_ATTEMPT = 11, M_PILOT = 14, M_HOST = 15 };

/* A pilot comes up and runs 500 tasks through its agent; every metrics row
 * names the pilot and the agent's host. */
START_TEST(test_pilot_runs_tasks)
{
    char host[256], body[256];
    json_t *p, *t, *arr;
    struct rows m;
    long long pid, first;
    size_t n = 0;

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    p = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"s1\", \"resource\": \"slurm\", \"walltime\": 10,"
                  " \"cores_per_node\": 2}", 201);
    ck_assert_int_gt(jint(p, "slurm_job_id"), 0);
    pid = jint(p, "id");
    json_decref(p);
    json_decref(pilot_wait("s1", "RUNNING", 60));

    arr = json_array();
    for (int i = 0; i < 500; i++)
        json_array_append_new(arr, json_pack("{s:[s,s,s], s:s}", "command", "/bin/sh",
                                             "-c", "echo $0", "pilot", "s1"));
    {
        char *text = json_dumps(arr, JSON_COMPACT);

        t = http_json(&d, "POST", "/v1/tasks", text, 201);
        free(text);
    }
    json_decref(arr);
    first = json_integer_value(json_array_get(json_object_get(t, "ids"), 0));
    json_decref(t);
    for (long long id = first; id < first + 500; id++) {
        t = wait_task(&d, id, 120);
        ck_assert_msg(strcmp(jstr(t, "state"), "SUCCESS") == 0, "task %lld: %s (%s)",
                      id, jstr(t, "state"), jstr(t, "error_msg"));
        ck_assert_str_eq(jstr(t, "run_pilot"), "s1");
        json_decref(t);
    }
    /* output comes back from the pilot's folder */
    {
        struct http_resp r;

        snprintf(body, sizeof(body), "/v1/tasks/%lld/stdout", first);
        ck_assert_int_eq(http(&d, "GET", body, NULL, NULL, &r), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(r.len > 0 && strncmp(r.body, "/bin/sh", 7) == 0, "stdout: %.*s",
                      (int)r.len, r.body);
        http_resp_free(&r);
    }
    gethostname(host, sizeof(host));
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++) {
        if (atoll(m.r[i][M_TASK]) < first)
            continue;
        n++;
        ck_assert_str_eq(m.r[i][M_STATUS], "SUCCESS");
        ck_assert_int_eq(atoll(m.r[i][M_PILOT]), pid);
        ck_assert_str_eq(m.r[i][M_HOST], host);
    }
    ck_assert_int_eq(n, 500);
    rows_free(&m);

    /* cancelling the pilot kills its job */
    p = http_json(&d, "DELETE", "/v1/pilots/s1", NULL, 200);
    ck_assert_str_eq(jstr(p, "state"), "CANCELED");
    json_decref(p);
}
END_TEST

/* scancel from outside while tasks run: the pilot ends, the tasks it was
 * running get a metrics row for the lost attempt and finish elsewhere. */
START_TEST(test_scancel_requeues)
{
    char cmd[128];
    json_t *p, *t;
    long long ids[2], job;
    struct rows m;
    int lost = 0;

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"s2\", \"resource\": \"slurm\", \"cores_per_node\": 2}", 201);
    job = jint(p, "slurm_job_id");
    json_decref(p);
    /* long inside SLURM, quick anywhere else */
    for (int i = 0; i < 2; i++)
        ids[i] = submit_one("{\"shell\": \"if [ -n \\\"$SLURM_JOB_ID\\\" ]; then sleep 120; fi\"}");
    for (int i = 0; i < 2; i++)
        json_decref(task_wait_state(ids[i], "RUNNING", 60));
    snprintf(cmd, sizeof(cmd), "scancel %lld", job);
    ck_assert_int_eq(system(cmd), 0);
    p = pilot_wait("s2", "CANCELED", 30);
    ck_assert_msg(strstr(jstr(p, "reason"), "CANCELLED") != NULL, "reason: %s",
                  jstr(p, "reason"));
    json_decref(p);
    for (int i = 0; i < 2; i++) {
        t = task_wait_state(ids[i], "PENDING", 10);
        ck_assert_int_eq(jint(t, "attempts"), 1);
        json_decref(t);
    }
    json_decref(http_json(&d, "POST", "/v1/pilots", "{\"name\": \"l\", \"cores\": 2}", 201));
    for (int i = 0; i < 2; i++) {
        t = wait_task(&d, ids[i], 30);
        ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
        ck_assert_str_eq(jstr(t, "run_pilot"), "l");
        ck_assert_int_eq(jint(t, "attempts"), 2);
        json_decref(t);
    }
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++)
        if (strcmp(m.r[i][M_ATTEMPT], "1") == 0) {
            ck_assert_str_eq(m.r[i][M_STATUS], "FAILED");
            ck_assert_msg(strncmp(m.r[i][M_ERROR], "pilot s2 ended: ", 16) == 0,
                          "error_msg: %s", m.r[i][M_ERROR]);
            lost++;
        }
    ck_assert_int_eq(lost, 2);
    rows_free(&m);
}
END_TEST

/* A pilot with little time left gets no task whose timeout would outlast
 * it; a task that fits runs. */
START_TEST(test_walltime_not_leased)
{
    json_t *p, *t;
    long long longer, fits;

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    p = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"s3\", \"resource\": \"slurm\", \"walltime\": 1}", 201);
    json_decref(p);
    json_decref(pilot_wait("s3", "RUNNING", 60));
    longer = submit_one("{\"command\": [\"sleep\", \"1\"], \"timeout\": 120, \"pilot\": \"s3\"}");
    fits = submit_one("{\"command\": [\"true\"], \"timeout\": 5, \"pilot\": \"s3\"}");
    t = wait_task(&d, fits, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    json_decref(t);
    /* a task's own death by SIGTERM, while its job runs on, is its failure */
    {
        long long own = submit_one("{\"shell\": \"kill -TERM $$\", \"pilot\": \"s3\"}");

        t = wait_task(&d, own, 30);
        ck_assert_str_eq(jstr(t, "state"), "FAILED");
        ck_assert_str_eq(jstr(t, "error_msg"), "killed by signal 15 (SIGTERM)");
        ck_assert_int_eq(jint(t, "attempts"), 1);
        json_decref(t);
    }
    /* the agent is leasing, and still the long one waits */
    t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
    ck_assert_int_eq(jint(t, "id"), longer);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");
    ck_assert_int_eq(jint(t, "attempts"), 0);
    json_decref(t);
    json_decref(http_json(&d, "DELETE", "/v1/pilots/s3", NULL, 200));
    t = wait_task(&d, longer, 10);
    ck_assert_str_eq(jstr(t, "state"), "FAILED");
    ck_assert_str_eq(jstr(t, "error_msg"), "pilot s3 ended: canceled by user");
    json_decref(t);
}
END_TEST

/* An agent that stops heartbeating (here: frozen with SIGSTOP) is taken as
 * lost after agent-timeout and its task goes back to the queue; a task that
 * only runs longer than agent-timeout keeps its agent.  Thawed, the agent
 * registers again and runs the task's next attempt. */
START_TEST(test_agent_lost)
{
    json_t *p, *t, *agents;
    long long slow, stuck, apid;
    struct rows m;
    bool lost_row = false;

    cluster_start((const char *const[]){ "--no-local-pilot", "--agent-timeout", "3", NULL });
    json_decref(http_json(&d, "POST", "/v1/pilots",
                          "{\"name\": \"s4\", \"resource\": \"slurm\", \"cores_per_node\": 2}",
                          201));
    json_decref(pilot_wait("s4", "RUNNING", 60));
    slow = submit_one("{\"command\": [\"sleep\", \"5\"]}");
    t = wait_task(&d, slow, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_msg(jint(t, "attempts") == 1, "a long task lost its agent: %lld attempts",
                  jint(t, "attempts"));
    json_decref(t);

    stuck = submit_one("{\"shell\": \"[ -e $QTAU_AGENT_WORKDIR/../thawed ] || sleep 30\"}");
    json_decref(task_wait_state(stuck, "RUNNING", 30));
    p = http_json(&d, "GET", "/v1/pilots/s4", NULL, 200);
    agents = json_object_get(p, "agents");
    ck_assert_int_eq(json_array_size(agents), 1);
    apid = jint(json_array_get(agents, 0), "pid");
    json_decref(p);
    ck_assert_int_gt(apid, 1);
    ck_assert_int_eq(kill((pid_t)apid, SIGSTOP), 0);
    t = task_wait_state(stuck, "PENDING", 20);
    ck_assert_int_eq(jint(t, "attempts"), 1);
    ck_assert_msg(strstr(jstr(t, "error_msg"), "was lost") != NULL, "error_msg: %s",
                  jstr(t, "error_msg"));
    json_decref(t);
    p = http_json(&d, "GET", "/v1/pilots/s4", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(p, "agents")), 0);
    json_decref(p);
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++)
        if (atoll(m.r[i][M_TASK]) == stuck && strcmp(m.r[i][M_ATTEMPT], "1") == 0)
            lost_row = strcmp(m.r[i][M_STATUS], "FAILED") == 0
                       && strstr(m.r[i][M_ERROR], "was lost") != NULL;
    ck_assert(lost_row);
    rows_free(&m);

    /* thawed: the next attempt finishes at once */
    {
        char path[400];
        FILE *f;

        snprintf(path, sizeof(path), "%s/pilots/1/thawed", d.dir);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
    }
    ck_assert_int_eq(kill((pid_t)apid, SIGCONT), 0);
    t = wait_task(&d, stuck, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);
    json_decref(http_json(&d, "DELETE", "/v1/pilots/s4", NULL, 200));
}
END_TEST

/* qtaud killed with SIGKILL at random moments while its SLURM pilot's
 * agent leases, runs and reports a stream of short tasks, and restarted
 * on the same port each time: every acknowledged task ends SUCCESS once,
 * with as many metrics rows as attempts and nothing after its success. */
START_TEST(test_kill_loop_with_agent)
{
    enum { ROUNDS = 3, PER_ROUND = 150 };
    unsigned seed = (unsigned)time(NULL);
    long long first = 0, last = 0;
    char listen[64];
    struct rows m;
    int *rows, *succ, status;

    fprintf(stderr, "test_kill_loop_with_agent: seed %u\n", seed);
    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", d.port);
    json_decref(http_json(&d, "POST", "/v1/pilots",
                          "{\"name\": \"k\", \"resource\": \"slurm\", \"cores_per_node\": 2}",
                          201));
    json_decref(pilot_wait("k", "RUNNING", 60));
    for (int round = 0; round < ROUNDS; round++) {
        json_t *arr = json_array(), *ids;
        char *text;

        for (int i = 0; i < PER_ROUND; i++)
            json_array_append_new(arr, json_pack("{s:s}", "shell",
                                                 i % 10 ? "true" : "sleep 0.3"));
        text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        ids = http_json(&d, "POST", "/v1/tasks", text, 201);
        free(text);
        ck_assert_ptr_nonnull(ids);
        if (!first)
            first = json_integer_value(json_array_get(json_object_get(ids, "ids"), 0));
        last = json_integer_value(json_array_get(json_object_get(ids, "ids"),
                                                 PER_ROUND - 1));
        json_decref(ids);
        usleep((useconds_t)(50000 + rand_r(&seed) % 1500000));
        kill(d.pid, SIGKILL);
        while (waitpid(d.pid, &status, 0) < 0)
            ;
        d.pid = 0;
        usleep((useconds_t)(rand_r(&seed) % 1000000));   /* results pile up */
        cluster_start((const char *const[]){ "--no-local-pilot", "--listen", listen, NULL });
    }
    for (long long id = first; id <= last; id++) {
        json_t *t = wait_task(&d, id, 120);

        ck_assert_msg(strcmp(jstr(t, "state"), "SUCCESS") == 0, "task %lld: %s (%s)", id,
                      jstr(t, "state"), jstr(t, "error_msg"));
        json_decref(t);
    }
    rows = calloc((size_t)(last + 1), sizeof(*rows));
    succ = calloc((size_t)(last + 1), sizeof(*succ));
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++) {
        long long id = atoll(m.r[i][M_TASK]);
        int attempt = atoi(m.r[i][M_ATTEMPT]);

        ck_assert(id >= first && id <= last);
        ck_assert_msg(succ[id] == 0, "task %lld: attempt %d after its success", id, attempt);
        rows[id]++;
        ck_assert_msg(attempt == rows[id], "task %lld: row for attempt %d is its row %d",
                      id, attempt, rows[id]);
        if (strcmp(m.r[i][M_STATUS], "SUCCESS") == 0)
            succ[id] = attempt;
    }
    rows_free(&m);
    for (long long id = first; id <= last; id++) {
        char path[64];
        json_t *t;

        ck_assert_msg(succ[id] > 0, "task %lld has no SUCCESS row", id);
        snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", path, NULL, 200);
        ck_assert_int_eq(jint(t, "attempts"), rows[id]);
        json_decref(t);
    }
    {
        int again = 0;

        for (long long id = first; id <= last; id++)
            again += rows[id] > 1;
        fprintf(stderr, "test_kill_loop_with_agent: %lld tasks, %d ran more than once\n",
                last - first + 1, again);
    }
    free(rows);
    free(succ);
    json_decref(http_json(&d, "DELETE", "/v1/pilots/k", NULL, 200));
}
END_TEST

/* How many processes run a command line holding marker. */
static int processes_with(const char *marker)
{
    char cmd[200], line[64] = "";
    FILE *p;

    snprintf(cmd, sizeof(cmd), "pgrep -c -f '%s'", marker);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    if (!fgets(line, sizeof(line), p))
        line[0] = '\0';
    pclose(p);
    return atoi(line);
}

/* An agent killed with SIGKILL mid-task: its task (a shell and the
 * grandchild it waits for) does not run on beside the next attempt, the
 * lost attempt gets its metrics row, and the task finishes elsewhere. */
START_TEST(test_agent_killed_mid_task)
{
    json_t *p, *t;
    long long id, apid;
    struct rows m;
    bool lost_row = false;

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    json_decref(http_json(&d, "POST", "/v1/pilots",
                          "{\"name\": \"s8\", \"resource\": \"slurm\", \"cores_per_node\": 1}",
                          201));
    p = pilot_wait("s8", "RUNNING", 60);
    apid = jint(json_array_get(json_object_get(p, "agents"), 0), "pid");
    json_decref(p);
    ck_assert_int_gt(apid, 1);
    /* long inside SLURM, quick anywhere else; the sleep is a grandchild */
    id = submit_one("{\"shell\": \"if [ -n \\\"$SLURM_JOB_ID\\\" ]; then sleep 173 & wait; fi\"}");
    json_decref(task_wait_state(id, "RUNNING", 30));
    for (int i = 0; i < 50 && processes_with("sleep 17[3]") == 0; i++)
        usleep(100000);
    ck_assert_int_gt(processes_with("sleep 17[3]"), 0);
    ck_assert_int_eq(kill((pid_t)apid, SIGKILL), 0);

    t = task_wait_state(id, "PENDING", 30);
    ck_assert_int_eq(jint(t, "attempts"), 1);
    json_decref(t);
    for (int i = 0; i < 100 && processes_with("sleep 17[3]") > 0; i++)
        usleep(100000);
    ck_assert_msg(processes_with("sleep 17[3]") == 0,
                  "the killed agent's task still runs");
    json_decref(http_json(&d, "POST", "/v1/pilots", "{\"name\": \"l8\", \"cores\": 1}", 201));
    t = wait_task(&d, id, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_str_eq(jstr(t, "run_pilot"), "l8");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++)
        if (atoll(m.r[i][M_TASK]) == id && strcmp(m.r[i][M_ATTEMPT], "1") == 0)
            lost_row = strcmp(m.r[i][M_STATUS], "FAILED") == 0;
    ck_assert(lost_row);
    rows_free(&m);
}
END_TEST

/* qtaud killed and restarted while its SLURM pilot runs on: the pilot is
 * followed again by job id, its agent registers again, and the task that
 * finished while qtaud was down is reported once - one attempt, one
 * metrics row. */
START_TEST(test_daemon_restart_keeps_pilot)
{
    char listen[64];
    json_t *t;
    long long during, after;
    struct rows m;
    int rows = 0, status;

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    json_decref(http_json(&d, "POST", "/v1/pilots",
                          "{\"name\": \"s6\", \"resource\": \"slurm\", \"cores_per_node\": 2}",
                          201));
    json_decref(pilot_wait("s6", "RUNNING", 60));
    during = submit_one("{\"command\": [\"sleep\", \"1\"], \"pilot\": \"s6\"}");
    json_decref(task_wait_state(during, "RUNNING", 30));
    usleep(300000);   /* the lease is on disk */
    kill(d.pid, SIGKILL);
    while (waitpid(d.pid, &status, 0) < 0)
        ;
    d.pid = 0;
    /* the task ends while qtaud is down: its agent holds the result */
    sleep(3);
    /* the agents know qtaud by its address: the same port again */
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", d.port);
    cluster_start((const char *const[]){ "--no-local-pilot", "--listen", listen, NULL });
    t = http_json(&d, "GET", "/v1/pilots/s6", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "RUNNING");
    json_decref(t);
    t = wait_task(&d, during, 60);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 1);
    json_decref(t);
    after = submit_one("{\"command\": [\"true\"], \"pilot\": \"s6\"}");
    t = wait_task(&d, after, 60);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    json_decref(t);
    metrics_rows(&m);
    for (size_t i = 1; i < m.n; i++)
        rows += atoll(m.r[i][M_TASK]) == during;
    ck_assert_int_eq(rows, 1);
    rows_free(&m);
}
END_TEST

/* The token of pilot name, as the store keeps it (the test's way in: the
 * agents get it from their job's environment). */
static char *pilot_token(const char *name)
{
    char path[400], *tok = NULL;
    sqlite3 *db;
    sqlite3_stmt *st;

    snprintf(path, sizeof(path), "%s/qtaud.db", d.dir);
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT token FROM pilots WHERE name = ?1",
                                        -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        tok = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    ck_assert_ptr_nonnull(tok);
    return tok;
}

static long agent_call(const char *path, const char *body, const char *token,
                       char *field, size_t len)
{
    struct http_resp r;
    long status;

    ck_assert_int_eq(http_bearer(&d, "POST", path, body, token, &r), 0);
    status = r.status;
    if (field) {
        const char *f = jstr(json_object_get(r.json, "error"), "field");

        snprintf(field, len, "%s", f ? f : "");
    }
    http_resp_free(&r);
    return status;
}

/* Agent calls open with their own pilot's token only, while it is active,
 * and every malformed body is a 400 naming what is wrong. */
START_TEST(test_agent_endpoints)
{
    char *ta, *tb, body[300], field[64];
    json_t *p;
    long long ida, idb, aid;
    static const struct {
        const char *path, *rest, *field;   /* the body after pilot a's id */
    } bad[] = {
        { "/v1/agent/heartbeat", "\"agent_id\": 1, \"running\": 5}", "running" },
        { "/v1/agent/heartbeat", "\"agent_id\": 1, \"running\": [\"a\"]}", "running" },
        { "/v1/agent/lease", "\"agent_id\": 1, \"slots\": 1, \"deadline_secs\": -1}",
          "deadline_secs" },
        { "/v1/agent/lease", "\"agent_id\": 1, \"slots\": 0}", "slots" },
        { "/v1/agent/lease", "\"agent_id\": 1, \"slots\": 1, \"wait\": 3600}", "wait" },
        { "/v1/agent/report", "\"agent_id\": 1, \"results\": [{\"id\": 1,"
          " \"attempt\": 1, \"outcome\": \"EXITED\", \"exit_code\": \"zero\","
          " \"start_time\": \"2026-12-04T00:00:00Z\", \"end_time\": \"2026-12-04T00:00:01Z\"}]}",
          "results[0]" },
        { "/v1/agent/report", "\"agent_id\": 1, \"results\": [{\"id\": 1,"
          " \"attempt\": 1, \"outcome\": \"DONE\","
          " \"start_time\": \"2026-12-04T00:00:00Z\", \"end_time\": \"2026-12-04T00:00:01Z\"}]}",
          "results[0]" },
        { "/v1/agent/register", "\"hostname\": \"\", \"slots\": 1}", "hostname" },
    };

    cluster_start((const char *const[]){ "--no-local-pilot", NULL });
    p = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"a\", \"resource\": \"slurm\", \"cores_per_node\": 1}", 201);
    ida = jint(p, "id");
    json_decref(p);
    p = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"b\", \"resource\": \"slurm\", \"cores_per_node\": 1}", 201);
    idb = jint(p, "id");
    json_decref(p);
    ta = pilot_token("a");
    tb = pilot_token("b");
    p = pilot_wait("a", "RUNNING", 60);
    /* agent ids are qtaud's, across pilots */
    aid = jint(json_array_get(json_object_get(p, "agents"), 0), "id");
    json_decref(p);

    snprintf(body, sizeof(body), "{\"pilot\": %lld, \"agent_id\": %lld}", ida, aid);
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, "", NULL, 0), 401);
    /* qtaud's own token is not a pilot's */
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, d.token, NULL, 0), 401);
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, "not-the-token", NULL, 0), 401);
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, tb, NULL, 0), 401);
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, ta, NULL, 0), 200);
    /* a pilot token opens nothing but the agent calls, and never in a URL */
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat?token=x", body, ta, NULL, 0), 401);
    {
        static const char *const owner_only[][2] = {
            { "GET", "/v1/tasks" }, { "GET", "/v1/pilots" }, { "GET", "/v1/pilots/a" },
            { "GET", "/v1/metrics.csv" }, { "DELETE", "/v1/pilots/a" },
        };
        struct http_resp r;

        for (size_t i = 0; i < sizeof(owner_only) / sizeof(owner_only[0]); i++) {
            ck_assert_int_eq(http_bearer(&d, owner_only[i][0], owner_only[i][1], NULL,
                                         ta, &r), 0);
            ck_assert_msg(r.status == 401, "%s %s with a pilot token: %ld",
                          owner_only[i][0], owner_only[i][1], r.status);
            http_resp_free(&r);
        }
        ck_assert_int_eq(http_bearer(&d, "POST", "/v1/tasks", "{\"command\": \"true\"}",
                                     ta, &r), 0);
        ck_assert_int_eq(r.status, 401);
        http_resp_free(&r);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"pilot\": %lld, %s", ida, bad[i].rest);
        ck_assert_msg(agent_call(bad[i].path, body, ta, field, sizeof(field)) == 400,
                      "%s %s was not refused", bad[i].path, body);
        ck_assert_msg(strcmp(field, bad[i].field) == 0, "%s %s: field '%s', want '%s'",
                      bad[i].path, body, field, bad[i].field);
    }
    /* an ended pilot's token is gone */
    json_decref(http_json(&d, "DELETE", "/v1/pilots/b", NULL, 200));
    snprintf(body, sizeof(body), "{\"pilot\": %lld, \"agent_id\": 1}", idb);
    ck_assert_int_eq(agent_call("/v1/agent/heartbeat", body, tb, NULL, 0), 410);
    json_decref(http_json(&d, "DELETE", "/v1/pilots/a", NULL, 200));
    free(ta);
    free(tb);
}
END_TEST

/* SLURM's own words come back when it refuses a job. */
START_TEST(test_invalid_partition)
{
    json_t *e, *p;

    cluster_start(NULL);
    e = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"bad\", \"resource\": \"slurm\", \"queue\": \"nosuchpart\"}", 400);
    ck_assert_msg(strstr(jstr(json_object_get(e, "error"), "message"),
                         "Invalid partition name specified") != NULL,
                  "message: %s", jstr(json_object_get(e, "error"), "message"));
    json_decref(e);
    p = http_json(&d, "GET", "/v1/pilots/bad", NULL, 200);
    ck_assert_str_eq(jstr(p, "state"), "FAILED");
    ck_assert_msg(strstr(jstr(p, "reason"), "Invalid partition") != NULL, "%s",
                  jstr(p, "reason"));
    json_decref(p);
}
END_TEST

/* With slurmctld stopped a SLURM pilot is a 503, and the daemon goes on
 * serving: health, and tasks on the local pilot. */
START_TEST(test_slurmctld_down)
{
    char path[300];
    FILE *f;
    long pid = 0;
    json_t *e, *t;
    long long id;

    cluster_start(NULL);
    snprintf(path, sizeof(path), "%s/run/slurmctld.pid", cluster);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    ck_assert_int_eq(kill((pid_t)pid, SIGTERM), 0);
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
        usleep(100000);
    e = http_json(&d, "POST", "/v1/pilots", "{\"resource\": \"slurm\"}", 503);
    ck_assert_msg(strstr(jstr(json_object_get(e, "error"), "message"),
                         "cannot be reached") != NULL,
                  "message: %s", jstr(json_object_get(e, "error"), "message"));
    json_decref(e);
    json_decref(http_json(&d, "GET", "/v1/health", NULL, 200));
    id = submit_one("{\"command\": [\"true\"], \"pilot\": \"local\"}");
    t = wait_task(&d, id, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    json_decref(t);
}
END_TEST

#ifdef HAVE_SLURM
/* SLURM's state bits reach the pilot through one table: CONFIGURING is
 * still PENDING, COMPLETING is not an end, a walltime is DONE.  (Only the
 * constants come from <slurm/slurm.h>; the mapping is qtaud's.) */
#include <slurm/slurm.h>

START_TEST(test_state_table)
{
    static const struct {
        uint32_t state;
        const char *name;
        enum pilot_state pilot;
        bool ended;
    } cases[] = {
        { JOB_PENDING, "PENDING", PILOT_PENDING, false },
        { JOB_PENDING | JOB_CONFIGURING, "PENDING+CONFIGURING", PILOT_PENDING, false },
        { JOB_RUNNING | JOB_CONFIGURING, "RUNNING+CONFIGURING", PILOT_PENDING, false },
        { JOB_RUNNING, "RUNNING", PILOT_RUNNING, false },
        { JOB_SUSPENDED, "SUSPENDED", PILOT_RUNNING, false },
        { JOB_COMPLETE | JOB_COMPLETING, "COMPLETED+COMPLETING", PILOT_DONE, false },
        { JOB_COMPLETE, "COMPLETED", PILOT_DONE, true },
        { JOB_CANCELLED | JOB_COMPLETING, "CANCELLED+COMPLETING", PILOT_CANCELED, false },
        { JOB_CANCELLED, "CANCELLED", PILOT_CANCELED, true },
        { JOB_TIMEOUT, "TIMEOUT", PILOT_DONE, true },
        { JOB_FAILED, "FAILED", PILOT_FAILED, true },
        { JOB_NODE_FAIL, "NODE_FAIL", PILOT_FAILED, true },
        { JOB_PREEMPTED, "PREEMPTED", PILOT_FAILED, true },
        { JOB_BOOT_FAIL, "BOOT_FAIL", PILOT_FAILED, true },
        { JOB_DEADLINE, "DEADLINE", PILOT_FAILED, true },
        { JOB_OOM, "OUT_OF_MEMORY", PILOT_FAILED, true },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct slurm_job j;

        memset(&j, 0, sizeof(j));
        slurm_drv_map_state(cases[i].state, &j);
        ck_assert_str_eq(j.slurm_state, cases[i].name);
        ck_assert_msg(j.state == cases[i].pilot, "%s: pilot state %d", cases[i].name,
                      (int)j.state);
        ck_assert_msg(j.ended == cases[i].ended, "%s: ended %d", cases[i].name, j.ended);
    }
}
END_TEST
#endif

static Suite *slurm_suite(bool with_cluster)
{
    Suite *s = suite_create("slurm");
    TCase *tc = tcase_create("description");

    tcase_add_checked_fixture(tc, desc_setup, desc_teardown);
    tcase_add_test(tc, test_optional_strings);
    tcase_add_test(tc, test_working_directory);
    tcase_add_test(tc, test_every_field_absent);
    tcase_add_test(tc, test_shape_and_walltime);
    tcase_add_test(tc, test_bad_values);
    tcase_add_test(tc, test_script_and_environment);
#ifdef HAVE_SLURM
    tcase_add_test(tc, test_state_table);
#endif
    suite_add_tcase(s, tc);
    if (!with_cluster)
        return s;
    tc = tcase_create("cluster");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, NULL, cluster_teardown);
    tcase_add_test(tc, test_pilot_runs_tasks);
    tcase_add_test(tc, test_scancel_requeues);
    tcase_add_test(tc, test_walltime_not_leased);
    tcase_add_test(tc, test_agent_lost);
    tcase_add_test(tc, test_agent_endpoints);
    tcase_add_test(tc, test_daemon_restart_keeps_pilot);
    tcase_add_test(tc, test_agent_killed_mid_task);
    tcase_add_test(tc, test_kill_loop_with_agent);
    tcase_add_test(tc, test_invalid_partition);
    tcase_add_test(tc, test_slurmctld_down);    /* last: it stops slurmctld */
    suite_add_tcase(s, tc);
    return s;
}

/* Built without libslurm (configure --without-slurm): a SLURM pilot is a
 * 400 that says why, naming the field. */
START_TEST(test_without_slurm)
{
    json_t *e;

    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    e = http_json(&d, "POST", "/v1/pilots", "{\"resource\": \"slurm\"}", 400);
    ck_assert_str_eq(jstr(json_object_get(e, "error"), "field"), "resource");
    ck_assert_msg(strstr(jstr(json_object_get(e, "error"), "message"),
                         "without SLURM support") != NULL, "%s",
                  jstr(json_object_get(e, "error"), "message"));
    json_decref(e);
}
END_TEST

static int run_without_slurm(void)
{
    Suite *s = suite_create("slurm");
    TCase *tc = tcase_create("without-slurm");
    SRunner *sr;
    int failed;

    fprintf(stderr, "test_slurm: built without SLURM: only the refusal is tested\n");
    tcase_add_checked_fixture(tc, NULL, cluster_teardown);
    tcase_add_test(tc, test_without_slurm);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(void)
{
    bool in_ci = getenv("CI") != NULL;

    if (!slurm_drv_available())
        return run_without_slurm();
    bool with_cluster = false;
    SRunner *sr;
    int failed, rc;

    log_threshold = LOG_LVL_WARN;
    snprintf(cluster, sizeof(cluster), "/tmp/qtaud-slurm-XXXXXX");
    if (!mkdtemp(cluster)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    rc = fixture("start");
    if (rc == 0) {
        with_cluster = true;
    } else if (rc == 77 && !in_ci) {
        fprintf(stderr, "test_slurm: SKIPPING the cluster tests: SLURM could not "
                        "start here (see the fixture's words above)\n");
    } else {
        fprintf(stderr, "test_slurm: the SLURM fixture failed (exit %d)%s\n", rc,
                in_ci ? "; under CI SLURM must start" : "");
        fixture("stop");
        return EXIT_FAILURE;
    }
    sr = srunner_create(slurm_suite(with_cluster));
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    fixture("stop");
    {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", cluster);
        if (system(cmd) != 0)
            fprintf(stderr, "test_slurm: could not remove %s\n", cluster);
    }
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
