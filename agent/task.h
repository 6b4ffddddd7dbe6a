/*
 * task.h - a task as leased from qtaud, and its result as reported back
 * (the T and R objects of agent/PROTOCOL.md).
 *
 * A struct agent_task owns all its strings; whoever holds the pointer
 * (the lease loop, then the pool) frees it with agent_task_free().
 */
#ifndef QT_AGENT_TASK_H
#define QT_AGENT_TASK_H

#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "common/exec.h"

struct agent_task {
    int64_t id;
    int attempt;
    char **argv;            /* NULL-terminated, or NULL when shell is set */
    char *shell;
    char **env;             /* NULL-terminated "NAME=value", may be NULL */
    char *cwd;              /* NULL: the agent's */
    int cores;
    double timeout;         /* seconds; 0: none */
    /* Not "": qtaud sent something the agent cannot run; the task is
     * reported SPAWN_FAILED with this message instead of being run. */
    char invalid[256];
    TAILQ_ENTRY(agent_task) link;
};

/* Parses one element of a lease answer's "tasks".  Returns a new task,
 * possibly marked invalid when only its id and attempt could be read;
 * NULL when not even those could (err says why; nothing can be reported
 * for it), or on out of memory (errno ENOMEM).  obj is borrowed. */
struct agent_task *agent_task_parse(json_t *obj, char *err, size_t errlen);
/* Accepts NULL; keeps errno. */
void agent_task_free(struct agent_task *t);

/* The R object for t's ended attempt; a new reference, or NULL on out of
 * memory.  error_msg, when not NULL, replaces res->error_msg (why the agent
 * itself stopped the task). */
json_t *agent_result_json(const struct agent_task *t, const struct exec_result *res,
                          const char *error_msg);

/* The protocol's name of an outcome: "EXITED", "SIGNALED", ... */
const char *agent_outcome_name(enum exec_outcome o);

#endif
