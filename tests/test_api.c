/*
 * test_api.c - the HTTP API against a live qtaud.
 *
 * Each test starts the real daemon ($QTAUD_BIN) on a free loopback port
 * with its own temporary state dir and talks to it with libcurl, as a user
 * would with curl.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/buf.h"
#include "common/csv.h"
#include "tests/client.h"

static struct daemon d;

static void start(const char *const *extra)
{
    daemon_must_start(&d, extra);
}

/* Stops the daemon the way systemd would; it must exit 0 (under ASan a
 * leak or error at exit makes it fail, and so the test). */
static void teardown(void)
{
    daemon_must_stop(&d);
}

static long long submit(const char *body)
{
    return task_submit(&d, body);
}

/* The metrics CSV parsed into records (header first). */
struct csv_table {
    char ***rows;
    size_t *nfields;
    size_t n;
};

static void csv_fetch(const char *path, struct csv_table *tab)
{
    struct http_resp r;
    size_t pos = 0, cap = 0;
    char **fields;
    size_t nf;
    int rc;

    memset(tab, 0, sizeof(*tab));
    ck_assert_int_eq(http(&d, "GET", path, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strncmp(r.content_type, "text/csv", 8) == 0, "%s", r.content_type);
    while ((rc = csv_read_record(r.body, r.len, &pos, &fields, &nf)) == 1) {
        if (tab->n == cap) {
            cap = cap ? cap * 2 : 64;
            tab->rows = realloc(tab->rows, cap * sizeof(*tab->rows));
            tab->nfields = realloc(tab->nfields, cap * sizeof(*tab->nfields));
        }
        tab->rows[tab->n] = fields;
        tab->nfields[tab->n++] = nf;
    }
    ck_assert_msg(rc == 0, "malformed CSV at byte %zu", pos);
    http_resp_free(&r);
}

static void csv_free(struct csv_table *tab)
{
    for (size_t i = 0; i < tab->n; i++)
        csv_free_record(tab->rows[i], tab->nfields[i]);
    free(tab->rows);
    free(tab->nfields);
}

enum { C_COMPLETION, C_ERROR, C_EXEC, C_STAGING_BYTES, C_PILOT_SCHED,
       C_STAGING_SECS, C_STATUS, C_SUBMIT, C_TASK_ID, C_WAIT, C_NAME,
       C_ATTEMPT, C_EXIT, C_SIGNAL, C_PILOT_ID, C_HOST, C_NCOLS };

/* Rows of the table for task id. */
static size_t csv_rows_for(const struct csv_table *tab, long long id,
                           char ***first)
{
    size_t n = 0;
    char ids[32];

    snprintf(ids, sizeof(ids), "%lld", id);
    for (size_t i = 1; i < tab->n; i++) {
        if (strcmp(tab->rows[i][C_TASK_ID], ids) == 0) {
            if (n == 0 && first)
                *first = tab->rows[i];
            n++;
        }
    }
    return n;
}

START_TEST(test_health_and_routes)
{
    struct http_resp r;
    json_t *h;

    start(NULL);
    h = http_json(&d, "GET", "/v1/health", NULL, 200);
    ck_assert_ptr_nonnull(h);
    ck_assert_str_eq(jstr(h, "status"), "ok");
    ck_assert_str_eq(jstr(h, "version"), PACKAGE_VERSION);
    json_decref(h);

    ck_assert_int_eq(http(&d, "GET", "/v1/nothing", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "code"), "not_found");
    http_resp_free(&r);

    ck_assert_int_eq(http(&d, "PUT", "/v1/tasks", "{}", NULL, &r), 0);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "POST, GET, HEAD");
    ck_assert_ptr_nonnull(json_object_get(r.json, "error"));
    http_resp_free(&r);

    /* HEAD is GET without the body (curl -I), access rules included */
    ck_assert_int_eq(http(&d, "HEAD", "/v1/health", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_str_eq(r.content_type, "application/json");
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "HEAD", "/v1/tasks", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_resp_free(&r);
    ck_assert_int_eq(http_bearer(&d, "HEAD", "/v1/tasks", NULL, "", &r), 0);
    ck_assert_int_eq(r.status, 401);
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "HEAD", "/v1/tasks/999", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    http_resp_free(&r);

    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/999", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    http_resp_free(&r);

    ck_assert_int_eq(http(&d, "GET", "/v1/tasks?bogus=1", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "field"), "bogus");
    http_resp_free(&r);

    /* a filter given twice: which one counts would be a guess */
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks?state=FAILED&limit=5&state=PENDING", NULL,
                          NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "field"), "state");
    ck_assert(strstr(jstr(json_object_get(r.json, "error"), "message"), "more than once"));
    http_resp_free(&r);
}
END_TEST

/* An unknown enumeration name is a 400 listing the accepted names. */
START_TEST(test_enum_errors)
{
    static const struct {
        const char *method, *path, *body, *field, *accepted;
    } cases[] = {
        { "GET", "/v1/tasks?state=DONE", NULL, "state",
          "PENDING, RUNNING, SUCCESS, FAILED, CANCELED" },
        { "POST", "/v1/pilots", "{\"resource\": \"pbs\"}", "resource",
          "local, slurm" },
        { "POST", "/v1/pilots", "{\"engine\": \"dask\"}", "engine", "qtau" },
    };

    start(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_resp r;
        json_t *e;

        ck_assert_int_eq(http(&d, cases[i].method, cases[i].path, cases[i].body,
                              NULL, &r), 0);
        ck_assert_int_eq(r.status, 400);
        e = json_object_get(r.json, "error");
        ck_assert_str_eq(jstr(e, "code"), "invalid_argument");
        ck_assert_str_eq(jstr(e, "field"), cases[i].field);
        ck_assert_msg(strstr(jstr(e, "message"), cases[i].accepted),
                      "message '%s' lacks '%s'", jstr(e, "message"),
                      cases[i].accepted);
        http_resp_free(&r);
    }
}
END_TEST

