/*
 * spec.c - validation of task and pilot descriptions.
 *
 * Each description is an object whose keys are checked against a table of
 * known fields first (unknown fields are rejected, never ignored), then
 * each field is read with a typed helper that names it in any error.
 * Optional fields given as null are treated as absent.
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/timeutil.h"
#include "daemon/spec.h"

struct field_ctx {
    const char *prefix;
    struct qt_error *err;
    char name[96];       /* prefix + field, for messages */
};

static const char *fname(struct field_ctx *c, const char *field)
{
    snprintf(c->name, sizeof(c->name), "%s%s", c->prefix, field);
    return c->name;
}

static int check_known(json_t *obj, const char *const *known,
                       struct field_ctx *c)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v) {
        bool ok = false;

        for (const char *const *k = known; *k; k++)
            if (strcmp(key, *k) == 0)
                ok = true;
        if (!ok)
            return qt_error_arg(c->err, fname(c, key),
                                "unknown field '%.64s'", key);
    }
    return 0;
}

/* A JSON string without NUL bytes and within SPEC_MAX_STRING. */
static int get_cstring(json_t *v, struct field_ctx *c, const char *field,
                       const char **out)
{
    if (!json_is_string(v))
        return qt_error_arg(c->err, fname(c, field), "%s%s must be a string",
                            c->prefix, field);
    if (json_string_length(v) != strlen(json_string_value(v)))
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s must not contain NUL bytes", c->prefix, field);
    if (json_string_length(v) > SPEC_MAX_STRING)
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s is longer than %d bytes", c->prefix, field,
                            SPEC_MAX_STRING);
    *out = json_string_value(v);
    return 0;
}

/* A path a task or batch job will chdir() to: absolute (relative to what
 * would depend on where qtaud or slurmd happens to run) and within what
 * the kernel takes. */
static int get_abs_path(json_t *v, struct field_ctx *c, const char *field,
                        const char **out)
{
    if (get_cstring(v, c, field, out) < 0)
        return -1;
    if ((*out)[0] != '/')
        return qt_error_arg(c->err, fname(c, field), "%s%s must be an absolute "
                            "path", c->prefix, field);
    if (strlen(*out) >= PATH_MAX)
        return qt_error_arg(c->err, fname(c, field), "%s%s is longer than %d "
                            "bytes", c->prefix, field, PATH_MAX - 1);
    return 0;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort();
    return d;
}

static int get_int(json_t *v, struct field_ctx *c, const char *field,
                   long long min, long long max, int *out)
{
    long long n;

    if (!json_is_integer(v))
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s must be an integer", c->prefix, field);
    n = json_integer_value(v);
    if (n < min || n > max)
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s must be between %lld and %lld", c->prefix,
                            field, min, max);
    *out = (int)n;
    return 0;
}

/* POSIX's portable name, [A-Za-z_][A-Za-z0-9_]*, spelled out rather than
 * with isalpha(), whose answer depends on the locale. */
