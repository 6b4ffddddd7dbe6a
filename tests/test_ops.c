/*
 * test_ops.c - what operators read: GET /metrics (Prometheus text format)
 * and GET /v1/openapi.json, against a live qtaud.
 *
 * The metrics tests run known work and compare every figure with what
 * happened, then hand the scrape to promtool.  The OpenAPI tests hold the
 * document against the route table linked from libqtaud.a (both ways) and
 * validate real answers against its schemas with a small validator for
 * the subset of JSON Schema the document uses - a subset this file also
 * checks the document keeps to, so the validator cannot silently skip a
 * keyword.  The "offline" case needs no daemon: the histogram's buckets
 * and the document against the table.
 */
#include "config.h"

#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api/internal.h"
#include "common/buf.h"
#include "common/hist.h"
#include "tests/client.h"

static struct daemon d;

static void start(const char *const *extra)
{
    daemon_must_start(&d, extra);
}

static void teardown(void)
{
    daemon_must_stop(&d);
}

static long long submit(const char *body)
{
    return task_submit(&d, body);
}

static void wait_state(long long id, const char *want)
{
    json_t *t = wait_task(&d, id, 60);

    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(jstr(t, "state"), want);
    json_decref(t);
}

/* One long poll of task id (a no-op task: it ends well within the wait),
 * which must answer with state want. */
static void long_poll(long long id, const char *want)
{
    char path[64];
    json_t *t;

    snprintf(path, sizeof(path), "/v1/tasks/%lld?wait=120", id);
    t = http_json(&d, "GET", path, NULL, 200);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(jstr(t, "state"), want);
    json_decref(t);
}

/* ---- /metrics ---------------------------------------------------------- */

/* One scrape: the raw text, and each sample as "name{labels}" -> value. */
struct scrape {
    char *text;
    size_t len;
    json_t *samples;
};

static void scrape(struct scrape *sc)
{
    struct http_resp r;
    char *save = NULL, *copy, *line;

    ck_assert_int_eq(http(&d, "GET", "/metrics", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0,
                  "content type %s", r.content_type);
    sc->text = strdup(r.body);
    sc->len = r.len;
    sc->samples = json_object();
    copy = strdup(r.body);
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *sp;

        if (line[0] == '#')
            continue;
        sp = strrchr(line, ' ');
        ck_assert_msg(sp != NULL, "sample without a value: %s", line);
        *sp = '\0';
        ck_assert_msg(!json_object_get(sc->samples, line), "sample twice: %s", line);
        json_object_set_new(sc->samples, line, json_real(strtod(sp + 1, NULL)));
    }
    free(copy);
    http_resp_free(&r);
}

static void scrape_free(struct scrape *sc)
{
    free(sc->text);
    json_decref(sc->samples);
}

/* The value of a sample, which must be there. */
static double sample(const struct scrape *sc, const char *key)
{
    json_t *v = json_object_get(sc->samples, key);

    ck_assert_msg(v != NULL, "no sample %s in:\n%s", key, sc->text);
    return json_real_value(v);
}

/* The value of a sample, 0 when absent (counters shown once non-zero). */
static double sample_or0(const struct scrape *sc, const char *key)
{
    json_t *v = json_object_get(sc->samples, key);

    return v ? json_real_value(v) : 0;
}

/* Checks a histogram's shape: cumulative buckets, +Inf equal to _count. */
static double histogram_count(const struct scrape *sc, const char *name)
{
    const char *key;
    json_t *v;
    double last = -1, inf, count;
    char k[160];

    /* json objects keep insertion order: the buckets come in scrape order */
    json_object_foreach(sc->samples, key, v) {
        size_t n = strlen(name);

        if (strncmp(key, name, n) != 0 || strncmp(key + n, "_bucket{", 8) != 0)
            continue;
        ck_assert_msg(json_real_value(v) >= last, "%s buckets not cumulative", name);
        last = json_real_value(v);
    }
    snprintf(k, sizeof(k), "%s_bucket{le=\"+Inf\"}", name);
    inf = sample(sc, k);
    snprintf(k, sizeof(k), "%s_count", name);
    count = sample(sc, k);
    ck_assert_msg(inf == count, "%s: +Inf bucket %g, count %g", name, inf, count);
    ck_assert_msg(last == inf, "%s: last bucket is not +Inf", name);
    snprintf(k, sizeof(k), "%s_sum", name);
    ck_assert_msg(sample(sc, k) >= 0, "%s_sum negative", name);
    return count;
}