/* Bad requests get the JSON error naming the field and change nothing. */
START_TEST(test_bad_input)
{
    static const struct {
        const char *body;
        const char *ctype;
        long status;
        const char *field;  /* "" when none is named */
    } cases[] = {
        { "{\"command\": [\"true\"]", NULL, 400, "" },           /* malformed */
        { "", NULL, 400, "" },
        { "[1, 2", NULL, 400, "" },
        { "{\"command\": [\"true\"]}", "text/plain", 415, "" },
        { "{\"command\": [\"true\"]}", "application/x-www-form-urlencoded", 415, "" },
        { "42", NULL, 400, "" },
        { "{\"command\": \"true\"}", NULL, 400, "command" },     /* wrong types */
        { "{\"command\": [1]}", NULL, 400, "command" },
        { "{\"command\": [\"true\"], \"cores\": \"2\"}", NULL, 400, "cores" },
        { "{\"command\": [\"true\"], \"timeout\": \"5\"}", NULL, 400, "timeout" },
        { "{\"command\": [\"true\"], \"env\": [\"A=1\"]}", NULL, 400, "env" },
        { "{\"command\": [\"true\"], \"name\": 7}", NULL, 400, "name" },
        { "{\"command\": [\"true\"], \"colour\": \"red\"}", NULL, 400, "colour" },
        { "{\"command\": []}", NULL, 400, "command" },           /* empty argv */
        { "{\"command\": [\"\"]}", NULL, 400, "command" },
        { "{\"command\": [\"true\"], \"shell\": \"true\"}", NULL, 400, "command" },
        { "{\"name\": \"x\"}", NULL, 400, "command" },           /* neither */
        { "{\"command\": [\"true\"], \"cores\": -1}", NULL, 400, "cores" },
        { "{\"command\": [\"true\"], \"cores\": 0}", NULL, 400, "cores" },
        { "{\"command\": [\"true\"], \"cores\": 99999999999}", NULL, 400, "cores" },
        { "{\"command\": [\"true\"], \"timeout\": -5}", NULL, 400, "timeout" },
        { "{\"command\": [\"true\"], \"timeout\": 1e300}", NULL, 400, "timeout" },
        { "{\"command\": [\"true\"], \"max_retries\": -1}", NULL, 400, "max_retries" },
        { "{\"command\": [\"true\"], \"max_retries\": 1000000}", NULL, 400, "max_retries" },
        { "{\"command\": [\"true\"], \"cwd\": \"relative/dir\"}", NULL, 400, "cwd" },
        { "{\"command\": [\"true\"], \"env\": {\"1BAD\": \"x\"}}", NULL, 400, "env" },
        { "{\"command\": [\"a\\u0000b\"]}", NULL, 400, "command" },
        { "{\"command\": [\"true\"], \"pilot\": \"nosuch\"}", NULL, 400, "pilot" },
        { "{\"command\": [\"true\"], \"pilot\": \"local\", \"cores\": 4096}", NULL, 400, "cores" },
        { "[]", NULL, 400, "" },
        { "[{\"command\": [\"true\"]}, {\"command\": [\"true\"]}, {\"shell\": 5}]",
          NULL, 400, "[2].shell" },
        { "[{\"command\": [\"true\"]}, {\"command\": [\"true\"], \"pilot\": \"nosuch\"}]",
          NULL, 400, "[1].pilot" },
    };
    json_t *list;

    start((const char *const[]){ "--local-cores", "2", NULL });
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_resp r;
        json_t *e;

        ck_assert_int_eq(http(&d, "POST", "/v1/tasks", cases[i].body,
                              cases[i].ctype, &r), 0);
        ck_assert_msg(r.status == cases[i].status, "case %zu (%s): status %ld: %s",
                      i, cases[i].body, r.status, r.body);
        ck_assert_msg(r.json != NULL, "case %zu: error body is not JSON", i);
        e = json_object_get(r.json, "error");
        ck_assert_msg(e && jstr(e, "message")[0], "case %zu: no message", i);
        ck_assert_msg(strcmp(jstr(e, "field"), cases[i].field) == 0,
                      "case %zu (%s): field '%s', wanted '%s'", i, cases[i].body,
                      jstr(e, "field"), cases[i].field);
        http_resp_free(&r);
    }
    /* nothing from any of them was stored */
    list = http_json(&d, "GET", "/v1/tasks", NULL, 200);
    ck_assert_ptr_nonnull(list);
    ck_assert_int_eq(json_array_size(json_object_get(list, "tasks")), 0);
    json_decref(list);
}
END_TEST

struct failure_case {
    const char *body;
    const char *error_msg;
    int exit_code;      /* -1: null */
    int sig;            /* 0: null */
};

/* Each way a task can fail ends FAILED with the right error_msg and a
 * metrics row, and a long-poll wait on it returns FAILED. */
START_TEST(test_failures_reported)
{
    static const struct failure_case cases[] = {
        { "{\"shell\": \"exit 3\"}", "exit status 3", 3, 0 },
        { "{\"shell\": \"kill -9 $$\"}", "killed by signal 9 (SIGKILL)", -1, 9 },
        { "{\"command\": [\"qtaud-no-such-command\"]}",
          "command not found: qtaud-no-such-command", -1, 0 },
        { "{\"command\": [\"sleep\", \"30\"], \"timeout\": 0.5}",
          "timed out after 0.5 s", -1, 15 },
    };
    long long ids[4];
    struct csv_table tab;

    start(NULL);
    for (int i = 0; i < 4; i++)
        ids[i] = submit(cases[i].body);
    for (int i = 0; i < 4; i++) {
        char path[64];
        json_t *t;

        /* one long poll, long enough for every case */
        snprintf(path, sizeof(path), "/v1/tasks/%lld?wait=20", ids[i]);
        t = http_json(&d, "GET", path, NULL, 200);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(jstr(t, "state"), "FAILED");
        ck_assert_str_eq(jstr(t, "error_msg"), cases[i].error_msg);
        ck_assert_int_eq(jint(t, "exit_code"), cases[i].exit_code);
        if (cases[i].sig)
            ck_assert_int_eq(jint(t, "signal"), cases[i].sig);
        json_decref(t);
    }
    csv_fetch("/v1/metrics.csv", &tab);
    ck_assert_int_eq(tab.n, 5);
    for (int i = 0; i < 4; i++) {
        char **row = NULL;

        ck_assert_int_eq(csv_rows_for(&tab, ids[i], &row), 1);
        ck_assert_str_eq(row[C_STATUS], "FAILED");
        ck_assert_str_eq(row[C_ERROR], cases[i].error_msg);
        ck_assert_str_eq(row[C_ATTEMPT], "1");
        ck_assert_str_eq(row[C_PILOT_SCHED], "ANY");
        ck_assert_str_eq(row[C_PILOT_ID], "1");
        ck_assert_str_ne(row[C_HOST], "");
    }
    csv_free(&tab);
}
END_TEST