static bool env_name_valid(const char *s)
{
    static const char first[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";

    if (!*s || !strchr(first, *s))
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789")
           == strlen(s);
}

/* An object of NAME: "value" pairs into a NULL-terminated NAME=value list. */
static int get_env(json_t *v, struct field_ctx *c, const char *field,
                   char ***out)
{
    const char *key;
    json_t *val;
    size_t n = 0;
    char **env;

    if (!json_is_object(v))
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s must be an object of strings", c->prefix, field);
    if (json_object_size(v) > SPEC_MAX_ENV)
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s has more than %d entries", c->prefix, field,
                            SPEC_MAX_ENV);
    env = calloc(json_object_size(v) + 1, sizeof(*env));
    if (!env)
        abort();
    json_object_foreach(v, key, val) {
        const char *s;
        size_t len;

        if (!env_name_valid(key) || strlen(key) > SPEC_MAX_NAME) {
            qt_error_arg(c->err, fname(c, field),
                         "%s%s: '%.64s' is not a valid variable name "
                         "(letters, digits, '_', not starting with a digit)",
                         c->prefix, field, key);
            goto error;
        }
        if (get_cstring(val, c, field, &s) < 0)
            goto error;
        len = strlen(key) + strlen(s) + 2;
        env[n] = malloc(len);
        if (!env[n])
            abort();
        snprintf(env[n++], len, "%s=%s", key, s);
    }
    *out = env;
    return 0;
error:
    for (size_t i = 0; i < n; i++)
        free(env[i]);
    free(env);
    return -1;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int get_string_array(json_t *v, struct field_ctx *c, const char *field,
                            size_t max, char ***out)
{
    size_t n = json_array_size(v);
    char **arr;

    if (!json_is_array(v))
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s must be an array of strings", c->prefix, field);
    if (n > max)
        return qt_error_arg(c->err, fname(c, field),
                            "%s%s has more than %zu elements", c->prefix, field,
                            max);
    arr = calloc(n + 1, sizeof(*arr));
    if (!arr)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *s;

        if (get_cstring(json_array_get(v, i), c, field, &s) < 0) {
            strv_free(arr);
            return -1;
        }
        arr[i] = xstrdup(s);
    }
    *out = arr;
    return 0;
}

static json_t *env_to_json(char **env)
{
    json_t *obj = json_object();

    for (char **p = env; p && *p; p++) {
        const char *eq = strchr(*p, '=');
        char name[SPEC_MAX_NAME + 1];

        snprintf(name, sizeof(name), "%.*s", (int)(eq - *p), *p);
        json_object_set_new(obj, name, json_string(eq + 1));
    }
    return obj;
}

static json_t *strv_to_json(char **v)
{
    json_t *arr = json_array();

    for (char **p = v; p && *p; p++)
        json_array_append_new(arr, json_string(*p));
    return arr;
}

static const char *const task_fields[] = {
    "name", "command", "shell", "env", "cwd", "pilot", "cores", "timeout",
    "max_retries", NULL,
};

int task_spec_parse(json_t *obj, const char *prefix, struct task_spec *spec,
                    struct qt_error *err)
{
    struct field_ctx c = { .prefix = prefix, .err = err };
    json_t *v;
    const char *s;

    memset(spec, 0, sizeof(*spec));
    spec->cores = 1;
    if (!json_is_object(obj)) {
        /* the element itself is at fault: "[3]", not "[3]." */
        size_t n = strlen(prefix);

        if (n && prefix[n - 1] == '.')
            n--;
        snprintf(c.name, sizeof(c.name), "%.*s", (int)n, prefix);
        return qt_error_arg(err, c.name, "a task must be a JSON object");
    }
    if (check_known(obj, task_fields, &c) < 0)
        return -1;