/* Every sample's family has HELP and TYPE lines before it. */
static void check_help_and_type(const struct scrape *sc)
{
    json_t *help = json_object(), *type = json_object();
    char *copy = strdup(sc->text), *save = NULL, *line;

    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        const char *t;
        size_t n;

        if (sscanf(line, "# HELP %127s", name) == 1) {
            json_object_set_new(help, name, json_true());
            continue;
        }
        if (sscanf(line, "# TYPE %127s", name) == 1) {
            t = line + strlen("# TYPE ") + strlen(name) + 1;
            json_object_set_new(type, name, json_string(t));
            continue;
        }
        n = strcspn(line, "{ ");
        snprintf(name, sizeof(name), "%.*s", (int)n, line);
        ck_assert_msg(strncmp(name, "qtaud_", 6) == 0, "%s lacks the qtaud_ prefix", name);
        if (!json_object_get(type, name)) {
            /* a histogram's series carry suffixes of the family's name */
            static const char *const sfx[] = { "_bucket", "_sum", "_count" };

            for (size_t i = 0; i < 3; i++) {
                size_t ln = strlen(name), ls = strlen(sfx[i]);

                if (ln > ls && strcmp(name + ln - ls, sfx[i]) == 0) {
                    name[ln - ls] = '\0';
                    break;
                }
            }
        }
        ck_assert_msg(json_object_get(type, name) != NULL, "no TYPE for %s", line);
        ck_assert_msg(json_object_get(help, name) != NULL, "no HELP for %s", line);
        t = json_string_value(json_object_get(type, name));
        if (strcmp(t, "counter") == 0)
            ck_assert_msg(strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0,
                          "counter %s does not end in _total", name);
    }
    free(copy);
    json_decref(help);
    json_decref(type);
}

START_TEST(test_metrics_count_what_happened)
{
    static const char *const args[] = { "--local-cores", "2", NULL };
    enum { N = 5 };
    long long ids[N], bad;
    struct scrape a, b;
    struct http_resp r;

    start(args);
    for (int i = 0; i < N; i++)
        ids[i] = submit("{\"command\": [\"true\"]}");
    bad = submit("{\"shell\": \"exit 3\"}");
    /* one long poll each (suspended, then resumed: counted once) */
    for (int i = 0; i < N; i++)
        long_poll(ids[i], "SUCCESS");
    long_poll(bad, "FAILED");
    /* a 404 on a route, and one on no route */
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/987654", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    http_resp_free(&r);
    ck_assert_int_eq(http(&d, "GET", "/v1/nothing/987654", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 404);
    http_resp_free(&r);

    scrape(&a);
    check_help_and_type(&a);
    ck_assert_double_eq(sample(&a, "qtaud_build_info{version=\"" PACKAGE_VERSION "\"}"), 1);
    /* counters */
    ck_assert_double_eq(sample(&a, "qtaud_tasks_submitted_total{pilot=\"ANY\"}"), N + 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_submitted_total{pilot=\"local\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_completed_total{pilot=\"local\"}"), N);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_failed_total{pilot=\"local\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_canceled_total{pilot=\"local\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_completed_total{pilot=\"ANY\"}"), 0);
    /* gauges */
    ck_assert_double_eq(sample(&a, "qtaud_tasks{pilot=\"local\",state=\"SUCCESS\"}"), N);
    ck_assert_double_eq(sample(&a, "qtaud_tasks{pilot=\"local\",state=\"FAILED\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks{pilot=\"local\",state=\"RUNNING\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_tasks{pilot=\"ANY\",state=\"PENDING\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_pilots{resource=\"local\",state=\"RUNNING\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_pilots{resource=\"slurm\",state=\"RUNNING\"}"), 0);
    /* histograms: one wait and one run per attempt, and each ran once */
    ck_assert_double_eq(histogram_count(&a, "qtaud_task_wait_seconds"), N + 1);
    ck_assert_double_eq(histogram_count(&a, "qtaud_task_execution_seconds"), N + 1);
    /* requests by route template, never the URL */
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"POST\","
                                   "route=\"/v1/tasks\",code=\"201\"}"), N + 1);
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"GET\","
                                   "route=\"/v1/tasks/{}\",code=\"200\"}"), N + 1);
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"GET\","
                                   "route=\"/v1/tasks/{}\",code=\"404\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"other\","
                                   "route=\"none\",code=\"404\"}"), 1);
    ck_assert_msg(strstr(a.text, "987654") == NULL, "a URL got into a label");
    /* the store */
    ck_assert_double_ge(sample(&a, "qtaud_store_commits_total"), 1);
    ck_assert_double_ge(sample(&a, "qtaud_store_changes_total"), N + 1);
    ck_assert_double_eq(sample(&a, "qtaud_store_commit_failures_total"), 0);
    ck_assert_double_ge(sample(&a, "qtaud_store_queue_depth"), 0);
    ck_assert_double_eq(histogram_count(&a, "qtaud_store_commit_seconds"),
                        sample(&a, "qtaud_store_commits_total"));

    /* the first scrape is counted once answered: the second one sees it */
    scrape(&b);
    ck_assert_double_eq(sample_or0(&a, "qtaud_http_requests_total{method=\"GET\","
                                       "route=\"/metrics\",code=\"200\"}"), 0);
    ck_assert_double_eq(sample(&b, "qtaud_http_requests_total{method=\"GET\","
                                   "route=\"/metrics\",code=\"200\"}"), 1);
    scrape_free(&a);
    scrape_free(&b);
}
END_TEST

