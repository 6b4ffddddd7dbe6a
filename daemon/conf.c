/*
 * conf.c - settings from defaults, file, environment and flags.
 *
 * One table lists every setting with its type and place in struct
 * qtaud_config; all four sources go through config_set(), so a value is
 * checked the same way wherever it comes from.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/conf.h"

enum opt_type { OPT_LISTEN, OPT_STRING, OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_BOOL,
                OPT_LOGLEVEL };

struct option_def {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size;              /* OPT_STRING: buffer size */
    double min, max;          /* numeric range */
    const char *help;
};

#define OFF(f) offsetof(struct qtaud_config, f)
#define SZ(f) sizeof(((struct qtaud_config *)0)->f)

static const struct option_def options[] = {
    { "listen", OPT_LISTEN, 0, 0, 0, 0,
      "ADDRESS:PORT to listen on, a numeric IPv4 or [IPv6] address (default "
      "127.0.0.1:8750; port 0 picks one)" },
    { "state-dir", OPT_STRING, OFF(state_dir), SZ(state_dir), 0, 0,
      "directory for qtaud.db, task output and the port file (default /var/lib/qtaud)" },
    { "token-file", OPT_STRING, OFF(token_file), SZ(token_file), 0, 0,
      "file holding the bearer token clients send (default STATE-DIR/token, "
      "made on first start)" },
    { "socket", OPT_STRING, OFF(socket_path), SZ(socket_path), 0, 0,
      "UNIX socket for qtaud's own user, no token needed (default "
      "STATE-DIR/qtaud.sock; none: no socket)" },
    { "config", OPT_STRING, OFF(config_file), SZ(config_file), 0, 0,
      "config file of 'key = value' lines" },
    { "local-cores", OPT_INT, OFF(local_cores), 0, 0, 4096,
      "cores of the default local pilot (default: online CPUs)" },
    { "no-local-pilot", OPT_BOOL, OFF(no_local_pilot), 0, 0, 0,
      "do not run the default local pilot" },
    { "log-level", OPT_LOGLEVEL, OFF(log_level), SZ(log_level), 0, 0,
      "error, warning, info (default) or debug" },
    { "allow-root", OPT_BOOL, OFF(allow_root), 0, 0, 0,
      "allow running as root" },
    { "shutdown-grace", OPT_DOUBLE, OFF(shutdown_grace), 0, 0, 86400,
      "seconds running tasks may finish after SIGTERM (default 30)" },
    { "kill-grace", OPT_DOUBLE, OFF(kill_grace), 0, 0, 3600,
      "seconds between SIGTERM and SIGKILL when a task is stopped (default 5)" },
    { "http-threads", OPT_INT, OFF(http_threads), 0, 1, 256,
      "HTTP server threads (default 4)" },
    { "max-body", OPT_LONG, OFF(max_body), 0, 1024, 1024.0 * 1024 * 1024,
      "largest request body in bytes (default 64 MiB)" },
    { "idle-timeout", OPT_INT, OFF(idle_timeout), 0, 1, 86400,
      "seconds an idle connection is kept (default 60)" },
    { "max-connections", OPT_INT, OFF(max_connections), 0, 1, 100000,
      "most open connections, split over http-threads (default 1000)" },
    { "max-connections-per-client", OPT_INT, OFF(max_connections_per_client), 0, 0,
      100000, "most open connections from one address (default 256; 0: no limit)" },
    { "max-header-size", OPT_INT, OFF(max_header_size), 0, 4096, 1024 * 1024,
      "bytes a request's line and headers may take; more gets 431 (default 32 KiB)" },
    { "max-requeues", OPT_INT, OFF(max_requeues), 0, 0, 1000,
      "times a task goes back to the queue when its pilot is lost (default 3)" },
    { "agent-path", OPT_STRING, OFF(agent_path), SZ(agent_path), 0, 0,
      "qtau-agent as SLURM nodes see it (default " QTAU_AGENT_DEFAULT ")" },
    { "agent-url", OPT_STRING, OFF(agent_url), SZ(agent_url), 0, 0,
      "qtaud's URL as SLURM nodes see it (default: http://LISTEN-ADDRESS:PORT)" },
    { "slurm-poll", OPT_DOUBLE, OFF(slurm_poll), 0, 0.1, 600,
      "seconds between reads of SLURM pilots' job states (default 2)" },
    { "heartbeat-interval", OPT_DOUBLE, OFF(heartbeat), 0, 0.1, 600,
      "seconds between agent heartbeats (default 5)" },
    { "agent-timeout", OPT_DOUBLE, OFF(agent_timeout), 0, 1, 86400,
      "seconds without a heartbeat before an agent's tasks are requeued (default 60)" },
    { "durability", OPT_STRING, OFF(durability), SZ(durability), 0, 0,
      "normal (default: survives crashes) or full (also power loss: SQLite syncs every commit)" },
    { "help", OPT_BOOL, OFF(help), 0, 0, 0, "show this help" },
    { "version", OPT_BOOL, OFF(version), 0, 0, 0, "show the version" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const struct option_def *option_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

static void config_defaults(struct qtaud_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
    cfg->listen_port = 8750;
    snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/qtaud");
    snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    cfg->shutdown_grace = 30;
    cfg->kill_grace = 5;
    cfg->http_threads = 4;
    cfg->max_body = 64L * 1024 * 1024;
    cfg->idle_timeout = 60;
    cfg->max_connections = 1000;
    cfg->max_connections_per_client = 256;
    cfg->max_header_size = 32 * 1024;
    cfg->max_requeues = 3;
    snprintf(cfg->agent_path, sizeof(cfg->agent_path), "%s", QTAU_AGENT_DEFAULT);
    cfg->slurm_poll = 2;
    cfg->heartbeat = 5;
    cfg->agent_timeout = 60;
    snprintf(cfg->durability, sizeof(cfg->durability), "normal");
}

static int parse_listen(struct qtaud_config *cfg, const char *v, const char *src,
                        struct qt_error *err)
{
    const char *colon = strrchr(v, ':');
    const char *host = v;
    size_t hlen;
    char *end;
    long port;

    if (!colon)
        return qt_error_arg(err, "listen", "%s: listen must be ADDRESS:PORT, got '%.64s'",
                            src, v);
    hlen = (size_t)(colon - v);
    if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') {  /* [::1]:8750 */
        host++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(cfg->listen_host))
        return qt_error_arg(err, "listen", "%s: listen host is empty or too long",
                            src);
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    /* digits only: strtol alone would take " 80", "+80" and "-0" */
    if (!isdigit((unsigned char)colon[1]) || errno || *end || port > 65535)
        return qt_error_arg(err, "listen", "%s: listen port must be 0-65535, got '%.16s'",
                            src, colon + 1);
    {
        /* a numeric address, checked here so that a bad one stops start-up
         * before anything is opened: names are not looked up */
        char h[sizeof(cfg->listen_host)];
        unsigned char addr[sizeof(struct in6_addr)];

        memcpy(h, host, hlen);
        h[hlen] = '\0';
        if (inet_pton(AF_INET, h, addr) != 1 && inet_pton(AF_INET6, h, addr) != 1)
            return qt_error_arg(err, "listen", "%s: listen host '%.64s' is not a numeric "
                                "IPv4 or IPv6 address (127.0.0.1, [::1])", src, h);
        if (v[0] == '[' && inet_pton(AF_INET6, h, addr) != 1)
            return qt_error_arg(err, "listen", "%s: listen takes brackets around an IPv6 "
                                "address only, got '%.64s'", src, v);
    }
    memcpy(cfg->listen_host, host, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

/* A limit as a user writes it: whole numbers in full (%g alone would say
 * 1.07374e+09 for max-body's), others as %g. */
static const char *num_text(double d, char *buf, size_t len)
{
    if (d == (double)(long long)d)
        snprintf(buf, len, "%lld", (long long)d);
    else
        snprintf(buf, len, "%g", d);
    return buf;
}

static int config_set(struct qtaud_config *cfg, const struct option_def *o,
                      const char *v, const char *src, struct qt_error *err)
{
    /* void *: the table says which type lives at offset */
    void *field = (char *)cfg + o->offset;
    char *end;
    double d;

    switch (o->type) {
    case OPT_LISTEN:
        return parse_listen(cfg, v, src, err);
    case OPT_STRING:
        if (!*v || strlen(v) >= o->size)
            return qt_error_arg(err, o->name, "%s: %s must be 1-%zu characters",
                                src, o->name, o->size - 1);
        snprintf(field, o->size, "%s", v);
        return 0;
    case OPT_LOGLEVEL: {
        enum log_level lvl;

        if (log_level_parse(v, &lvl) < 0)
            return qt_error_arg(err, o->name, "%s: log-level must be error, "
                                "warning, info or debug, got '%.32s'", src, v);
        snprintf(field, o->size, "%s", v);
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
            *(bool *)field = true;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
            *(bool *)field = false;
        else
            return qt_error_arg(err, o->name, "%s: %s must be true or false, "
                                "got '%.32s'", src, o->name, v);
        return 0;
    case OPT_INT:
    case OPT_LONG:
    case OPT_DOUBLE:
        errno = 0;
        d = o->type == OPT_DOUBLE ? strtod(v, &end) : (double)strtoll(v, &end, 10);
        /* written so that NaN, which compares false, is out of range */
        if (errno || end == v || *end || !(d >= o->min && d <= o->max)) {
            char lo[32], hi[32];

            return qt_error_arg(err, o->name, "%s: %s must be a %s from %s to %s, "
                                "got '%.32s'", src, o->name,
                                o->type == OPT_DOUBLE ? "number" : "whole number",
                                num_text(o->min, lo, sizeof(lo)),
                                num_text(o->max, hi, sizeof(hi)), v);
        }
        if (o->type == OPT_INT)
            *(int *)field = (int)d;
        else if (o->type == OPT_LONG)
            *(long *)field = (long)d;
        else
            *(double *)field = d;
        return 0;
    }
    return -1;
}

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int config_file_load(struct qtaud_config *cfg, const char *path,
                            struct qt_error *err)
{
    FILE *f = fopen(path, "re");
    char line[2048], src[1100];
    int lineno = 0, rc = 0;

    if (!f)
        return qt_error_arg(err, "config", "cannot read config file %s: %s", path,
                            strerror(errno));
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        char *s = trim(line), *eq, *key, *val;
        const struct option_def *o;

        lineno++;
        if (!*s || *s == '#')
            continue;
        snprintf(src, sizeof(src), "%s:%d", path, lineno);
        eq = strchr(s, '=');
        if (!eq) {
            rc = qt_error_arg(err, NULL, "%s: expected 'key = value'", src);
            break;
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        o = option_find(key, strlen(key));
        if (!o || !strcmp(key, "config") || !strcmp(key, "help")
            || !strcmp(key, "version"))
            rc = qt_error_arg(err, key, "%s: unknown key '%.64s'", src, key);
        else
            rc = config_set(cfg, o, val, src, err);
    }
    fclose(f);
    return rc;
}

static int config_env_load(struct qtaud_config *cfg, struct qt_error *err)
{
    for (size_t i = 0; i < NOPTIONS; i++) {
        char var[64], src[80];
        const char *v;
        size_t j = 0;

        j = (size_t)snprintf(var, sizeof(var), "QTAUD_");
        for (const char *p = options[i].name; *p && j < sizeof(var) - 1; p++)
            var[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[j] = '\0';
        v = getenv(var);
        if (!v || !strcmp(options[i].name, "config") || !strcmp(options[i].name, "help")
            || !strcmp(options[i].name, "version"))
            continue;
        snprintf(src, sizeof(src), "environment %s", var);
        if (config_set(cfg, &options[i], v, src, err) < 0)
            return -1;
    }
    return 0;
}

/* Walks argv; with only_config, picks out --config and --help alone. */
static int config_args(struct qtaud_config *cfg, int argc, char **argv,
                       bool only_config, struct qt_error *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *val;
        const struct option_def *o;
        size_t len;

        if (strncmp(a, "--", 2) != 0)
            return qt_error_arg(err, NULL, "unexpected argument '%.64s' (see --help)", a);
        a += 2;
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        o = option_find(a, len);
        if (!o) {
            char name[sizeof(err->field)];

            snprintf(name, sizeof(name), "%.*s",
                     (int)(len < sizeof(name) ? len : sizeof(name) - 1), a);
            return qt_error_arg(err, name, "unknown option '--%s' (see --help)",
                                name);
        }
        if (eq)
            val = eq + 1;
        else if (o->type == OPT_BOOL)
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return qt_error_arg(err, o->name, "--%s needs a value", o->name);
        if (only_config != (o->type == OPT_STRING && o->offset == OFF(config_file)))
            continue;
        if (config_set(cfg, o, val, "command line", err) < 0)
            return -1;
    }
    return 0;
}

/* Settings that are each fine alone but not together. */
static int config_check(const struct qtaud_config *cfg, struct qt_error *err)
{
    if (cfg->help || cfg->version)
        return 0;
    if (strcmp(cfg->durability, "normal") != 0 && strcmp(cfg->durability, "full") != 0)
        return qt_error_arg(err, "durability", "durability must be normal or full, got "
                            "'%.16s'", cfg->durability);
    /* a heartbeat or two may be late without an agent being taken for lost */
    if (cfg->agent_timeout < 3 * cfg->heartbeat)
        return qt_error_arg(err, "agent-timeout",
                            "agent-timeout (%g s) must be at least 3 x "
                            "heartbeat-interval (%g s)", cfg->agent_timeout,
                            cfg->heartbeat);
    return 0;
}

int config_load(struct qtaud_config *cfg, int argc, char **argv,
                struct qt_error *err)
{
    const char *env_file = getenv("QTAUD_CONFIG");

    config_defaults(cfg);
    if (env_file && config_set(cfg, option_find("config", 6), env_file,
                               "environment QTAUD_CONFIG", err) < 0)
        return -1;
    if (config_args(cfg, argc, argv, true, err) < 0)
        return -1;
    if (cfg->config_file[0] && config_file_load(cfg, cfg->config_file, err) < 0)
        return -1;
    if (config_env_load(cfg, err) < 0)
        return -1;
    if (config_args(cfg, argc, argv, false, err) < 0)
        return -1;
    return config_check(cfg, err);
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: qtaud [options]\n\n"
                 "qtaud runs pilots and tasks for HPC workflows, over an HTTP API.\n\n"
                 "Every option is also a config file key and a QTAUD_<NAME> "
                 "environment variable;\nflags win over the environment, which "
                 "wins over the file.\n\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        char flag[48];

        snprintf(flag, sizeof(flag), "--%s%s", options[i].name,
                 options[i].type == OPT_BOOL ? "" : " VALUE");
        fprintf(out, "  %-26s %s\n", flag, options[i].help);
    }
}