    if ((v = json_object_get(obj, "name")) && !json_is_null(v)) {
        if (get_cstring(v, &c, "name", &s) < 0)
            goto error;
        if (strlen(s) > SPEC_MAX_NAME) {
            qt_error_arg(err, fname(&c, "name"), "%sname is longer than %d bytes",
                         prefix, SPEC_MAX_NAME);
            goto error;
        }
        spec->name = xstrdup(s);
    }
    v = json_object_get(obj, "command");
    if (v && json_is_null(v))
        v = NULL;
    {
        json_t *sh = json_object_get(obj, "shell");

        if (sh && json_is_null(sh))
            sh = NULL;
        if (v && sh) {
            qt_error_arg(err, fname(&c, "command"),
                         "give either command or shell, not both");
            goto error;
        }
        if (!v && !sh) {
            qt_error_arg(err, fname(&c, "command"),
                         "a task needs a command (argv array) or a shell string");
            goto error;
        }
        if (v) {
            if (get_string_array(v, &c, "command", SPEC_MAX_ARGV, &spec->argv) < 0)
                goto error;
            if (!spec->argv[0] || spec->argv[0][0] == '\0') {
                qt_error_arg(err, fname(&c, "command"),
                             "%scommand must not be empty", prefix);
                goto error;
            }
        } else {
            if (get_cstring(sh, &c, "shell", &s) < 0)
                goto error;
            if (s[0] == '\0') {
                qt_error_arg(err, fname(&c, "shell"),
                             "%sshell must not be empty", prefix);
                goto error;
            }
            spec->shell = xstrdup(s);
        }
    }
    if ((v = json_object_get(obj, "env")) && !json_is_null(v))
        if (get_env(v, &c, "env", &spec->env) < 0)
            goto error;
    if ((v = json_object_get(obj, "cwd")) && !json_is_null(v)) {
        if (get_abs_path(v, &c, "cwd", &s) < 0)
            goto error;
        spec->cwd = xstrdup(s);
    }
    if ((v = json_object_get(obj, "pilot")) && !json_is_null(v)) {
        char num[32];

        if (json_is_integer(v)) {
            if (json_integer_value(v) <= 0) {
                qt_error_arg(err, fname(&c, "pilot"),
                             "%spilot id must be positive", prefix);
                goto error;
            }
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
            spec->pilot = xstrdup(num);
        } else {
            if (get_cstring(v, &c, "pilot", &s) < 0)
                goto error;
            if (s[0] == '\0' || strlen(s) > SPEC_MAX_NAME) {
                qt_error_arg(err, fname(&c, "pilot"),
                             "%spilot must be a pilot name, an id or \"ANY\"",
                             prefix);
                goto error;
            }
            if (strcmp(s, "ANY") != 0)
                spec->pilot = xstrdup(s);
        }
    }
    if ((v = json_object_get(obj, "cores")) && !json_is_null(v))
        if (get_int(v, &c, "cores", 1, SPEC_MAX_CORES, &spec->cores) < 0)
            goto error;
    if ((v = json_object_get(obj, "timeout")) && !json_is_null(v)) {
        double t;

        if (!json_is_number(v)) {
            qt_error_arg(err, fname(&c, "timeout"),
                         "%stimeout must be a number of seconds", prefix);
            goto error;
        }
        t = json_number_value(v);
        if (!(t > 0) || t > SPEC_MAX_TIMEOUT) {
            qt_error_arg(err, fname(&c, "timeout"),
                         "%stimeout must be a positive number of seconds, at "
                         "most %.0f", prefix, SPEC_MAX_TIMEOUT);
            goto error;
        }
        spec->timeout = t;
    }
    if ((v = json_object_get(obj, "max_retries")) && !json_is_null(v))
        if (get_int(v, &c, "max_retries", 0, SPEC_MAX_RETRIES,
                    &spec->max_retries) < 0)
            goto error;
    return 0;
error:
    task_spec_release(spec);
    return -1;
}

json_t *task_spec_to_json(const struct task_spec *spec)
{
    json_t *o = json_object();

    if (spec->name)
        json_object_set_new(o, "name", json_string(spec->name));
    if (spec->argv)
        json_object_set_new(o, "command", strv_to_json(spec->argv));
    else
        json_object_set_new(o, "shell", json_string(spec->shell));
    if (spec->env)
        json_object_set_new(o, "env", env_to_json(spec->env));
    if (spec->cwd)
        json_object_set_new(o, "cwd", json_string(spec->cwd));
    json_object_set_new(o, "pilot", json_string(spec->pilot ? spec->pilot : "ANY"));
    json_object_set_new(o, "cores", json_integer(spec->cores));
    if (spec->timeout > 0)
        json_object_set_new(o, "timeout", json_real(spec->timeout));
    json_object_set_new(o, "max_retries", json_integer(spec->max_retries));
    return o;
}

void task_spec_release(struct task_spec *spec)
{
    free(spec->name);
    strv_free(spec->argv);
    free(spec->shell);
    strv_free(spec->env);
    free(spec->cwd);
    free(spec->pilot);
    memset(spec, 0, sizeof(*spec));
}

bool pilot_name_valid(const char *name)
{
    size_t len = strlen(name);
    bool digits_only = true;

    if (len == 0 || len > 64 || strcmp(name, "ANY") == 0)
        return false;
    for (const char *p = name; *p; p++) {
        if (!isdigit((unsigned char)*p))
            digits_only = false;
        if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-'))
            return false;
    }
    return !digits_only;
}

static const char *const pilot_fields[] = {
    "name", "resource", "engine", "cores", "number_of_nodes", "cores_per_node",
    "gpus_per_node", "walltime", "queue", "qos", "project", "reservation",
    "scheduler_script_commands", "environment", "working_directory", NULL,
};

/* SLURM's optional fields count only when present, non-null, non-empty
 * and not "None" (the Python predecessor passed "None" to sbatch); a local
 * pilot may carry them in that absent form. */
static bool slurm_value_given(json_t *v)
{
    if (!v || json_is_null(v))
        return false;
    if (json_is_string(v)
        && (json_string_value(v)[0] == '\0'
            || strcmp(json_string_value(v), "None") == 0))
        return false;
    return true;
}

static int get_optional_slurm_string(json_t *obj, struct field_ctx *c,
                                     const char *field, char **out)
{
    json_t *v = json_object_get(obj, field);
    const char *s;

    if (!v || json_is_null(v))
        return 0;
    if (get_cstring(v, c, field, &s) < 0)
        return -1;
    if (!slurm_value_given(v))
        return 0;
    if (strlen(s) > SPEC_MAX_NAME)
        return qt_error_arg(c->err, fname(c, field), "%s is longer than %d bytes",
                            field, SPEC_MAX_NAME);
    *out = xstrdup(s);
    return 0;
}

