#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/timeutil.h"

double time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double time_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *time_iso8601(double t, char *buf, size_t len)
{
    struct tm tm;
    time_t sec;
    long usec;

    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (t <= 0)
        return buf;
    sec = (time_t)floor(t);
    usec = lround((t - (double)sec) * 1e6);
    if (usec >= 1000000) {
        sec++;
        usec -= 1000000;
    }
    gmtime_r(&sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, usec);
    return buf;
}

int time_parse_iso8601(const char *s, double *t)
{
    struct tm tm;
    char *end;
    double frac = 0;

    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    if (*end == '.') {
        const char *p = end + 1;
        double scale = 0.1;

        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
        end = (char *)p;
    }
    if (*end == 'Z')
        end++;
    if (*end != '\0')
        return -1;
    *t = (double)timegm(&tm) + frac;
    return 0;
}
