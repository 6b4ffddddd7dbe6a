/*
 * hist.c - fixed-bucket histograms (see hist.h).
 */
#include "config.h"

#include <string.h>

#include "common/hist.h"

/* HPC tasks run from milliseconds (the no-op tasks of a parameter sweep,
 * which also wait only milliseconds on an idle pilot) to hours (a
 * simulation step); a pilot's walltime caps them near a day.  Two to three
 * buckets per decade keep quantiles useful at every scale with few
 * series. */
const double hist_task_bounds[] = {
    0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800,
    3600, 7200, 14400, 43200, 86400,
};
const size_t hist_task_nbounds = sizeof(hist_task_bounds) / sizeof(hist_task_bounds[0]);

/* A batch commit is a WAL append: normally a fraction of a millisecond to
 * a few milliseconds; seconds mean a slow or failing disk (or
 * durability=full on rotating media). */
const double hist_commit_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
    10,
};
const size_t hist_commit_nbounds = sizeof(hist_commit_bounds)
                                   / sizeof(hist_commit_bounds[0]);

void hist_init(struct hist *h, const double *bounds, size_t nbounds)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->nbounds = nbounds < HIST_MAX_BUCKETS ? nbounds : HIST_MAX_BUCKETS;
}

void hist_observe(struct hist *h, double v)
{
    size_t i = 0;

    if (!(v > 0))
        v = 0;   /* also NaN */
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}