int pilot_spec_parse(json_t *obj, struct pilot_spec *spec, struct qt_error *err)
{
    struct field_ctx c = { .prefix = "", .err = err };
    static const struct {
        const char *field;
        size_t offset;
        int min, max;
    } ints[] = {
        { "number_of_nodes", offsetof(struct pilot_spec, number_of_nodes), 1, 100000 },
        { "cores_per_node", offsetof(struct pilot_spec, cores_per_node), 1, SPEC_MAX_CORES },
        { "gpus_per_node", offsetof(struct pilot_spec, gpus_per_node), 0, 1024 },
        /* SLURM's own limit for a time limit is a year of minutes */
        { "walltime", offsetof(struct pilot_spec, walltime), 1, 525600 },
    };
    static const char *const slurm_only[] = {
        "number_of_nodes", "cores_per_node", "gpus_per_node", "walltime",
        "queue", "qos", "project", "reservation", "scheduler_script_commands",
        "environment", "working_directory",
    };
    json_t *v;
    const char *s;
    int value;

    memset(spec, 0, sizeof(*spec));
    if (!json_is_object(obj))
        return qt_error_arg(err, NULL, "a pilot must be a JSON object");
    if (check_known(obj, pilot_fields, &c) < 0)
        return -1;
    if ((v = json_object_get(obj, "name")) && !json_is_null(v)) {
        if (get_cstring(v, &c, "name", &s) < 0)
            goto error;
        if (!pilot_name_valid(s)) {
            qt_error_arg(err, "name", "pilot name must be 1-64 of letters, "
                         "digits, '.', '_', '-', not all digits and not ANY");
            goto error;
        }
        spec->name = xstrdup(s);
    }
    spec->resource = RESOURCE_LOCAL;
    if ((v = json_object_get(obj, "resource")) && !json_is_null(v)) {
        if (get_cstring(v, &c, "resource", &s) < 0
            || qt_enum_parse(&resource_enum, s, &value, "resource", err) < 0)
            goto error;
        spec->resource = (enum pilot_resource)value;
    }
    spec->engine = ENGINE_QTAU;
    if ((v = json_object_get(obj, "engine")) && !json_is_null(v)) {
        if (get_cstring(v, &c, "engine", &s) < 0
            || qt_enum_parse(&engine_enum, s, &value, "engine", err) < 0)
            goto error;
        spec->engine = (enum pilot_engine)value;
    }
    if ((v = json_object_get(obj, "cores")) && !json_is_null(v))
        if (get_int(v, &c, "cores", 1, SPEC_MAX_CORES, &spec->cores) < 0)
            goto error;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (slurm_value_given(v = json_object_get(obj, ints[i].field))) {
            if (get_int(v, &c, ints[i].field, ints[i].min, ints[i].max,
                        (int *)((char *)spec + ints[i].offset)) < 0)
                goto error;
        }
    }
    if (get_optional_slurm_string(obj, &c, "queue", &spec->queue) < 0
        || get_optional_slurm_string(obj, &c, "qos", &spec->qos) < 0
        || get_optional_slurm_string(obj, &c, "project", &spec->project) < 0
        || get_optional_slurm_string(obj, &c, "reservation", &spec->reservation) < 0)
        goto error;
    if (slurm_value_given(v = json_object_get(obj, "working_directory"))) {
        if (get_abs_path(v, &c, "working_directory", &s) < 0)
            goto error;
        spec->working_directory = xstrdup(s);
    }
    if (slurm_value_given(v = json_object_get(obj, "environment")))
        if (get_env(v, &c, "environment", &spec->environment) < 0)
            goto error;
    if (slurm_value_given(v = json_object_get(obj, "scheduler_script_commands"))) {
        if (get_string_array(v, &c, "scheduler_script_commands", 256,
                             &spec->scheduler_script_commands) < 0)
            goto error;
        for (char **p = spec->scheduler_script_commands; *p; p++) {
            if (strncmp(*p, "#SBATCH ", 8) != 0 || strpbrk(*p, "\r\n")) {
                qt_error_arg(err, "scheduler_script_commands",
                             "each scheduler_script_commands entry must be one "
                             "'#SBATCH ...' line, got '%.64s'", *p);
                goto error;
            }
        }
    }
    if (spec->resource == RESOURCE_LOCAL) {
        for (size_t i = 0; i < sizeof(slurm_only) / sizeof(slurm_only[0]); i++) {
            if (slurm_value_given(json_object_get(obj, slurm_only[i]))) {
                qt_error_arg(err, slurm_only[i],
                             "%s applies to slurm pilots only", slurm_only[i]);
                goto error;
            }
        }
    }
    return 0;
error:
    pilot_spec_release(spec);
    return -1;
}

json_t *pilot_spec_to_json(const struct pilot_spec *spec)
{
    json_t *o = json_object();

    if (spec->name)
        json_object_set_new(o, "name", json_string(spec->name));
    json_object_set_new(o, "resource",
                        json_string(qt_enum_name(&resource_enum, (int)spec->resource)));
    json_object_set_new(o, "engine",
                        json_string(qt_enum_name(&engine_enum, (int)spec->engine)));
    if (spec->cores)
        json_object_set_new(o, "cores", json_integer(spec->cores));
    if (spec->number_of_nodes)
        json_object_set_new(o, "number_of_nodes", json_integer(spec->number_of_nodes));
    if (spec->cores_per_node)
        json_object_set_new(o, "cores_per_node", json_integer(spec->cores_per_node));
    if (spec->gpus_per_node)
        json_object_set_new(o, "gpus_per_node", json_integer(spec->gpus_per_node));
    if (spec->walltime)
        json_object_set_new(o, "walltime", json_integer(spec->walltime));
    if (spec->queue)
        json_object_set_new(o, "queue", json_string(spec->queue));
    if (spec->qos)
        json_object_set_new(o, "qos", json_string(spec->qos));
    if (spec->project)
        json_object_set_new(o, "project", json_string(spec->project));
    if (spec->reservation)
        json_object_set_new(o, "reservation", json_string(spec->reservation));
    if (spec->working_directory)
        json_object_set_new(o, "working_directory",
                            json_string(spec->working_directory));
    if (spec->environment)
        json_object_set_new(o, "environment", env_to_json(spec->environment));
    if (spec->scheduler_script_commands)
        json_object_set_new(o, "scheduler_script_commands",
                            strv_to_json(spec->scheduler_script_commands));
    return o;
}

