/*
 * timeutil.h - wall-clock times as double seconds since the epoch, and their
 * ISO 8601 UTC form with microseconds ("2026-12-03T17:58:20.123456Z").
 */
#ifndef QT_TIMEUTIL_H
#define QT_TIMEUTIL_H

#include <stddef.h>

/* Wall clock, seconds since the epoch. */
double time_now(void);
/* Monotonic clock, seconds; for deadlines and durations. */
double time_mono(void);
/* Writes the ISO 8601 form of t into buf; "" for t <= 0.  Returns buf. */
char *time_iso8601(double t, char *buf, size_t len);
/* Parses the form time_iso8601 writes (fraction and 'Z' optional).
 * Returns 0 and sets *t, or -1. */
int time_parse_iso8601(const char *s, double *t);

#endif