/* A task on a pilot of its own is counted there, a retried failure once
 * (one task) but run twice (two attempts), a cancel as a cancel. */
START_TEST(test_metrics_by_pilot_retries_and_cancel)
{
    static const char *const args[] = { "--local-cores", "2", NULL };
    long long retried, named, canceled;
    struct scrape a;
    json_t *p;

    start(args);
    p = http_json(&d, "POST", "/v1/pilots",
                  "{\"name\": \"small\", \"resource\": \"local\", \"cores\": 1}", 201);
    ck_assert_ptr_nonnull(p);
    json_decref(p);
    named = submit("{\"command\": [\"true\"], \"pilot\": \"small\"}");
    retried = submit("{\"shell\": \"exit 1\", \"max_retries\": 1, \"pilot\": \"small\"}");
    wait_state(named, "SUCCESS");
    wait_state(retried, "FAILED");
    /* after the retry: a retried attempt queues behind what came before */
    canceled = submit("{\"command\": [\"sleep\", \"600\"], \"pilot\": \"small\"}");
    /* cancelled once it runs, so that it is an attempt that ran */
    for (;;) {
        p = http_json(&d, "GET", "/v1/tasks/3", NULL, 200);
        ck_assert_ptr_nonnull(p);
        if (strcmp(jstr(p, "state"), "RUNNING") == 0)
            break;
        ck_assert_str_eq(jstr(p, "state"), "PENDING");
        json_decref(p);
        usleep(10 * 1000);
    }
    json_decref(p);
    p = http_json(&d, "DELETE", "/v1/tasks/3", NULL, 200);
    ck_assert_ptr_nonnull(p);
    json_decref(p);
    wait_state(canceled, "CANCELED");

    scrape(&a);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_submitted_total{pilot=\"small\"}"), 3);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_submitted_total{pilot=\"ANY\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_completed_total{pilot=\"small\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_failed_total{pilot=\"small\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_canceled_total{pilot=\"small\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_tasks_completed_total{pilot=\"local\"}"), 0);
    ck_assert_double_eq(sample(&a, "qtaud_tasks{pilot=\"small\",state=\"CANCELED\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_pilots{resource=\"local\",state=\"RUNNING\"}"), 2);
    /* 1 + 2 attempts + the cancelled one, which had started */
    ck_assert_double_eq(histogram_count(&a, "qtaud_task_execution_seconds"), 4);
    ck_assert_double_eq(histogram_count(&a, "qtaud_task_wait_seconds"), 4);
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"POST\","
                                   "route=\"/v1/pilots\",code=\"201\"}"), 1);
    ck_assert_double_eq(sample(&a, "qtaud_http_requests_total{method=\"DELETE\","
                                   "route=\"/v1/tasks/{}\",code=\"200\"}"), 1);
    scrape_free(&a);
}
END_TEST

/* Runs promtool check metrics on text; returns its exit status and what
 * it printed (free it), or -1 when promtool is not installed. */
