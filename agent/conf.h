/*
 * conf.h - qtau-agent's settings: the environment the pilot's batch script
 * sets (agent/PROTOCOL.md), then command-line flags on top.
 *
 * The pilot token is read from QTAU_PILOT_TOKEN only, never from a flag
 * (a command line is visible to every user of the node in ps), and is
 * removed from the environment once read, so the tasks the agent starts do
 * not inherit it.
 */
#ifndef QT_AGENT_CONF_H
#define QT_AGENT_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/log.h"

/* Most slots one agent runs (a worker thread each); matches the largest
 * task a pilot accepts, SPEC_MAX_CORES. */
#define AGENT_MAX_SLOTS 4096

struct agent_conf {
    char *url;              /* qtaud's base URL, without a trailing '/' */
    int64_t pilot_id;
    char *token;            /* the pilot token: never logged; wiped on release */
    int slots;
    char *workdir;          /* absolute; task output goes here */
    enum log_level log_level;
    bool help, version;
};

/* Fills conf from the environment and argv.  Returns 0, or -1 with a
 * message naming the setting at fault in err (conf then holds nothing to
 * release).  With help or version set, the other settings are not
 * checked. */
int agent_conf_load(struct agent_conf *conf, int argc, char **argv, char *err,
                    size_t errlen);
/* Frees what conf owns and wipes the token.  Accepts a zeroed conf. */
void agent_conf_release(struct agent_conf *conf);
void agent_conf_usage(FILE *f);

#endif
