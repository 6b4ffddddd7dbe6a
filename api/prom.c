/*
 * prom.c - GET /metrics: the daemon's counters in the Prometheus text
 * exposition format (version 0.0.4).
 *
 * Nothing is counted here.  The events are counted where they happen, under
 * locks those places hold anyway: task and pilot figures in the scheduler
 * (sched_stats_get copies them in one lock hold), the store's in its
 * writer, HTTP requests as relaxed atomics in server.c.  This file only
 * takes one copy of each and writes it out, so a scrape costs the hot
 * paths one short lock hold, however large the answer.
 *
 * Every family has HELP and TYPE; counters end in _total and durations in
 * _seconds.  Labels are bounded: pilots (few), states (five), routes (the
 * route table's templates, never a URL) and status codes.
 */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "api/internal.h"
#include "common/enums.h"
#include "common/hist.h"

/* A label value, escaped as the format asks (backslash, quote, newline). */
static void add_label_value(struct buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_addc(b, '\\');
        if (*v == '\n') {
            buf_adds(b, "\\n");
            continue;
        }
        buf_addc(b, *v);
    }
}

static void family(struct buf *b, const char *name, const char *type,
                   const char *help)
{
    buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{pilot="..."} value, for one counter of each pilot and of ANY. */
static void pilot_counter(struct buf *b, const char *name, const char *help,
                          const struct sched_stats *st, int state)
{
    family(b, name, "counter", help);
    for (size_t i = 0; i <= st->npilots; i++) {
        const struct sched_pilot_stats *ps = i < st->npilots ? &st->pilots[i]
                                                             : &st->any;
        uint64_t v = state < 0 ? ps->submitted : ps->ended[state];

        buf_addf(b, "%s{pilot=\"", name);
        add_label_value(b, ps->name);
        buf_addf(b, "\"} %llu\n", (unsigned long long)v);
    }
}

/* A histogram: cumulative buckets, +Inf, _sum and _count. */
static void histogram(struct buf *b, const char *name, const char *help,
                      const struct hist *h)
{
    uint64_t cum = 0;

    family(b, name, "histogram", help);
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        buf_addf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                 (unsigned long long)cum);
    }
    buf_addf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    buf_addf(b, "%s_sum %.9g\n", name, h->sum);
    buf_addf(b, "%s_count %llu\n", name, (unsigned long long)h->count);
}

static void requests(struct buf *b, const struct api *a)
{
    family(b, "qtaud_http_requests_total", "counter",
           "HTTP requests answered, by method, route template and status code "
           "(route \"none\": the path matched no route)");
    for (size_t ri = 0; ri <= api_nroutes; ri++) {
        const char *method = ri < api_nroutes ? api_routes[ri].method : "other";
        const char *route = ri < api_nroutes ? api_routes[ri].path : "none";

        for (int k = 0; k < API_STATUS_SLOTS; k++) {
            uint64_t n = atomic_load_explicit(&a->requests[ri * API_STATUS_SLOTS
                                                           + (size_t)k],
                                              memory_order_relaxed);

            if (n == 0)
                continue;
            buf_addf(b, "qtaud_http_requests_total{method=\"%s\",route=\"", method);
            add_label_value(b, route);
            buf_addf(b, "\",code=\"%d\"} %llu\n", API_STATUS_MIN + k,
                     (unsigned long long)n);
        }
    }
}

