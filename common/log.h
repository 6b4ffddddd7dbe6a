/*
 * log.h - leveled logging to stderr (journald picks it up under systemd).
 *
 * One global level; messages below it cost one comparison.  Lines are
 * "<level>: message" with a syslog priority prefix when QT_LOG_SYSLOG_PREFIX
 * is set (systemd understands "<3>").  Thread-safe: each line is one write().
 */
#ifndef QT_LOG_H
#define QT_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Atomic: SIGHUP changes it while other threads log. */
extern _Atomic(enum log_level) log_threshold;
/* Looks a level up by name ("error", "warning", "info", "debug").
 * Returns 0 and sets *lvl, or -1 for any other name. */
int log_level_parse(const char *name, enum log_level *lvl);
/* The program name every line carries; set once at start-up. */
extern const char *log_ident;

void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_threshold >= LOG_LVL_DEBUG) \
                                log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif
