/*
 * conf.c - qtau-agent settings from the environment, then flags.
 *
 * Every setting is first collected as a (value, source) pair, the source
 * being the variable or flag it came from, and checked once at the end, so
 * a bad value is reported under the name the user actually set.  Runs in
 * main before any thread exists (it calls unsetenv).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/conf.h"

struct setting {
    const char *value;      /* borrowed from environ or argv; NULL: unset */
    const char *source;     /* "QTAU_URL", "--url", ... */
};

enum { OPT_URL = 256, OPT_PILOT, OPT_SLOTS, OPT_WORKDIR, OPT_LOG_LEVEL,
       OPT_HELP, OPT_VERSION };

static const struct option long_options[] = {
    { "url", required_argument, NULL, OPT_URL },
    { "pilot", required_argument, NULL, OPT_PILOT },
    { "slots", required_argument, NULL, OPT_SLOTS },
    { "workdir", required_argument, NULL, OPT_WORKDIR },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "help", no_argument, NULL, OPT_HELP },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 },
};
/* The flags as messages name them, indexed by option code - OPT_URL. */
static const char *const flag_names[] = { "--url", "--pilot", "--slots",
                                          "--workdir", "--log-level" };

void agent_conf_usage(FILE *f)
{
    fprintf(f,
            "usage: qtau-agent [--url URL] [--pilot ID] [--slots N] [--workdir DIR]\n"
            "                  [--log-level LEVEL] [--help] [--version]\n"
            "\n"
            "Runs tasks of one qtaud pilot on this node (see agent/PROTOCOL.md).\n"
            "Settings come from the environment; a flag overrides its variable.\n"
            "\n"
            "  QTAU_URL            --url URL        qtaud's base URL, e.g. http://head:8750\n"
            "  QTAU_PILOT_ID       --pilot ID       the pilot's id\n"
            "  QTAU_PILOT_TOKEN                     the pilot's token (environment only)\n"
            "  QTAU_AGENT_SLOTS    --slots N        slots to run tasks on (default:\n"
            "                                       SLURM_CPUS_ON_NODE, else online CPUs)\n"
            "  QTAU_AGENT_WORKDIR  --workdir DIR    where <id>.<attempt>.out/.err go\n"
            "                                       (default: the current directory)\n"
            "  QTAU_AGENT_LOG_LEVEL --log-level L   error, warning, info (default) or debug\n");
}

static int conf_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conf_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    errno = EINVAL;
    return -1;
}

static void setting_env(struct setting *s, const char *name)
{
    const char *v = getenv(name);

    if (v) {
        s->value = v;
        s->source = name;
    }
}

/* Parses a decimal integer in [min, max]: digits only, no sign or spaces
 * (strtol alone would take " 4", "+4" and "4abc" after a fashion). */
static int parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Resolves dir to an absolute path, creating its last component if it is
 * missing (a batch script may name a per-node directory).  Returns a
 * malloc'd path or NULL with errno set. */
static char *workdir_resolve(const char *dir)
{
    struct stat st;
    char *abs;
    int saved;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return NULL;
    abs = realpath(dir, NULL);
    if (!abs)
        return NULL;
    if (stat(abs, &st) < 0)
        goto error;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        goto error;
    }
    if (access(abs, W_OK | X_OK) < 0)
        goto error;
    return abs;

error:
    saved = errno;
    free(abs);
    errno = saved;
    return NULL;
}

