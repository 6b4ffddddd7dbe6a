#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timeutil.h"

_Atomic(enum log_level) log_threshold = LOG_LVL_INFO;
const char *log_ident = "qtaud";

/* The one table of level names, indexed by enum log_level. */
static const char *const level_names[] = { "error", "warning", "info", "debug" };

int log_level_parse(const char *name, enum log_level *lvl)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(level_names[i], name) == 0) {
            *lvl = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}
/* syslog priorities, understood by journald at the start of a stderr line */
static const int level_prio[] = { 3, 4, 6, 7 };

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    char line[1024];
    char stamp[40];
    int n, m;
    va_list ap;

    if (lvl > log_threshold)
        return;
    time_iso8601(time_now(), stamp, sizeof(stamp));
    n = snprintf(line, sizeof(line), "<%d>%s %s %s: ", level_prio[lvl],
                 stamp, log_ident, level_names[lvl]);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* one write per line keeps concurrent threads' lines whole */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