static int promtool(const char *text, size_t len, char **out)
{
    char path[] = "/tmp/qtaud-prom-XXXXXX", cmd[128];
    struct buf b = BUF_INIT;
    char chunk[512];
    size_t n;
    FILE *f, *p;
    int fd, status;

    if (access("/usr/bin/promtool", X_OK) != 0 && system("command -v promtool >/dev/null") != 0)
        return -1;
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    ck_assert_uint_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
        buf_add(&b, chunk, n);
    status = pclose(p);
    unlink(path);
    buf_addc(&b, '\0');
    *out = buf_detach(&b, &n);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

START_TEST(test_metrics_pass_promtool)
{
    static const char *const args[] = { "--local-cores", "2", NULL };
    /* the same check must be able to fail: a counter without _total */
    static const char bad[] = "# HELP qtaud_things Things.\n# TYPE qtaud_things counter\n"
                              "qtaud_things 1\n";
    struct scrape a;
    struct http_resp r;
    char *out = NULL;
    int rc;

    start(args);
    wait_state(submit("{\"command\": [\"true\"]}"), "SUCCESS");
    wait_state(submit("{\"shell\": \"exit 2\"}"), "FAILED");
    ck_assert_int_eq(http(&d, "PUT", "/v1/tasks", "{}", NULL, &r), 0);
    ck_assert_int_eq(r.status, 405);
    http_resp_free(&r);
    scrape(&a);

    rc = promtool(a.text, a.len, &out);
    if (rc < 0) {
        ck_assert_msg(getenv("CI") == NULL, "promtool is missing (package prometheus)");
        fprintf(stderr, "test_metrics_pass_promtool: promtool not installed, "
                        "skipping its check (install the prometheus package)\n");
        scrape_free(&a);
        return;
    }
    ck_assert_msg(rc == 0 && out[0] == '\0', "promtool (exit %d):\n%s", rc, out);
    free(out);

    rc = promtool(bad, sizeof(bad) - 1, &out);
    ck_assert_msg(rc != 0 || out[0] != '\0', "promtool took a bad counter name");
    ck_assert_msg(strstr(out, "_total") != NULL, "promtool said: %s", out);
    free(out);
    scrape_free(&a);
}
END_TEST

/* A value on a bound falls in that bucket (Prometheus' le), one above it
 * in the next; past the last bound it counts only towards +Inf. */
START_TEST(test_hist_buckets)
{
    static const double bounds[] = { 1, 10 };
    static const struct { double v; size_t bucket; } cases[] = {
        { 0, 0 }, { -3, 0 }, { 1, 0 }, { 1.0001, 1 }, { 10, 1 }, { 11, 2 },
        { 1e9, 2 },
    };
    struct hist h;

    hist_init(&h, bounds, 2);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t before = h.counts[cases[i].bucket];

        hist_observe(&h, cases[i].v);
        ck_assert_msg(h.counts[cases[i].bucket] == before + 1, "%g not in bucket %zu",
                      cases[i].v, cases[i].bucket);
    }
    ck_assert_uint_eq(h.count, 7);
    ck_assert_uint_eq(h.counts[0] + h.counts[1] + h.counts[2], 7);
    ck_assert_double_eq_tol(h.sum, 0 + 0 + 1 + 1.0001 + 10 + 11 + 1e9, 1e-6);
    /* the daemon's tables ascend and fit */
    ck_assert_uint_le(hist_task_nbounds, HIST_MAX_BUCKETS);
    ck_assert_uint_le(hist_commit_nbounds, HIST_MAX_BUCKETS);
    for (size_t i = 1; i < hist_task_nbounds; i++)
        ck_assert(hist_task_bounds[i] > hist_task_bounds[i - 1]);
    for (size_t i = 1; i < hist_commit_nbounds; i++)
        ck_assert(hist_commit_bounds[i] > hist_commit_bounds[i - 1]);
}
END_TEST

/* ---- /v1/openapi.json -------------------------------------------------- */

static json_t *load_doc(void)
{
    const char *src = getenv("QTAUD_SRCDIR");
    char path[1024];
    json_error_t jerr;
    json_t *doc;

    snprintf(path, sizeof(path), "%s/api/openapi.json", src ? src : ".");
    doc = json_load_file(path, 0, &jerr);
    ck_assert_msg(doc != NULL, "%s: %s", path, jerr.text);
    return doc;
}

/* "#/components/schemas/Task" -> that node of doc (borrowed). */
static json_t *resolve(json_t *doc, const char *ref)
{
    char seg[128];
    json_t *n = doc;

    ck_assert_msg(strncmp(ref, "#/", 2) == 0, "ref %s is not local", ref);
    ref += 2;
    while (*ref) {
        size_t len = strcspn(ref, "/");

        snprintf(seg, sizeof(seg), "%.*s", (int)len, ref);
        n = json_object_get(n, seg);
        ck_assert_msg(n != NULL, "ref segment %s does not resolve", seg);
        ref += len;
        if (*ref == '/')
            ref++;
    }
    return n;
}

static json_t *deref(json_t *doc, json_t *n)
{
    while (json_is_object(n) && json_object_get(n, "$ref"))
        n = resolve(doc, json_string_value(json_object_get(n, "$ref")));
    return n;
}

/* Whether v is valid against schema; why says where it is not.  The
 * keywords handled are the ones test_openapi_keywords allows. */