START_TEST(test_success_output_and_env)
{
    json_t *t;
    struct http_resp r;
    long long id;

    start(NULL);
    id = submit("{\"name\": \"greet\", \"shell\": \"echo hello $WHO; echo oops >&2; pwd\","
                " \"env\": {\"WHO\": \"world\"}, \"cwd\": \"/tmp\"}");
    t = wait_task(&d, id, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "exit_code"), 0);
    ck_assert_str_eq(jstr(t, "name"), "greet");
    ck_assert_str_eq(jstr(t, "run_pilot"), "local");
    ck_assert(json_is_null(json_object_get(t, "error_msg")));
    json_decref(t);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/1/stdout", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "hello world\n/tmp\n");
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/1/stderr", NULL, NULL, &r), 0);
    ck_assert_str_eq(r.body, "oops\n");
    http_resp_free(&r);
}
END_TEST

/* Output files: a task that prints nothing leaves none; a running task's
 * output can be read while it runs; a retry that prints nothing does not
 * leave the failed attempt's output standing as its own. */
START_TEST(test_output_files)
{
    char path[400];
    struct http_resp r;
    json_t *t;
    long long quiet, live, retry;

    start(NULL);
    quiet = submit("{\"command\": [\"true\"]}");
    json_decref(wait_task(&d, quiet, 20));
    snprintf(path, sizeof(path), "%s/output/%lld.out", d.dir, quiet);
    ck_assert_msg(access(path, F_OK) < 0 && errno == ENOENT, "%s exists", path);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/1/stdout", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.len, 0);
    http_resp_free(&r);

    live = submit("{\"shell\": \"echo started; exec sleep 30\"}");
    for (int i = 0; i < 250; i++) {
        ck_assert_int_eq(http(&d, "GET", "/v1/tasks/2/stdout", NULL, NULL, &r), 0);
        if (r.status == 200 && r.len > 0)
            break;
        http_resp_free(&r);
        usleep(20000);
    }
    ck_assert_str_eq(r.body, "started\n");
    http_resp_free(&r);
    json_decref(http_json(&d, "DELETE", "/v1/tasks/2", NULL, 200));
    t = wait_task(&d, live, 20);
    ck_assert_str_eq(jstr(t, "state"), "CANCELED");
    json_decref(t);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/2/stdout", NULL, NULL, &r), 0);
    ck_assert_str_eq(r.body, "started\n");
    http_resp_free(&r);

    /* first attempt prints and fails, the second prints nothing */
    retry = submit("{\"shell\": \"if [ -e /tmp/qtaud-test-retry.$PPID ]; then exit 0; fi;"
                   " touch /tmp/qtaud-test-retry.$PPID; echo first; exit 1\","
                   " \"max_retries\": 1}");
    t = wait_task(&d, retry, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/3/stdout", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.len, 0);
    http_resp_free(&r);
    {
        char marker[64];

        snprintf(marker, sizeof(marker), "/tmp/qtaud-test-retry.%d", (int)d.pid);
        unlink(marker);
    }
}
END_TEST

START_TEST(test_cancel)
{
    json_t *p, *t, *pending;
    long long busy, waiting;
    struct csv_table tab;
    char **row = NULL;
    struct http_resp r;

    start(NULL);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"one\", \"cores\": 1}", 201);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(jstr(p, "state"), "RUNNING");
    json_decref(p);
    busy = submit("{\"command\": [\"sleep\", \"30\"], \"pilot\": \"one\"}");
    waiting = submit("{\"command\": [\"true\"], \"pilot\": \"one\"}");
    /* the first holds the only slot; wait until it runs */
    for (int i = 0; i < 200; i++) {
        t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
        if (strcmp(jstr(t, "state"), "RUNNING") == 0) {
            json_decref(t);
            break;
        }
        json_decref(t);
        usleep(20000);
    }
    pending = http_json(&d, "DELETE", "/v1/tasks/2", NULL, 200);
    ck_assert_ptr_nonnull(pending);
    ck_assert_str_eq(jstr(pending, "state"), "CANCELED");
    json_decref(pending);

    t = http_json(&d, "DELETE", "/v1/tasks/1", NULL, 200);
    ck_assert_ptr_nonnull(t);
    json_decref(t);
    t = wait_task(&d, busy, 20);
    ck_assert_str_eq(jstr(t, "state"), "CANCELED");
    json_decref(t);

    /* a second cancel is a conflict */
    ck_assert_int_eq(http(&d, "DELETE", "/v1/tasks/1", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 409);
    http_resp_free(&r);

    csv_fetch("/v1/metrics.csv", &tab);
    ck_assert_int_eq(csv_rows_for(&tab, busy, &row), 1);
    ck_assert_str_eq(row[C_STATUS], "CANCELED");
    ck_assert_str_eq(row[C_PILOT_SCHED], "one");
    ck_assert_int_eq(csv_rows_for(&tab, waiting, &row), 1);
    ck_assert_str_eq(row[C_STATUS], "CANCELED");
    ck_assert_str_eq(row[C_PILOT_ID], "");     /* it never ran */
    csv_free(&tab);
}
END_TEST

START_TEST(test_retries)
{
    json_t *t;
    struct csv_table tab;
    long long id;

    start(NULL);
    id = submit("{\"shell\": \"exit 1\", \"max_retries\": 2, \"name\": \"flaky\"}");
    t = wait_task(&d, id, 20);
    ck_assert_str_eq(jstr(t, "state"), "FAILED");
    ck_assert_int_eq(jint(t, "attempts"), 3);
    json_decref(t);
    csv_fetch("/v1/metrics.csv", &tab);
    ck_assert_int_eq(csv_rows_for(&tab, id, NULL), 3);
    for (size_t i = 1; i < tab.n; i++) {
        char want[24];

        snprintf(want, sizeof(want), "%zu", i);
        ck_assert_str_eq(tab.rows[i][C_ATTEMPT], want);
        ck_assert_str_eq(tab.rows[i][C_NAME], "flaky");
    }
    csv_free(&tab);
}
END_TEST

/* 2,000 tasks finishing together on an 8-slot pilot leave exactly 2,000
 * well-formed CSV rows that match the tasks field for field, including
 * error messages with commas, quotes and newlines. */
START_TEST(test_metrics_csv_under_load)
{
    enum { N = 2000 };
    /* argv[0] of the failing tasks ends up in error_msg */
    static const char odd_cmd[] = "no,such \\\"cmd\\\"\\nline2";
    struct buf body = BUF_INIT;
    struct csv_table tab;
    json_t *resp, *ids, *p;
    long long first;
    int seen = 0;

    start(NULL);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"p8\", \"cores\": 8}", 201);
    ck_assert_ptr_nonnull(p);
    json_decref(p);
    buf_addc(&body, '[');
    for (int i = 0; i < N; i++) {
        if (i)
            buf_addc(&body, ',');
        if (i % 10 == 3)
            buf_addf(&body, "{\"command\": [\"%s\"], \"pilot\": \"p8\", \"name\": \"t%d\"}",
                     odd_cmd, i);
        else if (i % 10 == 7)
            buf_addf(&body, "{\"shell\": \"exit 2\", \"pilot\": \"p8\", \"name\": \"t%d\"}", i);
        else
            buf_addf(&body, "{\"command\": [\"true\"], \"pilot\": \"p8\", \"name\": \"t,%d\"}", i);
    }
    buf_addc(&body, ']');
    resp = http_json(&d, "POST", "/v1/tasks", body.data, 201);
    buf_release(&body);
    ck_assert_ptr_nonnull(resp);
    ids = json_object_get(resp, "ids");
    ck_assert_int_eq(json_array_size(ids), N);
    first = json_integer_value(json_array_get(ids, 0));
    json_decref(resp);

    /* wait for all of them through the pilot's counts */
    for (int i = 0; i < 6000; i++) {
        json_t *counts;

        p = http_json(&d, "GET", "/v1/pilots/p8", NULL, 200);
        counts = json_object_get(p, "tasks");
        seen = (int)(jint(counts, "SUCCESS") + jint(counts, "FAILED"));
        json_decref(p);
        if (seen == N)
            break;
        usleep(20000);
    }
    ck_assert_int_eq(seen, N);

    csv_fetch("/v1/metrics.csv?pilot=p8", &tab);
    ck_assert_int_eq(tab.n, N + 1);
    ck_assert_str_eq(tab.rows[0][0], "completion_time");
    for (size_t i = 1; i < tab.n; i++) {
        long long id = strtoll(tab.rows[i][C_TASK_ID], NULL, 10);
        int k = (int)(id - first);
        char path[64], want_name[32];
        json_t *t;

        ck_assert_int_eq(tab.nfields[i], C_NCOLS);
        ck_assert_int_ge(k, 0);
        ck_assert_int_lt(k, N);
        snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", path, NULL, 200);
        ck_assert_str_eq(tab.rows[i][C_STATUS], jstr(t, "state"));
        ck_assert_str_eq(tab.rows[i][C_NAME], jstr(t, "name"));
        if (k % 10 == 3) {
            ck_assert_str_eq(tab.rows[i][C_ERROR],
                             "command not found: no,such \"cmd\"\nline2");
            ck_assert_str_eq(tab.rows[i][C_STATUS], "FAILED");
        } else if (k % 10 == 7) {
            ck_assert_str_eq(tab.rows[i][C_ERROR], "exit status 2");
            ck_assert_str_eq(tab.rows[i][C_EXIT], "2");
        } else {
            snprintf(want_name, sizeof(want_name), "t,%d", k);
            ck_assert_str_eq(tab.rows[i][C_NAME], want_name);
            ck_assert_str_eq(tab.rows[i][C_ERROR], "");
            ck_assert_str_eq(tab.rows[i][C_STATUS], "SUCCESS");
        }
        ck_assert_str_eq(tab.rows[i][C_ERROR],
                         json_is_null(json_object_get(t, "error_msg"))
                             ? "" : jstr(t, "error_msg"));
        ck_assert_str_eq(tab.rows[i][C_PILOT_SCHED], "p8");
        ck_assert_str_eq(tab.rows[i][C_ATTEMPT], "1");
        json_decref(t);
    }
    /* every task exactly once */
    for (int k = 0; k < N; k++)
        ck_assert_int_eq(csv_rows_for(&tab, first + k, NULL), 1);
    csv_free(&tab);
}
END_TEST