int agent_conf_load(struct agent_conf *conf, int argc, char **argv, char *err,
                    size_t errlen)
{
    struct setting url = { 0 }, pilot = { 0 }, slots = { 0 }, workdir = { 0 },
                   level = { 0 }, token = { 0 };
    long long v;
    size_t len;
    int c;

    memset(conf, 0, sizeof(*conf));
    conf->log_level = LOG_LVL_INFO;
    setting_env(&url, "QTAU_URL");
    setting_env(&pilot, "QTAU_PILOT_ID");
    setting_env(&token, "QTAU_PILOT_TOKEN");
    setting_env(&slots, "QTAU_AGENT_SLOTS");
    if (!slots.value)
        setting_env(&slots, "SLURM_CPUS_ON_NODE");
    setting_env(&workdir, "QTAU_AGENT_WORKDIR");
    setting_env(&level, "QTAU_AGENT_LOG_LEVEL");

    /* Said plainly rather than as "unrecognized option": someone will try. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--token") == 0 || strncmp(argv[i], "--token=", 8) == 0)
            return conf_fail(err, errlen,
                             "there is no --token flag: the pilot token is read "
                             "from QTAU_PILOT_TOKEN only, since a command line is "
                             "visible to every user of the node");

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
        struct setting *s = NULL;

        switch (c) {
        case OPT_URL: s = &url; break;
        case OPT_PILOT: s = &pilot; break;
        case OPT_SLOTS: s = &slots; break;
        case OPT_WORKDIR: s = &workdir; break;
        case OPT_LOG_LEVEL: s = &level; break;
        case OPT_HELP: conf->help = true; break;
        case OPT_VERSION: conf->version = true; break;
        case ':':
            return conf_fail(err, errlen, "%s needs a value", argv[optind - 1]);
        default:
            return conf_fail(err, errlen, "unknown option %s (see --help)",
                             argv[optind - 1]);
        }
        if (s) {
            s->value = optarg;
            s->source = flag_names[c - OPT_URL];
        }
    }
    if (optind < argc)
        return conf_fail(err, errlen, "unexpected argument '%.64s' (see --help)",
                         argv[optind]);
    if (conf->help || conf->version)
        return 0;

    if (level.value && log_level_parse(level.value, &conf->log_level) < 0)
        return conf_fail(err, errlen,
                         "%s must be error, warning, info or debug, got '%.32s'",
                         level.source, level.value);
    if (!url.value || !url.value[0])
        return conf_fail(err, errlen, "QTAU_URL (or --url) is not set: qtaud's "
                                      "base URL, e.g. http://head:8750");
    if (strncmp(url.value, "http://", 7) != 0 && strncmp(url.value, "https://", 8) != 0)
        return conf_fail(err, errlen,
                         "%s must start with http:// or https://, got '%.128s'",
                         url.source, url.value);
    if (!pilot.value)
        return conf_fail(err, errlen, "QTAU_PILOT_ID (or --pilot) is not set");
    if (parse_int(pilot.value, 1, INT64_MAX, &v) < 0)
        return conf_fail(err, errlen,
                         "%s must be a positive integer (a pilot id), got '%.32s'",
                         pilot.source, pilot.value);
    conf->pilot_id = (int64_t)v;
    if (!token.value || !token.value[0])
        return conf_fail(err, errlen, "QTAU_PILOT_TOKEN is not set: the pilot's "
                                      "token reaches the agent in its environment");
    if (slots.value) {
        if (parse_int(slots.value, 1, AGENT_MAX_SLOTS, &v) < 0)
            return conf_fail(err, errlen, "%s must be an integer from 1 to %d, "
                             "got '%.32s'", slots.source, AGENT_MAX_SLOTS, slots.value);
        conf->slots = (int)v;
    } else {
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        conf->slots = n < 1 ? 1 : n > AGENT_MAX_SLOTS ? AGENT_MAX_SLOTS : (int)n;
    }

    conf->workdir = workdir_resolve(workdir.value ? workdir.value : ".");
    if (!conf->workdir)
        return conf_fail(err, errlen, "%s %s: %s",
                         workdir.value ? workdir.source : "working directory",
                         workdir.value ? workdir.value : ".", strerror(errno));
    conf->url = strdup(url.value);
    conf->token = strdup(token.value);
    if (!conf->url || !conf->token) {
        agent_conf_release(conf);
        return conf_fail(err, errlen, "out of memory");
    }
    len = strlen(conf->url);
    while (len > 0 && conf->url[len - 1] == '/')
        conf->url[--len] = '\0';
    /* The tasks this agent starts inherit its environment: keep the
     * pilot's credential out of it. */
    unsetenv("QTAU_PILOT_TOKEN");
    return 0;
}

void agent_conf_release(struct agent_conf *conf)
{
    int saved = errno;

    if (conf->token)
        explicit_bzero(conf->token, strlen(conf->token));
    free(conf->token);
    free(conf->url);
    free(conf->workdir);
    conf->token = conf->url = conf->workdir = NULL;
    errno = saved;
}
