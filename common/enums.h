/*
 * enums.h - every enumeration qtaud exposes by name, each with exactly one
 * table mapping names to values (the Python predecessor defined its engine
 * enum twice and silently lost the first).  Parsing and printing go through
 * the table; an unknown name is a 400 that lists the accepted names.
 */
#ifndef QT_ENUMS_H
#define QT_ENUMS_H

#include <stdbool.h>

#include "common/error.h"

enum task_state {
    TASK_PENDING,
    TASK_RUNNING,
    TASK_SUCCESS,
    TASK_FAILED,
    TASK_CANCELED,
};

enum pilot_state {
    PILOT_PENDING,
    PILOT_RUNNING,
    PILOT_DONE,
    PILOT_FAILED,
    PILOT_CANCELED,
};

enum pilot_resource {
    RESOURCE_LOCAL,
    RESOURCE_SLURM,
};

enum pilot_engine {
    ENGINE_QTAU,
};

struct qt_enum_entry {
    const char *name;
    int value;
};

struct qt_enum {
    const char *what;                    /* "task state", for messages */
    const struct qt_enum_entry *entries; /* the one table */
    int count;
};

extern const struct qt_enum task_state_enum;
extern const struct qt_enum pilot_state_enum;
extern const struct qt_enum resource_enum;
extern const struct qt_enum engine_enum;
/* enum exec_outcome (common/exec.h) */
extern const struct qt_enum exec_outcome_enum;

/* Name of value in e's table; "?" for a value not in it (a bug). */
const char *qt_enum_name(const struct qt_enum *e, int value);

/* Looks name up in e's table (exact, case-sensitive).  On success stores the
 * value and returns 0; otherwise fills err with a 400 naming field and the
 * accepted names, and returns -1. */
int qt_enum_parse(const struct qt_enum *e, const char *name, int *value,
                  const char *field, struct qt_error *err);

static inline const char *task_state_name(enum task_state s)
{
    return qt_enum_name(&task_state_enum, (int)s);
}

static inline const char *pilot_state_name(enum pilot_state s)
{
    return qt_enum_name(&pilot_state_enum, (int)s);
}

static inline bool task_state_terminal(enum task_state s)
{
    return s == TASK_SUCCESS || s == TASK_FAILED || s == TASK_CANCELED;
}

static inline bool pilot_state_terminal(enum pilot_state s)
{
    return s == PILOT_DONE || s == PILOT_FAILED || s == PILOT_CANCELED;
}

#endif
