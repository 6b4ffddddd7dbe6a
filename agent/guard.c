/*
 * guard.c - see guard.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/guard.h"
#include "common/log.h"

/* One message: a pipe write of at most PIPE_BUF bytes is atomic, so the
 * workers need no lock to share the pipe. */
struct guard_msg {
    char op;                /* '+': watch, '-': forget */
    pid_t pgid;
};

static int guard_fd = -1;   /* the write end; set once, before threads */

static void guard_send(char op, pid_t pgid)
{
    struct guard_msg m = { .op = op, .pgid = pgid };

    if (guard_fd < 0 || pgid <= 1)
        return;
    while (write(guard_fd, &m, sizeof(m)) < 0 && errno == EINTR)
        ;
}

void guard_watch(pid_t pgid)
{
    guard_send('+', pgid);
}

void guard_forget(pid_t pgid)
{
    guard_send('-', pgid);
}

/* The guardian's life: collect groups until the pipe closes, then stop
 * what is left.  A group is forgotten right after its task was reaped, so
 * a group id SIGKILLed here belongs to a task the agent could not end. */
static void guard_main(int rfd)
{
    pid_t *groups = NULL;
    size_t n = 0, cap = 0;
    struct guard_msg m;
    sigset_t none;

    /* SLURM's SIGTERM at the end of a job is for the agent, which stops
     * its tasks itself; the guardian waits for the agent to be gone */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;) {
        ssize_t k = read(rfd, &m, sizeof(m));

        if (k < 0 && errno == EINTR)
            continue;
        if (k != (ssize_t)sizeof(m))
            break;   /* 0: the agent is gone */
        if (m.op == '+') {
            if (n == cap) {
                pid_t *more = realloc(groups, (cap ? cap * 2 : 16) * sizeof(*groups));

                if (!more)
                    continue;   /* cannot watch it; the rest still count */
                groups = more;
                cap = cap ? cap * 2 : 16;
            }
            groups[n++] = m.pgid;
        } else {
            for (size_t i = 0; i < n; i++)
                if (groups[i] == m.pgid) {
                    groups[i] = groups[--n];
                    break;
                }
        }
    }
    if (n > 0)
        log_warn("guardian: the agent is gone; stopping %zu task process group%s",
                 n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++)
        kill(-groups[i], SIGKILL);
    free(groups);
    _exit(0);
}

int guard_start(void)
{
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        int saved = errno;

        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        /* keep stderr for the log line, the read end, nothing else: a
         * copy of any other descriptor would outlive the agent here */
        if (fds[0] != 3 && dup2(fds[0], 3) < 0)
            _exit(1);
        close_range(4, ~0U, 0);
        guard_main(3);
    }
    close(fds[0]);
    guard_fd = fds[1];
    return 0;
}