START_TEST(test_list_filters_and_paging)
{
    json_t *page, *tasks;
    long long after = 0;
    int total = 0, pages = 0;
    struct http_resp r;

    start(NULL);
    ck_assert_int_eq(http(&d, "POST", "/v1/tasks",
                          "[{\"command\": [\"true\"], \"name\": \"a\"},"
                          " {\"command\": [\"true\"], \"name\": \"b\"},"
                          " {\"shell\": \"exit 1\", \"name\": \"a\"},"
                          " {\"command\": [\"true\"], \"name\": \"a\"},"
                          " {\"command\": [\"true\"], \"name\": \"c\"}]",
                          NULL, &r), 0);
    ck_assert_int_eq(r.status, 201);
    http_resp_free(&r);
    for (int i = 1; i <= 5; i++)
        json_decref(wait_task(&d, i, 20));

    do {
        char path[96];

        snprintf(path, sizeof(path), "/v1/tasks?limit=2&after=%lld", after);
        page = http_json(&d, "GET", path, NULL, 200);
        ck_assert_ptr_nonnull(page);
        tasks = json_object_get(page, "tasks");
        total += (int)json_array_size(tasks);
        pages++;
        after = json_is_null(json_object_get(page, "next"))
                    ? -1 : json_integer_value(json_object_get(page, "next"));
        json_decref(page);
    } while (after > 0);
    ck_assert_int_eq(total, 5);
    ck_assert_int_eq(pages, 3);

    page = http_json(&d, "GET", "/v1/tasks?name=a", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(page, "tasks")), 3);
    json_decref(page);
    page = http_json(&d, "GET", "/v1/tasks?name=a&state=FAILED", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(page, "tasks")), 1);
    json_decref(page);
    page = http_json(&d, "GET", "/v1/tasks?pilot=local&state=SUCCESS", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(page, "tasks")), 4);
    json_decref(page);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks?limit=0", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks?pilot=nosuch", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    http_resp_free(&r);
}
END_TEST

