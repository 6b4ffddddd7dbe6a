/*
 * spec.h - task and pilot descriptions as users send them: parsed and
 * validated from JSON in one place, so the API, the store (which keeps the
 * normalized JSON) and start-up reload all agree on what is valid.
 *
 * Every problem is reported in a struct qt_error naming the field; within
 * an array submission the field carries the element's index ("[3].cores").
 */
#ifndef QT_SPEC_H
#define QT_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/enums.h"
#include "common/error.h"
#include "common/exec.h"

/* Limits a description must stay within (each explained by its use). */
#define SPEC_MAX_ARGV      4096     /* argv elements */
#define SPEC_MAX_STRING    65536    /* bytes in any one string: a shell line */
#define SPEC_MAX_NAME      256      /* task and pilot names */
#define SPEC_MAX_ENV       1024     /* environment additions */
#define SPEC_MAX_CORES     4096     /* slots one task or local pilot takes */
#define SPEC_MAX_TIMEOUT   (31.0 * 24 * 3600)  /* a month, in seconds */
#define SPEC_MAX_RETRIES   100

struct task_spec {
    char *name;         /* NULL: none */
    char **argv;        /* NULL-terminated, or NULL when shell is set */
    char *shell;
    char **env;         /* NULL-terminated "NAME=value", may be NULL */
    char *cwd;          /* absolute, or NULL */
    char *pilot;        /* name or decimal id as given; NULL means ANY */
    int cores;
    double timeout;     /* 0: none */
    int max_retries;
};

/* Parses obj into spec (zeroed first).  prefix is prepended to field names
 * in errors ("" or "[3].").  Returns 0, or -1 with err filled and spec
 * left empty. */
int task_spec_parse(json_t *obj, const char *prefix, struct task_spec *spec,
                    struct qt_error *err);
/* The normalized description, defaults filled in; a new reference. */
json_t *task_spec_to_json(const struct task_spec *spec);
void task_spec_release(struct task_spec *spec);

struct pilot_spec {
    char *name;         /* NULL: default pilot-<id> */
    enum pilot_resource resource;
    enum pilot_engine engine;
    int cores;          /* local: pool size; 0 = online CPUs */
    /* SLURM allocation (accepted and validated; used by SLURM pilots) */
    int number_of_nodes;
    int cores_per_node;
    int gpus_per_node;
    int walltime;       /* minutes */
    char *queue, *qos, *project, *reservation, *working_directory;
    char **scheduler_script_commands;
    char **environment; /* "NAME=value" */
};

int pilot_spec_parse(json_t *obj, struct pilot_spec *spec, struct qt_error *err);
json_t *pilot_spec_to_json(const struct pilot_spec *spec);
void pilot_spec_release(struct pilot_spec *spec);

/* One element of an agent report's "results" (agent/PROTOCOL.md). */
struct agent_result {
    int64_t id;         /* task id, > 0 */
    int attempt;        /* 1.. */
    bool interrupted;   /* stopped because its agent is going away */
    struct exec_result res;
};

/* Parses results[i] of a report into out; err names "results[i]".  Pure:
 * whether the task exists, and what the result does to it, is the
 * scheduler's business.  Returns 0 or -1 with err filled. */
int agent_result_parse(json_t *r, size_t i, struct agent_result *out,
                       struct qt_error *err);

/* True if name may name a pilot: 1-64 of [A-Za-z0-9._-], not all digits
 * (those are ids) and not "ANY". */
bool pilot_name_valid(const char *name);

#endif
