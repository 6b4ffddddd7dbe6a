/*
 * task.c - leased tasks in, results out (see task.h).
 *
 * qtaud validated every task when it was submitted, so a task that fails
 * the checks here means the two programs disagree about the protocol.  It
 * is still reported (SPAWN_FAILED with the reason) rather than dropped, so
 * it ends with an error a user can read instead of hanging in RUNNING.
 * Fields the agent does not know are ignored: a newer qtaud may add some.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/task.h"
#include "common/enums.h"
#include "common/timeutil.h"

/* Outcome names come from the one table qtaud parses them with. */
const char *agent_outcome_name(enum exec_outcome o)
{
    return qt_enum_name(&exec_outcome_enum, (int)o);
}

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

void agent_task_free(struct agent_task *t)
{
    int saved = errno;

    if (t) {
        strv_free(t->argv);
        strv_free(t->env);
        free(t->shell);
        free(t->cwd);
        free(t);
    }
    errno = saved;
}

/* A copy of a JSON string that has no NUL inside (exec would silently cut
 * it there).  Returns NULL with errno EINVAL or ENOMEM. */
static char *string_dup(json_t *s)
{
    const char *v = json_string_value(s);
    char *d;

    if (!v || strlen(v) != json_string_length(s)) {
        errno = EINVAL;
        return NULL;
    }
    d = strdup(v);
    if (!d)
        errno = ENOMEM;
    return d;
}

#define INVALID(...) snprintf(t->invalid, sizeof(t->invalid), __VA_ARGS__)

/* Fills t's command from "command" or "shell"; returns -1 with t->invalid
 * set, or with errno ENOMEM. */
static int parse_command(struct agent_task *t, json_t *command, json_t *shell)
{
    size_t n, i;
    json_t *v;

    if (json_is_null(command))
        command = NULL;
    if (json_is_null(shell))
        shell = NULL;
    if (!command == !shell) {
        INVALID("invalid task from qtaud: exactly one of command and shell is needed");
        return -1;
    }
    if (shell) {
        t->shell = string_dup(shell);
        if (!t->shell) {
            if (errno == EINVAL)
                INVALID("invalid task from qtaud: shell must be a string");
            return -1;
        }
        return 0;
    }
    n = json_array_size(command);
    if (!json_is_array(command) || n == 0) {
        INVALID("invalid task from qtaud: command must be a non-empty array");
        return -1;
    }
    t->argv = calloc(n + 1, sizeof(*t->argv));
    if (!t->argv)
        return -1;
    json_array_foreach(command, i, v) {
        t->argv[i] = string_dup(v);
        if (!t->argv[i]) {
            if (errno == EINVAL)
                INVALID("invalid task from qtaud: command[%zu] must be a string", i);
            return -1;
        }
    }
    return 0;
}

static int parse_env(struct agent_task *t, json_t *env)
{
    const char *name;
    json_t *v;
    size_t i = 0;

    if (!env || json_is_null(env))
        return 0;
    if (!json_is_object(env)) {
        INVALID("invalid task from qtaud: env must be an object");
        return -1;
    }
    t->env = calloc(json_object_size(env) + 1, sizeof(*t->env));
    if (!t->env)
        return -1;
    json_object_foreach(env, name, v) {
        const char *value = json_string_value(v);
        size_t len;

        if (!name[0] || strchr(name, '=') || !value
            || strlen(value) != json_string_length(v)) {
            INVALID("invalid task from qtaud: env.%.64s must be NAME: \"value\"", name);
            return -1;
        }
        len = strlen(name) + 1 + strlen(value) + 1;
        t->env[i] = malloc(len);
        if (!t->env[i])
            return -1;
        snprintf(t->env[i++], len, "%s=%s", name, value);
    }
    return 0;
}

struct agent_task *agent_task_parse(json_t *obj, char *err, size_t errlen)
{
    json_t *command = NULL, *shell = NULL, *env = NULL, *cwd = NULL,
           *cores = NULL, *timeout = NULL;
    struct agent_task *t;
    json_int_t id, attempt;
    json_error_t jerr;

    if (json_unpack_ex(obj, &jerr, 0, "{s:I s:I}", "id", &id, "attempt", &attempt) < 0) {
        snprintf(err, errlen, "task without an id and attempt: %s", jerr.text);
        errno = EINVAL;
        return NULL;
    }
    if (attempt < 0 || attempt > INT32_MAX) {
        snprintf(err, errlen, "task %lld: attempt %lld out of range", (long long)id,
                 (long long)attempt);
        errno = EINVAL;
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (!t)
        goto nomem;
    t->id = id;
    t->attempt = (int)attempt;
    t->cores = 1;
    json_unpack(obj, "{s?o s?o s?o s?o s?o s?o}", "command", &command, "shell",
                &shell, "env", &env, "cwd", &cwd, "cores", &cores, "timeout", &timeout);

    if (parse_command(t, command, shell) < 0 || parse_env(t, env) < 0) {
        if (!t->invalid[0])
            goto nomem;
        return t;
    }
    if (cwd && !json_is_null(cwd)) {
        t->cwd = string_dup(cwd);
        if (!t->cwd) {
            if (errno != EINVAL)
                goto nomem;
            INVALID("invalid task from qtaud: cwd must be a string or null");
            return t;
        }
    }
    if (cores && !json_is_null(cores)) {
        if (!json_is_integer(cores) || json_integer_value(cores) < 1
            || json_integer_value(cores) > INT32_MAX) {
            INVALID("invalid task from qtaud: cores must be a positive integer");
            return t;
        }
        t->cores = (int)json_integer_value(cores);
    }
    if (timeout && !json_is_null(timeout)) {
        if (!json_is_number(timeout) || json_number_value(timeout) < 0) {
            INVALID("invalid task from qtaud: timeout must be a number >= 0");
            return t;
        }
        t->timeout = json_number_value(timeout);
    }
    return t;

nomem:
    agent_task_free(t);
    snprintf(err, errlen, "out of memory");
    errno = ENOMEM;
    return NULL;
}

json_t *agent_result_json(const struct agent_task *t, const struct exec_result *res,
                          const char *error_msg)
{
    char start[40], end[40];
    const char *msg = error_msg ? error_msg : res->error_msg;

    time_iso8601(res->start_time, start, sizeof(start));
    time_iso8601(res->end_time, end, sizeof(end));
    return json_pack("{s:I s:i s:s s:o s:o s:s s:s s:o}",
                     "id", (json_int_t)t->id,
                     "attempt", t->attempt,
                     "outcome", agent_outcome_name(res->outcome),
                     /* an exit status can come with any outcome: a task
                      * that exits 143 on its own SIGTERM was still cancelled */
                     "exit_code", res->exit_code >= 0 ? json_integer(res->exit_code)
                                                      : json_null(),
                     "signal", res->term_signal > 0 ? json_integer(res->term_signal)
                                                    : json_null(),
                     "start_time", start,
                     "end_time", end,
                     "error_msg", msg[0] ? json_string(msg) : json_null());
}