START_TEST(test_pilots)
{
    json_t *p, *list;
    struct http_resp r;

    start((const char *const[]){ "--local-cores", "3", NULL });
    p = http_json(&d, "GET", "/v1/pilots/local", NULL, 200);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(jint(p, "cores"), 3);
    ck_assert_str_eq(jstr(p, "resource"), "local");
    json_decref(p);
    p = http_json(&d, "POST", "/v1/pilots", "{\"resource\": \"local\", \"cores\": 2}", 201);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(jstr(p, "name"), "pilot-2");
    json_decref(p);
    ck_assert_int_eq(http(&d, "POST", "/v1/pilots", "{\"name\": \"pilot-2\"}", NULL, &r), 0);
    ck_assert_int_eq(r.status, 409);
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "POST", "/v1/pilots", "{\"walltime\": 10}", NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "field"), "walltime");
    http_resp_free(&r);

    p = http_json(&d, "DELETE", "/v1/pilots/2", NULL, 200);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(jstr(p, "state"), "CANCELED");
    json_decref(p);
    /* a task for an ended pilot is a conflict */
    ck_assert_int_eq(http(&d, "POST", "/v1/tasks",
                          "{\"command\": [\"true\"], \"pilot\": \"pilot-2\"}", NULL, &r), 0);
    ck_assert_int_eq(r.status, 409);
    http_resp_free(&r);
    list = http_json(&d, "GET", "/v1/pilots", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(list, "pilots")), 2);
    json_decref(list);
}
END_TEST

/* Cancelling a pilot: tasks that named it fail with its reason, ANY tasks
 * running on it go back to the queue and finish elsewhere. */
START_TEST(test_pilot_cancel_requeues)
{
    json_t *p, *t;
    long long named, any;

    start((const char *const[]){ "--no-local-pilot", NULL });
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"a\", \"cores\": 2}", 201);
    json_decref(p);
    named = submit("{\"command\": [\"sleep\", \"30\"], \"pilot\": \"a\"}");
    any = submit("{\"shell\": \"sleep 1\"}");
    for (int i = 0; i < 200; i++) {
        p = http_json(&d, "GET", "/v1/pilots/a", NULL, 200);
        if (jint(json_object_get(p, "tasks"), "RUNNING") == 2) {
            json_decref(p);
            break;
        }
        json_decref(p);
        usleep(20000);
    }
    p = http_json(&d, "DELETE", "/v1/pilots/a", NULL, 200);
    json_decref(p);
    t = wait_task(&d, named, 20);
    ck_assert_str_eq(jstr(t, "state"), "FAILED");
    ck_assert_str_eq(jstr(t, "error_msg"), "pilot a ended: canceled by user");
    json_decref(t);
    /* the ANY task waits for another pilot, then runs there; its worker
     * records the stop on its own time, after the named task's */
    for (int i = 0; i < 250; i++) {
        t = http_json(&d, "GET", "/v1/tasks/2", NULL, 200);
        if (strcmp(jstr(t, "state"), "RUNNING") != 0)
            break;
        json_decref(t);
        t = NULL;
        usleep(20000);
    }
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");
    json_decref(t);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"b\", \"cores\": 1}", 201);
    json_decref(p);
    t = wait_task(&d, any, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_str_eq(jstr(t, "run_pilot"), "b");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);
}
END_TEST

/* A task goes back to the queue each time its pilot is lost, up to
 * max-requeues times; the next loss ends it FAILED with that pilot's
 * reason, and none of it used up max_retries. */
START_TEST(test_requeue_limit)
{
    const char *names[] = { "p1", "p2" };
    json_t *p, *t;
    char body[96], path[64];
    long long id;

    start((const char *const[]){ "--no-local-pilot", "--max-requeues", "1", NULL });
    id = submit("{\"command\": [\"sleep\", \"30\"], \"max_retries\": 5}");
    for (int k = 0; k < 2; k++) {
        snprintf(body, sizeof(body), "{\"name\": \"%s\", \"cores\": 1}", names[k]);
        json_decref(http_json(&d, "POST", "/v1/pilots", body, 201));
        for (int i = 0; i < 250; i++) {
            t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
            if (strcmp(jstr(t, "state"), "RUNNING") == 0 && jint(t, "attempts") == k + 1) {
                json_decref(t);
                break;
            }
            json_decref(t);
            usleep(20000);
        }
        snprintf(path, sizeof(path), "/v1/pilots/%s", names[k]);
        p = http_json(&d, "DELETE", path, NULL, 200);
        json_decref(p);
        for (int i = 0; i < 250; i++) {
            t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
            if (strcmp(jstr(t, "state"), "RUNNING") != 0)
                break;
            json_decref(t);
            t = NULL;
            usleep(20000);
        }
        ck_assert_ptr_nonnull(t);
        if (k == 0) {
            ck_assert_str_eq(jstr(t, "state"), "PENDING");
        } else {
            ck_assert_str_eq(jstr(t, "state"), "FAILED");
            ck_assert_str_eq(jstr(t, "error_msg"), "pilot p2 ended: canceled by user");
        }
        ck_assert_int_eq(jint(t, "attempts"), k + 1);
        json_decref(t);
    }
    (void)id;
}
END_TEST

/* Cancels pilot name while task id runs on it; returns the task's state
 * once its worker has recorded the stop. */