static bool valid(json_t *doc, json_t *schema, json_t *v, const char *at,
                  char *why, size_t wlen)
{
    json_t *k;
    const char *type;

    schema = deref(doc, schema);
    if (json_is_null(v) && json_is_true(json_object_get(schema, "nullable")))
        return true;
    if ((k = json_object_get(schema, "oneOf"))) {
        size_t i, matched = 0;
        json_t *alt;
        char sub[256];

        json_array_foreach(k, i, alt)
            if (valid(doc, alt, v, at, sub, sizeof(sub)))
                matched++;
        if (matched != 1) {
            snprintf(why, wlen, "%.200s: matches %zu of oneOf", at, matched);
            return false;
        }
    }
    type = json_string_value(json_object_get(schema, "type"));
    if (type) {
        bool ok = (strcmp(type, "object") == 0 && json_is_object(v))
                  || (strcmp(type, "array") == 0 && json_is_array(v))
                  || (strcmp(type, "string") == 0 && json_is_string(v))
                  || (strcmp(type, "integer") == 0 && json_is_integer(v))
                  || (strcmp(type, "number") == 0 && json_is_number(v))
                  || (strcmp(type, "boolean") == 0 && json_is_boolean(v));

        if (!ok) {
            snprintf(why, wlen, "%.200s: not of type %s", at, type);
            return false;
        }
    }
    if ((k = json_object_get(schema, "enum"))) {
        size_t i;
        json_t *e;
        bool found = false;

        json_array_foreach(k, i, e)
            found = found || json_equal(e, v);
        if (!found) {
            snprintf(why, wlen, "%.200s: not one of the enum", at);
            return false;
        }
    }
    if (json_is_number(v)) {
        if ((k = json_object_get(schema, "minimum"))
            && json_number_value(v) < json_number_value(k)) {
            snprintf(why, wlen, "%.200s: below minimum", at);
            return false;
        }
        if ((k = json_object_get(schema, "maximum"))
            && json_number_value(v) > json_number_value(k)) {
            snprintf(why, wlen, "%.200s: above maximum", at);
            return false;
        }
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(schema, "properties");
        json_t *extra = json_object_get(schema, "additionalProperties");
        const char *key;
        json_t *val;
        size_t i;
        char sub[256];

        json_array_foreach(json_object_get(schema, "required"), i, val)
            if (!json_object_get(v, json_string_value(val))) {
                snprintf(why, wlen, "%.200s: required %s missing", at, json_string_value(val));
                return false;
            }
        json_object_foreach(v, key, val) {
            json_t *ps = json_object_get(props, key);

            snprintf(sub, sizeof(sub), "%.180s.%.60s", at, key);
            if (!ps && json_is_false(extra)) {
                snprintf(why, wlen, "%.200s: not in the schema", sub);
                return false;
            }
            if (!ps && json_is_object(extra))
                ps = extra;
            if (ps && !valid(doc, ps, val, sub, why, wlen))
                return false;
        }
    }
    if (json_is_array(v)) {
        json_t *items = json_object_get(schema, "items");
        json_t *e;
        size_t i;
        char sub[256];

        if ((k = json_object_get(schema, "minItems"))
            && json_array_size(v) < (size_t)json_integer_value(k)) {
            snprintf(why, wlen, "%.200s: fewer than minItems", at);
            return false;
        }
        json_array_foreach(v, i, e) {
            snprintf(sub, sizeof(sub), "%.220s[%zu]", at, i);
            if (items && !valid(doc, items, e, sub, why, wlen))
                return false;
        }
    }
    return true;
}

/* The JSON schema of the answer to method path (a document path) with
 * status; borrowed. */
static json_t *response_schema(json_t *doc, const char *path, const char *method,
                               long status)
{
    char code[8];
    json_t *resp, *op = json_object_get(json_object_get(json_object_get(doc, "paths"),
                                                        path), method);

    ck_assert_msg(op != NULL, "%s %s not documented", method, path);
    snprintf(code, sizeof(code), "%ld", status);
    resp = json_object_get(json_object_get(op, "responses"), code);
    ck_assert_msg(resp != NULL, "%s %s: status %s not documented", method, path, code);
    resp = deref(doc, resp);
    return json_object_get(json_object_get(json_object_get(resp, "content"),
                                           "application/json"), "schema");
}

