/*
 * guard.h - the agent's guardian: a small process that stops the agent's
 * tasks when the agent dies without doing it itself (SIGKILL, OOM killer,
 * a crash).
 *
 * Tasks run in sessions of their own, so nothing else ends them with the
 * agent: under SLURM's proctrack/linuxproc (or pgid) a task whose agent
 * is gone is reparented to init and escapes the job's clean-up, and would
 * run on beside its requeued next attempt.  The guardian is forked before
 * the agent has threads; the agent tells it each task's process group as
 * the task starts and ends, through a pipe whose write end only the agent
 * holds.  When that pipe closes, the agent is gone: the guardian SIGKILLs
 * every group still running and exits.
 */
#ifndef QT_AGENT_GUARD_H
#define QT_AGENT_GUARD_H

#include <sys/types.h>

/* Forks the guardian.  Call before any thread exists.  Returns 0, or -1
 * with errno (the agent then runs unguarded, and says so). */
int guard_start(void);
/* A task's process group started / ended.  Thread-safe (one atomic
 * write each); nothing happens without a guardian. */
void guard_watch(pid_t pgid);
void guard_forget(pid_t pgid);

#endif