static json_t *cancel_pilot_under(const char *name, long long id)
{
    char path[64];
    json_t *t = NULL;

    for (int i = 0; i < 250; i++) {
        snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", path, NULL, 200);
        if (strcmp(jstr(t, "state"), "RUNNING") == 0)
            break;
        json_decref(t);
        t = NULL;
        usleep(20000);
    }
    ck_assert_ptr_nonnull(t);
    json_decref(t);
    snprintf(path, sizeof(path), "/v1/pilots/%s", name);
    json_decref(http_json(&d, "DELETE", path, NULL, 200));
    for (int i = 0; i < 250; i++) {
        snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", path, NULL, 200);
        if (strcmp(jstr(t, "state"), "RUNNING") != 0)
            return t;
        json_decref(t);
        usleep(20000);
    }
    ck_abort_msg("task %lld still RUNNING", id);
    return NULL;
}

/* SIGHUP reads the config file again: a changed max-requeues applies to
 * the next lost pilot; a broken file changes nothing and qtaud runs on. */
START_TEST(test_sighup_reload)
{
    char conf[300];
    json_t *t;
    long long a, b;
    FILE *f;

    snprintf(conf, sizeof(conf), "/tmp/qtaud-test-hup.%d.conf", (int)getpid());
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("max-requeues = 0\n", f);
    fclose(f);
    start((const char *const[]){ "--no-local-pilot", "--config", conf, NULL });
    json_decref(http_json(&d, "POST", "/v1/pilots", "{\"name\": \"p1\", \"cores\": 1}", 201));
    a = submit("{\"command\": [\"sleep\", \"30\"]}");
    t = cancel_pilot_under("p1", a);
    ck_assert_str_eq(jstr(t, "state"), "FAILED");     /* no requeue allowed */
    json_decref(t);

    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("max-requeues = 2\n", f);
    fclose(f);
    kill(d.pid, SIGHUP);
    usleep(300000);
    json_decref(http_json(&d, "POST", "/v1/pilots", "{\"name\": \"p2\", \"cores\": 1}", 201));
    b = submit("{\"command\": [\"sleep\", \"30\"]}");
    t = cancel_pilot_under("p2", b);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");    /* requeued now */
    json_decref(t);

    /* a broken file: refused, qtaud runs on with what it had */
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("max-requeues = lots\n", f);
    fclose(f);
    kill(d.pid, SIGHUP);
    usleep(300000);
    json_decref(http_json(&d, "GET", "/v1/health", NULL, 200));
    unlink(conf);
}
END_TEST

/* A default pilot name never collides with a name a user chose, and a
 * failed creation leaves no pilot behind (a collision once blocked every
 * later write with a UNIQUE error). */
START_TEST(test_default_pilot_name_unique)
{
    json_t *p;
    long long id;

    start(NULL);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"pilot-3\", \"cores\": 1}", 201);
    ck_assert_int_eq(jint(p, "id"), 2);
    json_decref(p);
    p = http_json(&d, "POST", "/v1/pilots", "{\"cores\": 1}", 201);
    ck_assert_int_eq(jint(p, "id"), 3);
    ck_assert_str_eq(jstr(p, "name"), "pilot-3-2");
    json_decref(p);
    id = submit("{\"command\": [\"true\"]}");
    p = wait_task(&d, id, 20);
    ck_assert_str_eq(jstr(p, "state"), "SUCCESS");
    json_decref(p);
    /* and the store agrees after a restart */
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    p = http_json(&d, "GET", "/v1/pilots/pilot-3-2", NULL, 200);
    ck_assert_int_eq(jint(p, "id"), 3);
    json_decref(p);
    p = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
    ck_assert_str_eq(jstr(p, "state"), "SUCCESS");
    json_decref(p);
}
END_TEST

/* URLs whose bytes are not UTF-8, or hold a NUL: a JSON error each, and
 * the daemon stays up (a %FF once made qtaud abort; a %00 cut the path,
 * so /v1/tasks/1%00/stdout answered the task itself). */
START_TEST(test_bad_url_bytes)
{
    static const struct {
        const char *path;
        long status;
    } cases[] = {
        { "/v1/tasks?state=%FF", 400 },
        { "/v1/tasks?pilot=%C3%28", 400 },
        { "/v1/tasks?%FF=1", 400 },
        { "/v1/tasks/%FF", 404 },
        { "/v1/tasks/%FF/stdout", 404 },
        { "/v1/pilots/%E2%82", 404 },
        { "/v1/metrics.csv?pilot=%FF", 400 },
        { "/v1/health?%FF", 400 },
        { "/v1/tasks/1%00/stdout", 400 },
        { "/v1/pilots/local%00", 400 },
        { "/v1/tasks?state=PENDING%00x", 400 },
    };

    start(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *e = http_json(&d, "GET", cases[i].path, NULL, cases[i].status);

        ck_assert_msg(json_is_string(json_object_get(json_object_get(e, "error"),
                                                     "message")),
                      "%s: no error message", cases[i].path);
        json_decref(e);
    }
    json_decref(http_json(&d, "GET", "/v1/health", NULL, 200));
}
END_TEST

struct poll_arg {
    long long id;
    long status;
    char state[16];
    int order;
};

static int finish_order;
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;

static void *long_poll(void *arg)
{
    struct poll_arg *pa = arg;
    char path[64];
    struct http_resp r;

    snprintf(path, sizeof(path), "/v1/tasks/%lld?wait=30", pa->id);
    if (http(&d, "GET", path, NULL, NULL, &r) == 0) {
        pa->status = r.status;
        snprintf(pa->state, sizeof(pa->state), "%s", jstr(r.json, "state"));
    }
    http_resp_free(&r);
    pthread_mutex_lock(&order_lock);
    pa->order = ++finish_order;
    pthread_mutex_unlock(&order_lock);
    return NULL;
}

/* Long polls hold no server thread: with one server thread and several
 * polls waiting, other requests are still answered, and the polls end
 * when the task does. */
