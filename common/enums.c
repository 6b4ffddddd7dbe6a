#include "config.h"

#include <stdio.h>
#include <string.h>

#include "common/enums.h"
#include "common/exec.h"

#define ENUM_TABLE(var, what_, tbl) \
    const struct qt_enum var = { what_, tbl, (int)(sizeof(tbl) / sizeof(tbl[0])) }

static const struct qt_enum_entry task_state_table[] = {
    { "PENDING", TASK_PENDING },
    { "RUNNING", TASK_RUNNING },
    { "SUCCESS", TASK_SUCCESS },
    { "FAILED", TASK_FAILED },
    { "CANCELED", TASK_CANCELED },
};
ENUM_TABLE(task_state_enum, "task state", task_state_table);

static const struct qt_enum_entry pilot_state_table[] = {
    { "PENDING", PILOT_PENDING },
    { "RUNNING", PILOT_RUNNING },
    { "DONE", PILOT_DONE },
    { "FAILED", PILOT_FAILED },
    { "CANCELED", PILOT_CANCELED },
};
ENUM_TABLE(pilot_state_enum, "pilot state", pilot_state_table);

static const struct qt_enum_entry resource_table[] = {
    { "local", RESOURCE_LOCAL },
    { "slurm", RESOURCE_SLURM },
};
ENUM_TABLE(resource_enum, "resource", resource_table);

static const struct qt_enum_entry engine_table[] = {
    { "qtau", ENGINE_QTAU },
};
ENUM_TABLE(engine_enum, "engine", engine_table);

/* How an attempt ended, as qtau-agent reports it (agent/PROTOCOL.md). */
static const struct qt_enum_entry exec_outcome_table[] = {
    { "EXITED", EXEC_EXITED },
    { "SIGNALED", EXEC_SIGNALED },
    { "TIMED_OUT", EXEC_TIMED_OUT },
    { "CANCELED", EXEC_CANCELED },
    { "SPAWN_FAILED", EXEC_SPAWN_FAILED },
};
ENUM_TABLE(exec_outcome_enum, "outcome", exec_outcome_table);

const char *qt_enum_name(const struct qt_enum *e, int value)
{
    for (int i = 0; i < e->count; i++)
        if (e->entries[i].value == value)
            return e->entries[i].name;
    return "?";
}

int qt_enum_parse(const struct qt_enum *e, const char *name, int *value,
                  const char *field, struct qt_error *err)
{
    char accepted[256] = "";
    size_t used = 0;

    for (int i = 0; i < e->count; i++) {
        if (strcmp(e->entries[i].name, name) == 0) {
            *value = e->entries[i].value;
            return 0;
        }
    }
    for (int i = 0; i < e->count && used < sizeof(accepted); i++) {
        int n = snprintf(accepted + used, sizeof(accepted) - used, "%s%s",
                         i ? ", " : "", e->entries[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return qt_error_arg(err, field, "unknown %s '%.64s'; accepted: %s",
                        e->what, name, accepted);
}