/* Sends a request and checks its JSON answer against the document. */
static void check_answer(json_t *doc, const char *method, const char *url,
                         const char *docpath, const char *body, long want)
{
    struct http_resp r;
    json_t *schema;
    char why[256] = "";

    ck_assert_int_eq(http(&d, method, url, body, NULL, &r), 0);
    ck_assert_msg(r.status == want, "%s %s: %ld %s", method, url, r.status, r.body);
    ck_assert_msg(r.json != NULL, "%s %s: not JSON", method, url);
    schema = response_schema(doc, docpath, method[0] == 'G' ? "get"
                                           : method[0] == 'P' ? "post" : "delete",
                             r.status);
    ck_assert_ptr_nonnull(schema);
    ck_assert_msg(valid(doc, schema, r.json, "$", why, sizeof(why)),
                  "%s %s: %s in %s", method, url, why, r.body);
    http_resp_free(&r);
}

/* A GET whose answer is not JSON: its Content-Type is the media type the
 * document gives for that status. */
static void check_media(json_t *doc, const char *url, const char *docpath)
{
    struct http_resp r;
    json_t *resp, *op;
    const char *ct;
    json_t *media;
    char code[8];
    bool found = false;

    ck_assert_int_eq(http(&d, "GET", url, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == 200, "GET %s: %ld", url, r.status);
    op = json_object_get(json_object_get(json_object_get(doc, "paths"), docpath), "get");
    snprintf(code, sizeof(code), "%ld", r.status);
    resp = deref(doc, json_object_get(json_object_get(op, "responses"), code));
    json_object_foreach(json_object_get(resp, "content"), ct, media)
        found = found || strncmp(r.content_type, ct, strlen(ct)) == 0;
    ck_assert_msg(found, "GET %s: content type %s not documented", url, r.content_type);
    http_resp_free(&r);
}

/* The route table's "{}" as the document's "{id}". */
static void doc_path(const char *route, char *out, size_t len)
{
    struct buf b = BUF_INIT;

    for (const char *p = route; *p; p++) {
        if (p[0] == '{' && p[1] == '}') {
            buf_adds(&b, "{id}");
            p++;
        } else {
            buf_addc(&b, *p);
        }
    }
    snprintf(out, len, "%s", b.data);
    buf_release(&b);
}

static void lower(const char *s, char *out, size_t len)
{
    size_t i;

    for (i = 0; s[i] && i + 1 < len; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[i] = '\0';
}

/* Whether a parameter named name, in where, is among the path item's and
 * the operation's parameters. */
static bool has_param(json_t *doc, json_t *item, json_t *op, const char *name,
                      const char *where, bool must_be_required)
{
    json_t *lists[2] = { json_object_get(item, "parameters"),
                         json_object_get(op, "parameters") };

    for (int l = 0; l < 2; l++) {
        size_t i;
        json_t *p;

        json_array_foreach(lists[l], i, p) {
            p = deref(doc, p);
            if (strcmp(jstr(p, "name"), name) == 0 && strcmp(jstr(p, "in"), where) == 0
                && json_is_object(json_object_get(p, "schema"))
                && (!must_be_required || json_is_true(json_object_get(p, "required"))))
                return true;
        }
    }
    return false;
}

START_TEST(test_openapi_matches_route_table)
{
    json_t *doc = load_doc(), *paths = json_object_get(doc, "paths"), *item;
    static const char *const methods[] = { "get", "put", "post", "delete",
                                           "options", "head", "patch", "trace" };
    const char *path;
    size_t documented = 0;

    ck_assert_str_eq(jstr(doc, "openapi"), "3.0.3");
    ck_assert_str_eq(jstr(json_object_get(doc, "info"), "version"), PACKAGE_VERSION);
    /* table -> document: every route, its path parameter, its query keys */
    for (size_t i = 0; i < api_nroutes; i++) {
        const struct route *rt = &api_routes[i];
        char dp[256], m[16];
        json_t *op;

        doc_path(rt->path, dp, sizeof(dp));
        lower(rt->method, m, sizeof(m));
        item = json_object_get(paths, dp);
        op = json_object_get(item, m);
        ck_assert_msg(op != NULL, "%s %s is not in the document", rt->method, dp);
        if (strstr(rt->path, "{}"))
            ck_assert_msg(has_param(doc, item, op, "id", "path", true),
                          "%s %s: no required path parameter id", rt->method, dp);
        for (const char *const *q = rt->query; q && *q; q++)
            ck_assert_msg(has_param(doc, item, op, *q, "query", false),
                          "%s %s: query key %s not documented", rt->method, dp, *q);
        if (rt->has_body)
            ck_assert_msg(json_object_get(op, "requestBody") != NULL,
                          "%s %s: no requestBody", rt->method, dp);
        ck_assert_msg(json_object_get(json_object_get(op, "responses"), "200")
                          || json_object_get(json_object_get(op, "responses"), "201"),
                      "%s %s: no success response", rt->method, dp);
    }
    /* document -> table: nothing documented that the daemon does not do,
     * and no query key it would refuse */
    json_object_foreach(paths, path, item) {
        for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
            json_t *op = json_object_get(item, methods[k]), *p;
            const struct route *rt = NULL;
            size_t j;

            if (!op)
                continue;
            documented++;
            for (size_t i = 0; i < api_nroutes && !rt; i++) {
                char dp[256], m[16];

                doc_path(api_routes[i].path, dp, sizeof(dp));
                lower(api_routes[i].method, m, sizeof(m));
                if (strcmp(dp, path) == 0 && strcmp(m, methods[k]) == 0)
                    rt = &api_routes[i];
            }
            ck_assert_msg(rt != NULL, "%s %s documented but not routed", methods[k], path);
            json_array_foreach(json_object_get(op, "parameters"), j, p) {
                bool accepted = false;

                p = deref(doc, p);
                if (strcmp(jstr(p, "in"), "query") != 0)
                    continue;
                for (const char *const *q = rt->query; q && *q; q++)
                    accepted = accepted || strcmp(*q, jstr(p, "name")) == 0;
                ck_assert_msg(accepted, "%s %s: documented query key %s is refused",
                              methods[k], path, jstr(p, "name"));
            }
        }
    }
    ck_assert_uint_eq(documented, api_nroutes);
    json_decref(doc);
}
END_TEST

/* Every keyword in every schema is one the validator above handles (or an
 * annotation), and every $ref resolves. */
static void check_keywords(json_t *doc, json_t *schema, const char *at)
{
    static const char *const known[] = {
        "type", "properties", "required", "items", "enum", "nullable", "oneOf",
        "additionalProperties", "minimum", "maximum", "minItems", "$ref",
        "description", "format", "default", "example", NULL,
    };
    const char *key;
    json_t *v;

    json_object_foreach(schema, key, v) {
        bool ok = false;

        for (const char *const *k = known; *k; k++)
            ok = ok || strcmp(*k, key) == 0;
        ck_assert_msg(ok, "%s: schema keyword %s is not checked by this test", at, key);
    }
    if ((v = json_object_get(schema, "$ref")))
        resolve(doc, json_string_value(v));
    if ((v = json_object_get(schema, "properties"))) {
        json_t *p;

        json_object_foreach(v, key, p)
            check_keywords(doc, p, key);
    }
    if (json_is_object(v = json_object_get(schema, "additionalProperties")))
        check_keywords(doc, v, at);
    if ((v = json_object_get(schema, "items")))
        check_keywords(doc, v, at);
    if ((v = json_object_get(schema, "oneOf"))) {
        size_t i;
        json_t *alt;

        json_array_foreach(v, i, alt)
            check_keywords(doc, alt, at);
    }
}

START_TEST(test_openapi_schemas_use_known_keywords)
{
    json_t *doc = load_doc(), *v, *item;
    const char *key, *path;

    json_object_foreach(json_object_get(json_object_get(doc, "components"), "schemas"),
                        key, v)
        check_keywords(doc, v, key);
    json_object_foreach(json_object_get(doc, "paths"), path, item) {
        const char *m;
        json_t *op;

        json_object_foreach(item, m, op) {
            const char *code;
            json_t *resp, *media;

            if (strcmp(m, "parameters") == 0)
                continue;
            json_object_foreach(json_object_get(op, "responses"), code, resp) {
                const char *ct;

                resp = deref(doc, resp);
                json_object_foreach(json_object_get(resp, "content"), ct, media)
                    check_keywords(doc, json_object_get(media, "schema"), path);
            }
            if ((v = json_object_get(op, "requestBody")))
                check_keywords(doc, json_object_get(json_object_get(json_object_get(
                                                        v, "content"), "application/json"),
                                                    "schema"),
                               path);
        }
    }
    json_decref(doc);
}
END_TEST

START_TEST(test_openapi_served_and_answers_valid)
{
    static const char *const args[] = { "--local-cores", "2", NULL };
    json_t *doc = load_doc(), *served, *schema, *h;
    struct http_resp r;
    char why[256];
    long long id;

    start(args);
    /* what is served is the document in the tree, byte for byte as JSON */
    ck_assert_int_eq(http(&d, "GET", "/v1/openapi.json", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.content_type, "application/json");
    served = json_loadb(r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(served);
    ck_assert_msg(json_equal(served, doc), "served document differs from api/openapi.json");
    json_decref(served);
    http_resp_free(&r);

    check_answer(doc, "GET", "/v1/health", "/v1/health", NULL, 200);
    check_answer(doc, "POST", "/v1/tasks", "/v1/tasks",
                 "{\"command\": [\"echo\", \"hi\"], \"name\": \"greet\", "
                 "\"env\": {\"X\": \"1\"}, \"cwd\": \"/tmp\", \"timeout\": 30}", 201);
    check_answer(doc, "POST", "/v1/tasks", "/v1/tasks",
                 "[{\"command\": [\"true\"]}, {\"shell\": \"exit 3\"}]", 201);
    wait_state(1, "SUCCESS");
    wait_state(3, "FAILED");
    check_answer(doc, "GET", "/v1/tasks/1", "/v1/tasks/{id}", NULL, 200);
    check_media(doc, "/v1/tasks/1/stdout", "/v1/tasks/{id}/stdout");
    check_media(doc, "/v1/tasks/1/stderr", "/v1/tasks/{id}/stderr");
    check_media(doc, "/v1/metrics.csv", "/v1/metrics.csv");
    check_media(doc, "/metrics", "/metrics");
    check_media(doc, "/v1/openapi.json", "/v1/openapi.json");
    check_answer(doc, "GET", "/v1/tasks/3?wait=1", "/v1/tasks/{id}", NULL, 200);
    check_answer(doc, "GET", "/v1/tasks?limit=2", "/v1/tasks", NULL, 200);
    check_answer(doc, "GET", "/v1/tasks?state=FAILED", "/v1/tasks", NULL, 200);
    id = submit("{\"command\": [\"sleep\", \"600\"]}");
    ck_assert_int_eq(id, 4);
    check_answer(doc, "DELETE", "/v1/tasks/4", "/v1/tasks/{id}", NULL, 200);
    check_answer(doc, "POST", "/v1/pilots", "/v1/pilots",
                 "{\"name\": \"small\", \"resource\": \"local\", \"cores\": 1}", 201);
    check_answer(doc, "GET", "/v1/pilots", "/v1/pilots", NULL, 200);
    check_answer(doc, "GET", "/v1/pilots/local", "/v1/pilots/{id}", NULL, 200);
    check_answer(doc, "DELETE", "/v1/pilots/small", "/v1/pilots/{id}", NULL, 200);
    /* errors */
    check_answer(doc, "GET", "/v1/tasks/999", "/v1/tasks/{id}", NULL, 404);
    check_answer(doc, "GET", "/v1/tasks?state=DONE", "/v1/tasks", NULL, 400);
    check_answer(doc, "POST", "/v1/tasks", "/v1/tasks", "{\"command\": []}", 400);
    check_answer(doc, "POST", "/v1/agent/register", "/v1/agent/register",
                 "{\"pilot\": 1, \"hostname\": \"n1\", \"slots\": 1, \"pid\": 1}", 401);

    /* the validator can fail: a health answer without its version, a task
     * with a state the document does not name */
    h = http_json(&d, "GET", "/v1/health", NULL, 200);
    ck_assert_ptr_nonnull(h);
    schema = response_schema(doc, "/v1/health", "get", 200);
    ck_assert(valid(doc, schema, h, "$", why, sizeof(why)));
    json_object_del(h, "version");
    ck_assert(!valid(doc, schema, h, "$", why, sizeof(why)));
    ck_assert_str_eq(why, "$: required version missing");
    json_decref(h);
    h = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
    ck_assert_ptr_nonnull(h);
    schema = response_schema(doc, "/v1/tasks/{id}", "get", 200);
    ck_assert(valid(doc, schema, h, "$", why, sizeof(why)));
    json_object_set_new(h, "state", json_string("DONE"));
    ck_assert(!valid(doc, schema, h, "$", why, sizeof(why)));
    json_object_set_new(h, "state", json_string("SUCCESS"));
    json_object_set_new(h, "undocumented", json_true());
    ck_assert(!valid(doc, schema, h, "$", why, sizeof(why)));
    json_decref(h);
    json_decref(doc);
}
END_TEST

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("live");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_metrics_count_what_happened);
    tcase_add_test(tc, test_metrics_by_pilot_retries_and_cancel);
    tcase_add_test(tc, test_metrics_pass_promtool);
    tcase_add_test(tc, test_openapi_served_and_answers_valid);
    suite_add_tcase(s, tc);
    tc = tcase_create("offline");
    tcase_add_test(tc, test_hist_buckets);
    tcase_add_test(tc, test_openapi_matches_route_table);
    tcase_add_test(tc, test_openapi_schemas_use_known_keywords);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