void pilot_spec_release(struct pilot_spec *spec)
{
    free(spec->name);
    free(spec->queue);
    free(spec->qos);
    free(spec->project);
    free(spec->reservation);
    free(spec->working_directory);
    strv_free(spec->scheduler_script_commands);
    strv_free(spec->environment);
    memset(spec, 0, sizeof(*spec));
}

int agent_result_parse(json_t *r, size_t i, struct agent_result *out,
                       struct qt_error *err)
{
    json_int_t id = 0, attempt = 0;
    json_t *exit_code = NULL, *sig = NULL, *msg = NULL;
    int interrupted = 0;
    const char *outcome = NULL, *start = NULL, *end = NULL;
    json_error_t jerr;
    int value;
    char field[48];

    memset(out, 0, sizeof(*out));
    out->res.exit_code = -1;
    snprintf(field, sizeof(field), "results[%zu]", i);
    /* (jansson 2.14 has no nullable-string format: error_msg is taken as
     * an object and checked below) */
    if (json_unpack_ex(r, &jerr, JSON_STRICT,
                       "{s:I, s:I, s:s, s?o, s?o, s:s, s:s, s?o, s?b}",
                       "id", &id, "attempt", &attempt, "outcome", &outcome,
                       "exit_code", &exit_code, "signal", &sig, "start_time", &start,
                       "end_time", &end, "error_msg", &msg,
                       "interrupted", &interrupted) < 0)
        return qt_error_arg(err, field, "%s: %s", field, jerr.text);
    if (id <= 0 || attempt <= 0 || attempt > INT_MAX)
        return qt_error_arg(err, field, "%s: id and attempt must be positive",
                            field);
    if (qt_enum_parse(&exec_outcome_enum, outcome, &value, field, err) < 0)
        return -1;
    out->res.outcome = (enum exec_outcome)value;
    if (time_parse_iso8601(start, &out->res.start_time) < 0
        || time_parse_iso8601(end, &out->res.end_time) < 0)
        return qt_error_arg(err, field, "%s: start_time and end_time must be "
                            "ISO 8601 UTC times", field);
    if ((exit_code && !json_is_null(exit_code)
         && (!json_is_integer(exit_code) || json_integer_value(exit_code) < 0
             || json_integer_value(exit_code) > 255))
        || (sig && !json_is_null(sig)
            && (!json_is_integer(sig) || json_integer_value(sig) < 1
                || json_integer_value(sig) > 64)))
        return qt_error_arg(err, field, "%s: exit_code must be 0-255 and signal "
                            "1-64, or null", field);
    if (json_is_integer(exit_code))
        out->res.exit_code = (int)json_integer_value(exit_code);
    if (json_is_integer(sig))
        out->res.term_signal = (int)json_integer_value(sig);
    if (msg && !json_is_null(msg) && !json_is_string(msg))
        return qt_error_arg(err, field, "%s: error_msg must be a string or null", field);
    snprintf(out->res.error_msg, sizeof(out->res.error_msg), "%s",
             json_is_string(msg) ? json_string_value(msg) : "");
    out->id = (int64_t)id;
    out->attempt = (int)attempt;
    out->interrupted = interrupted != 0;
    return 0;
}