static void format_all(struct buf *b, const struct api *a,
                       const struct sched_stats *st)
{
    static const int ended[] = { TASK_SUCCESS, TASK_FAILED, TASK_CANCELED };
    /* room for every resource and pilot state (2 and 5 today) */
    int pilots[4][8] = { { 0 } };
    int nres = resource_enum.count < 4 ? resource_enum.count : 4;
    int nps = pilot_state_enum.count < 8 ? pilot_state_enum.count : 8;

    family(b, "qtaud_build_info", "gauge", "qtaud's version; always 1");
    buf_addf(b, "qtaud_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

    family(b, "qtaud_tasks", "gauge",
           "Tasks by state and the pilot they count against: the one they "
           "wait for or ran on (pilot \"ANY\": none - waiting for any pilot, "
           "or ended before one took them)");
    for (size_t i = 0; i <= st->npilots; i++) {
        const struct sched_pilot_stats *ps = i < st->npilots ? &st->pilots[i]
                                                             : &st->any;

        for (int s = 0; s < SCHED_NTASK_STATES; s++) {
            buf_adds(b, "qtaud_tasks{pilot=\"");
            add_label_value(b, ps->name);
            buf_addf(b, "\",state=\"%s\"} %d\n", task_state_name((enum task_state)s),
                     ps->tasks[s]);
        }
    }
    pilot_counter(b, "qtaud_tasks_submitted_total",
                  "Tasks submitted since qtaud started, by the pilot they named "
                  "(\"ANY\": none)", st, -1);
    for (size_t i = 0; i < sizeof(ended) / sizeof(ended[0]); i++) {
        static const char *const names[] = {
            [TASK_SUCCESS] = "qtaud_tasks_completed_total",
            [TASK_FAILED] = "qtaud_tasks_failed_total",
            [TASK_CANCELED] = "qtaud_tasks_canceled_total",
        };
        static const char *const helps[] = {
            [TASK_SUCCESS] = "Tasks that ended SUCCESS since qtaud started, by pilot",
            [TASK_FAILED] = "Tasks that ended FAILED (retries used up) since "
                            "qtaud started, by pilot",
            [TASK_CANCELED] = "Tasks that ended CANCELED since qtaud started, by pilot",
        };

        pilot_counter(b, names[ended[i]], helps[ended[i]], st, ended[i]);
    }

    family(b, "qtaud_pilots", "gauge", "Pilots by resource and state");
    for (size_t i = 0; i < st->npilots; i++)
        if (st->pilots[i].resource >= 0 && st->pilots[i].resource < nres
            && st->pilots[i].state >= 0 && st->pilots[i].state < nps)
            pilots[st->pilots[i].resource][st->pilots[i].state]++;
    for (int r = 0; r < nres; r++)
        for (int s = 0; s < nps; s++)
            buf_addf(b, "qtaud_pilots{resource=\"%s\",state=\"%s\"} %d\n",
                     qt_enum_name(&resource_enum, r),
                     pilot_state_name((enum pilot_state)s), pilots[r][s]);

    histogram(b, "qtaud_task_wait_seconds",
              "Time from a task's submission to the start of each of its "
              "attempts", &st->wait);
    histogram(b, "qtaud_task_execution_seconds",
              "Time from an attempt's start to its end, for attempts that ran",
              &st->run);

    requests(b, a);

    family(b, "qtaud_store_queue_depth", "gauge",
           "Changes queued to the store's writer, not yet taken into a batch");
    buf_addf(b, "qtaud_store_queue_depth %zu\n", st->writer.queue_depth);
    family(b, "qtaud_store_commits_total", "counter",
           "Batches the store's writer committed");
    buf_addf(b, "qtaud_store_commits_total %llu\n",
             (unsigned long long)st->writer.commits);
    family(b, "qtaud_store_changes_total", "counter",
           "Changes (rows) the store's writer committed");
    buf_addf(b, "qtaud_store_changes_total %llu\n",
             (unsigned long long)st->writer.changes);
    family(b, "qtaud_store_commit_failures_total", "counter",
           "Batches whose commit failed (retried, or a change dropped)");
    buf_addf(b, "qtaud_store_commit_failures_total %llu\n",
             (unsigned long long)st->writer.failures);
    histogram(b, "qtaud_store_commit_seconds",
              "Time of each batch's transaction, committed or not",
              &st->writer.commit_seconds);
}

void api_metrics_prom(struct route_ctx *c, struct reply *r)
{
    struct sched_stats st;
    struct buf b = BUF_INIT;

    if (sched_stats_get(c->api->s, &st) < 0) {
        qt_error_set(&r->err, 503, "unavailable", NULL, "out of memory");
        api_reply_json(r, 503, NULL, &r->err);
        return;
    }
    format_all(&b, c->api, &st);
    sched_stats_release(&st);
    r->status = 200;
    r->raw = buf_detach(&b, &r->raw_len);
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