START_TEST(test_long_poll_does_not_block)
{
    enum { NPOLL = 6 };
    pthread_t th[NPOLL];
    struct poll_arg pa[NPOLL];
    json_t *h, *t;
    long long id;
    int health_order;

    start((const char *const[]){ "--http-threads", "1", NULL });
    id = submit("{\"command\": [\"sleep\", \"30\"]}");
    for (int i = 0; i < NPOLL; i++) {
        memset(&pa[i], 0, sizeof(pa[i]));
        pa[i].id = id;
        pthread_create(&th[i], NULL, long_poll, &pa[i]);
    }
    usleep(300000);
    h = http_json(&d, "GET", "/v1/health", NULL, 200);
    ck_assert_ptr_nonnull(h);
    json_decref(h);
    pthread_mutex_lock(&order_lock);
    health_order = ++finish_order;
    pthread_mutex_unlock(&order_lock);
    t = http_json(&d, "DELETE", "/v1/tasks/1", NULL, 200);
    json_decref(t);
    for (int i = 0; i < NPOLL; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(pa[i].status, 200);
        ck_assert_str_eq(pa[i].state, "CANCELED");
        ck_assert_int_gt(pa[i].order, health_order);
    }
}
END_TEST

/* A wait that times out answers with the task as it is. */
START_TEST(test_long_poll_timeout)
{
    json_t *t;
    long long id;
    time_t t0;

    start(NULL);
    id = submit("{\"command\": [\"sleep\", \"30\"]}");
    t0 = time(NULL);
    t = http_json(&d, "GET", "/v1/tasks/1?wait=1", NULL, 200);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(jint(t, "id"), id);
    ck_assert_str_ne(jstr(t, "state"), "SUCCESS");
    ck_assert_int_ge(time(NULL) - t0, 1);
    json_decref(t);
    {
        /* seconds as plain decimals only, never what strtod would stretch to */
        static const char *const bad[] = {
            "abc", "0x10", "1e2", "inf", "nan", "%205", "-1", "+1", "1.", ".5", "601",
            "1.5s", "",
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            char path[64];

            snprintf(path, sizeof(path), "/v1/tasks/1?wait=%s", bad[i]);
            t = http_json(&d, "GET", path, NULL, 400);
            ck_assert_msg(t != NULL, "wait=%s was taken", bad[i]);
            ck_assert_str_eq(jstr(json_object_get(t, "error"), "field"), "wait");
            json_decref(t);
        }
    }
    json_decref(http_json(&d, "GET", "/v1/tasks/1?wait=0.25", NULL, 200));
    json_decref(http_json(&d, "GET", "/v1/tasks/1?wait=0", NULL, 200));
    t = http_json(&d, "GET", "/v1/tasks/77?wait=5", NULL, 404);
    ck_assert_ptr_nonnull(t);
    json_decref(t);
}
END_TEST

/* A restart on the same state dir keeps every finished task and its
 * metrics; SIGTERM lets a short task finish and interrupts a long one,
 * which is recorded and runs again after the restart. */
START_TEST(test_restart_keeps_state)
{
    struct csv_table before, after;
    json_t *t;
    int status;
    long long ok, fail, longrun;

    start((const char *const[]){ "--shutdown-grace", "1", "--kill-grace", "0.2", NULL });
    ok = submit("{\"command\": [\"true\"], \"name\": \"ok\"}");
    fail = submit("{\"shell\": \"exit 4\"}");
    json_decref(wait_task(&d, ok, 20));
    json_decref(wait_task(&d, fail, 20));
    {
        /* the marker lives in this test's own state dir: a fixed /tmp
         * path was shared with every other run of the suite on the host */
        char body[600], marker[300];

        snprintf(body, sizeof(body), "{\"shell\": \"if [ -e done ]; then exit 0; fi; "
                 "touch done; sleep 30\", \"cwd\": \"%s\", \"name\": \"long\"}", d.dir);
        longrun = submit(body);
        snprintf(marker, sizeof(marker), "%s/done", d.dir);
        for (int i = 0; i < 200; i++) {
            t = http_json(&d, "GET", "/v1/tasks/3", NULL, 200);
            if (strcmp(jstr(t, "state"), "RUNNING") == 0 && access(marker, F_OK) == 0) {
                json_decref(t);
                break;
            }
            json_decref(t);
            usleep(20000);
        }
    }
    csv_fetch("/v1/metrics.csv", &before);
    status = daemon_stop(&d, SIGTERM);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);

    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_str_eq(jstr(t, "name"), "ok");
    json_decref(t);
    t = http_json(&d, "GET", "/v1/tasks/2", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "FAILED");
    ck_assert_str_eq(jstr(t, "error_msg"), "exit status 4");
    json_decref(t);
    t = wait_task(&d, longrun, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);

    csv_fetch("/v1/metrics.csv", &after);
    ck_assert_int_eq(before.n, 3);      /* header + 2 */
    ck_assert_int_eq(after.n, 5);       /* + interrupted + second run */
    for (size_t i = 1; i < before.n; i++)
        for (int c = 0; c < C_NCOLS; c++)
            ck_assert_str_eq(before.rows[i][c], after.rows[i][c]);
    ck_assert_str_eq(after.rows[3][C_ERROR], "interrupted: qtaud shut down");
    ck_assert_str_eq(after.rows[3][C_STATUS], "FAILED");
    ck_assert_str_eq(after.rows[4][C_STATUS], "SUCCESS");
    ck_assert_str_eq(after.rows[4][C_ATTEMPT], "2");
    csv_free(&before);
    csv_free(&after);
}
END_TEST

/* The default pilot ended by --no-local-pilot comes back at the next plain
 * start under its own name, the old one renamed "local-old" in the store
 * too (a stale name once made every later write fail a UNIQUE check). */
