/*
 * hist.h - a fixed-bucket histogram of durations, for the Prometheus
 * export.
 *
 * Observing is a short scan over a few constant bounds and two additions,
 * cheap enough for every task; it takes no lock of its own, so the caller
 * observes under a lock it already holds for the event (the scheduler's,
 * the writer's) and copies the struct under that lock to read it.
 */
#ifndef QT_HIST_H
#define QT_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_BUCKETS 24

struct hist {
    const double *bounds;        /* ascending upper bounds (seconds); not
                                    owned: a static table */
    size_t nbounds;              /* at most HIST_MAX_BUCKETS */
    uint64_t counts[HIST_MAX_BUCKETS + 1];  /* per bucket, not cumulative;
                                               the last is above every bound */
    uint64_t count;
    double sum;
};

/* Task wait and run times: from a tenth of a second to a day. */
extern const double hist_task_bounds[];
extern const size_t hist_task_nbounds;
/* Store commit latencies: from half a millisecond to ten seconds. */
extern const double hist_commit_bounds[];
extern const size_t hist_commit_nbounds;

/* Empties h and gives it bounds (a static table, at most
 * HIST_MAX_BUCKETS). */
void hist_init(struct hist *h, const double *bounds, size_t nbounds);
/* Counts one value; a negative one (a clock stepped back) counts as 0. */
void hist_observe(struct hist *h, double v);

#endif
