/*
 * conf.h - qtaud's settings: defaults, then the config file, then
 * QTAUD_* environment variables, then command-line flags (last wins).
 *
 * Every setting has one name used in all four places: the flag --NAME, the
 * file key NAME, and the variable QTAUD_NAME with '-' as '_' in upper case
 * (--local-cores, local-cores = 4, QTAUD_LOCAL_CORES=4).
 */
#ifndef QT_CONFIG_H
#define QT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/error.h"

struct qtaud_config {
    char listen_host[64];
    int listen_port;
    char state_dir[1024];
    char config_file[1024];
    char token_file[1024];    /* "": <state-dir>/token, made when missing */
    char socket_path[108];    /* "": <state-dir>/qtaud.sock; "none": no socket */
    int local_cores;          /* 0: online CPUs */
    bool no_local_pilot;
    char log_level[16];
    bool allow_root;
    double shutdown_grace;    /* seconds running tasks get on SIGTERM */
    double kill_grace;        /* seconds from SIGTERM to SIGKILL for a task */
    int http_threads;
    long max_body;            /* bytes */
    int idle_timeout;         /* seconds */
    int max_connections;
    int max_connections_per_client;  /* 0: no limit */
    int max_header_size;      /* bytes: request line and headers */
    int max_requeues;         /* pilot losses a task survives */
    char agent_path[1024];    /* qtau-agent on the nodes */
    char agent_url[1024];     /* "" : from the listener */
    double slurm_poll;        /* seconds */
    double heartbeat;         /* agent heartbeat interval, seconds */
    double agent_timeout;     /* seconds without heartbeat: agent lost */
    char durability[16];      /* "normal" or "full" (db_set_durability) */
    bool help;
    bool version;
};

/* Fills cfg from all sources.  Returns 0, or -1 with err naming the key
 * (err->field) and the source in the message. */
int config_load(struct qtaud_config *cfg, int argc, char **argv,
                struct qt_error *err);
/* The --help text. */
void config_usage(FILE *out);

#endif
