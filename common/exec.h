/*
 * exec.h - run one task command to completion, shared by qtaud's local
 * pilots and qtau-agent.
 *
 * The child is started with posix_spawn (never fork from a threaded
 * process) in a new session, so it leads its own process group; stdin is
 * /dev/null, stdout/stderr go to files, and no descriptor of the caller
 * survives into it.  The calling thread then waits on a pidfd together with
 * an eventfd that another thread can poke to cancel.  Timeout and cancel
 * both signal the whole group: SIGTERM, then SIGKILL after a grace period.
 * The group is signalled while the leader is still an unreaped zombie, so
 * its pid cannot have been reused by anything qtaud did not start.
 */
#ifndef QT_EXEC_H
#define QT_EXEC_H

#include <stdbool.h>
#include <sys/types.h>

/* What to run.  All pointers are borrowed for the duration of exec_run(). */
struct exec_spec {
    char *const *argv;      /* NULL-terminated; used when shell is NULL */
    const char *shell;      /* run as /bin/sh -c shell */
    char *const *env_add;   /* NULL-terminated "NAME=value" additions */
    const char *cwd;        /* NULL: the caller's */
    const char *stdout_path;/* created/truncated, mode 0600 */
    const char *stderr_path;
    double timeout;         /* seconds; <= 0 means none */
    double kill_grace;      /* seconds between SIGTERM and SIGKILL */
    /* called once the child exists, before exec_run() waits for it: its
     * pid leads its own process group and session (may be NULL) */
    void (*on_spawn)(void *arg, pid_t pid);
    void *on_spawn_arg;
};

/* The start time of process pid, in clock ticks since boot (proc(5)
 * stat field 22), or 0 if there is no such process.  With the pid it
 * names one process for good: a reused pid has another start time. */
unsigned long long exec_proc_start(pid_t pid);

enum exec_outcome {
    EXEC_EXITED,     /* exit_code is valid (0 means success) */
    EXEC_SIGNALED,   /* term_signal is valid */
    EXEC_TIMED_OUT,  /* killed after the timeout */
    EXEC_CANCELED,   /* killed on request */
    EXEC_SPAWN_FAILED, /* never started; error_msg says why */
};

struct exec_result {
    enum exec_outcome outcome;
    int exit_code;      /* -1 unless EXITED */
    int term_signal;    /* 0 unless the child died by a signal */
    double start_time;  /* wall clock, epoch seconds */
    double end_time;
    char error_msg[512];/* "" on success; DESIGN.md's words otherwise */
};

/* A cancel handle for one worker thread; reusable across tasks. */
struct exec_ctl;

/* Returns a new handle or NULL with errno set.  Free with exec_ctl_destroy. */
struct exec_ctl *exec_ctl_create(void);
void exec_ctl_destroy(struct exec_ctl *ctl);
/* Asks the exec_run() using ctl (now or next) to stop its child.
 * Async-safe with respect to exec_run(); callable from any thread. */
void exec_ctl_cancel(struct exec_ctl *ctl);
/* Clears a pending cancel before the next task. */
void exec_ctl_reset(struct exec_ctl *ctl);

/* Runs spec to completion and fills res; returns 0.  Every failure, the
 * caller's included (no descriptors left, a bad cwd), is reported in res as
 * an outcome with error_msg, never as a lost result. */
int exec_run(const struct exec_spec *spec, struct exec_ctl *ctl,
             struct exec_result *res);

/* Name of signal sig, e.g. "SIGKILL"; "SIG?" if unknown. */
const char *exec_signal_name(int sig);

#endif