START_TEST(test_default_pilot_comes_back)
{
    json_t *p, *t;
    long long id;

    start(NULL);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--no-local-pilot", NULL }), 0);
    p = http_json(&d, "GET", "/v1/pilots/local", NULL, 200);
    ck_assert_str_eq(jstr(p, "state"), "DONE");
    json_decref(p);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    p = http_json(&d, "GET", "/v1/pilots/local", NULL, 200);
    ck_assert_str_eq(jstr(p, "state"), "RUNNING");
    ck_assert_int_eq(jint(p, "id"), 2);
    json_decref(p);
    id = submit("{\"command\": [\"true\"]}");
    t = wait_task(&d, id, 20);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    json_decref(t);
    /* and once more: the store holds the names the daemon shows */
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    p = http_json(&d, "GET", "/v1/pilots/local~1", NULL, 200);
    ck_assert_int_eq(jint(p, "id"), 1);
    json_decref(p);
    p = http_json(&d, "GET", "/v1/pilots/local", NULL, 200);
    ck_assert_int_eq(jint(p, "id"), 2);
    json_decref(p);
    /* off and on again, twice more: each ended default pilot keeps a name
     * of its own, and what one start shows, the next start loads */
    for (int round = 0; round < 2; round++) {
        char *before, *after;

        ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
        ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--no-local-pilot", NULL }), 0);
        ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
        ck_assert_int_eq(daemon_start(&d, NULL), 0);
        p = http_json(&d, "GET", "/v1/pilots", NULL, 200);
        ck_assert_int_eq(json_array_size(json_object_get(p, "pilots")), (size_t)(3 + round));
        before = json_dumps(json_object_get(p, "pilots"), JSON_COMPACT);
        json_decref(p);
        ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
        ck_assert_int_eq(daemon_start(&d, NULL), 0);
        p = http_json(&d, "GET", "/v1/pilots", NULL, 200);
        after = json_dumps(json_object_get(p, "pilots"), JSON_COMPACT);
        json_decref(p);
        {
            /* names only: times and free cores move between starts */
            json_t *a = json_loads(before, 0, NULL), *b = json_loads(after, 0, NULL);
            size_t i;
            json_t *pa;

            json_array_foreach(a, i, pa) {
                json_t *pb = json_array_get(b, i);

                ck_assert_int_eq(jint(pa, "id"), jint(pb, "id"));
                ck_assert_str_eq(jstr(pa, "name"), jstr(pb, "name"));
                for (size_t k = 0; k < i; k++)
                    ck_assert_str_ne(jstr(json_array_get(a, k), "name"), jstr(pa, "name"));
            }
            json_decref(a);
            json_decref(b);
        }
        free(before);
        free(after);
    }
    p = http_json(&d, "GET", "/v1/pilots/local", NULL, 200);
    ck_assert_int_eq(jint(p, "id"), 4);
    ck_assert_str_eq(jstr(p, "state"), "RUNNING");
    json_decref(p);
}
END_TEST

/* An ended pilot's name can be used again (a SLURM pilot refused for a
 * typo is tried again under the same name); the old pilot is still there
 * as NAME~ID, also after a restart.  A live pilot's name stays taken. */
START_TEST(test_pilot_name_reused_after_end)
{
    json_t *p;
    long long old_id, new_id;
    char path[64];

    start(NULL);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"small\", \"cores\": 1}", 201);
    old_id = jint(p, "id");
    json_decref(p);
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"small\", \"cores\": 1}", 409);
    ck_assert_str_eq(jstr(json_object_get(p, "error"), "field"), "name");
    json_decref(p);
    json_decref(http_json(&d, "DELETE", "/v1/pilots/small", NULL, 200));
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"small\", \"cores\": 1}", 201);
    new_id = jint(p, "id");
    json_decref(p);
    ck_assert_int_gt(new_id, old_id);
    for (int pass = 0; pass < 2; pass++) {
        p = http_json(&d, "GET", "/v1/pilots/small", NULL, 200);
        ck_assert_int_eq(jint(p, "id"), new_id);
        ck_assert_str_eq(jstr(p, "state"), "RUNNING");
        json_decref(p);
        snprintf(path, sizeof(path), "/v1/pilots/small~%lld", old_id);
        p = http_json(&d, "GET", path, NULL, 200);
        ck_assert_int_eq(jint(p, "id"), old_id);
        ck_assert_str_eq(jstr(p, "state"), "CANCELED");
        json_decref(p);
        ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
        ck_assert_int_eq(daemon_start(&d, NULL), 0);
    }
    /* '~' is qtaud's: no user may name a pilot so */
    p = http_json(&d, "POST", "/v1/pilots", "{\"name\": \"x~1\", \"cores\": 1}", 400);
    ck_assert_str_eq(jstr(json_object_get(p, "error"), "field"), "name");
    json_decref(p);
}
END_TEST

START_TEST(test_not_root_without_flag)
{
    /* qtaud refuses root unless --allow-root; as non-root it starts */
    const char *bin = getenv("QTAUD_BIN");
    char cmd[512];
    int rc;

    if (geteuid() != 0)
        return;
    snprintf(cmd, sizeof(cmd), "%s --state-dir /tmp/qtaud-test-root --listen 127.0.0.1:0"
             " >/dev/null 2>&1", bin ? bin : "./qtaud");
    rc = system(cmd);
    ck_assert(WIFEXITED(rc));
    ck_assert_int_eq(WEXITSTATUS(rc), 2);
    rc = system("rm -rf /tmp/qtaud-test-root");
    (void)rc;
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("live");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_health_and_routes);
    tcase_add_test(tc, test_enum_errors);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_failures_reported);
    tcase_add_test(tc, test_success_output_and_env);
    tcase_add_test(tc, test_output_files);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_retries);
    tcase_add_test(tc, test_metrics_csv_under_load);
    tcase_add_test(tc, test_list_filters_and_paging);
    tcase_add_test(tc, test_pilots);
    tcase_add_test(tc, test_pilot_cancel_requeues);
    tcase_add_test(tc, test_long_poll_does_not_block);
    tcase_add_test(tc, test_long_poll_timeout);
    tcase_add_test(tc, test_restart_keeps_state);
    tcase_add_test(tc, test_default_pilot_comes_back);
    tcase_add_test(tc, test_pilot_name_reused_after_end);
    tcase_add_test(tc, test_requeue_limit);
    tcase_add_test(tc, test_bad_url_bytes);
    tcase_add_test(tc, test_default_pilot_name_unique);
    tcase_add_test(tc, test_sighup_reload);
    tcase_add_test(tc, test_not_root_without_flag);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    sr = srunner_create(api_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
