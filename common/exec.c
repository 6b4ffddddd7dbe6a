/*
 * exec.c - posix_spawn a task, wait for it with timeout and cancel.
 *
 * One thread runs one child at a time: exec_run() blocks in poll() on the
 * child's pidfd and the ctl's eventfd, so a cancel from an API thread or a
 * timeout wakes it without any signal handler in the daemon.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/exec.h"
#include "common/timeutil.h"

extern char **environ;

struct exec_ctl {
    int efd;              /* eventfd poked by exec_ctl_cancel() */
    atomic_bool cancel;
};

struct exec_ctl *exec_ctl_create(void)
{
    struct exec_ctl *ctl = calloc(1, sizeof(*ctl));

    if (!ctl)
        return NULL;
    ctl->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctl->efd < 0) {
        int saved = errno;
        free(ctl);
        errno = saved;
        return NULL;
    }
    atomic_init(&ctl->cancel, false);
    return ctl;
}

void exec_ctl_destroy(struct exec_ctl *ctl)
{
    int saved = errno;

    if (ctl) {
        close(ctl->efd);
        free(ctl);
    }
    errno = saved;
}

void exec_ctl_cancel(struct exec_ctl *ctl)
{
    uint64_t one = 1;

    atomic_store(&ctl->cancel, true);
    if (write(ctl->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, the waiter will wake */
    }
}

void exec_ctl_reset(struct exec_ctl *ctl)
{
    uint64_t v;

    atomic_store(&ctl->cancel, false);
    while (read(ctl->efd, &v, sizeof(v)) > 0)
        ;
}

static const struct {
    int sig;
    const char *name;
} signal_names[] = {
    { SIGHUP, "SIGHUP" },   { SIGINT, "SIGINT" },   { SIGQUIT, "SIGQUIT" },
    { SIGILL, "SIGILL" },   { SIGTRAP, "SIGTRAP" }, { SIGABRT, "SIGABRT" },
    { SIGBUS, "SIGBUS" },   { SIGFPE, "SIGFPE" },   { SIGKILL, "SIGKILL" },
    { SIGUSR1, "SIGUSR1" }, { SIGSEGV, "SIGSEGV" }, { SIGUSR2, "SIGUSR2" },
    { SIGPIPE, "SIGPIPE" }, { SIGALRM, "SIGALRM" }, { SIGTERM, "SIGTERM" },
    { SIGCHLD, "SIGCHLD" }, { SIGCONT, "SIGCONT" }, { SIGSTOP, "SIGSTOP" },
    { SIGTSTP, "SIGTSTP" }, { SIGTTIN, "SIGTTIN" }, { SIGTTOU, "SIGTTOU" },
    { SIGURG, "SIGURG" },   { SIGXCPU, "SIGXCPU" }, { SIGXFSZ, "SIGXFSZ" },
    { SIGVTALRM, "SIGVTALRM" }, { SIGPROF, "SIGPROF" }, { SIGSYS, "SIGSYS" },
};

const char *exec_signal_name(int sig)
{
    for (size_t i = 0; i < sizeof(signal_names) / sizeof(signal_names[0]); i++)
        if (signal_names[i].sig == sig)
            return signal_names[i].name;
    return "SIG?";
}

/* Length of the NAME part of a "NAME=value" string. */
static size_t env_name_len(const char *kv)
{
    const char *eq = strchr(kv, '=');

    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* Builds environ with env_add applied on top (an added name replaces the
 * inherited one).  Returns a malloc'd array of borrowed strings. */
static char **env_build(char *const *env_add)
{
    size_t n_env = 0, n_add = 0, n = 0;
    char **envp;

    while (environ[n_env])
        n_env++;
    while (env_add && env_add[n_add])
        n_add++;
    envp = calloc(n_env + n_add + 1, sizeof(*envp));
    if (!envp)
        return NULL;
    for (size_t i = 0; i < n_env; i++) {
        size_t len = env_name_len(environ[i]);
        bool replaced = false;

        for (size_t j = 0; j < n_add; j++) {
            if (env_name_len(env_add[j]) == len
                && strncmp(env_add[j], environ[i], len) == 0) {
                replaced = true;
                break;
            }
        }
        if (!replaced)
            envp[n++] = environ[i];
    }
    for (size_t j = 0; j < n_add; j++)
        envp[n++] = env_add[j];
    envp[n] = NULL;
    return envp;
}

static int open_output(const char *path)
{
    return open(path ? path : "/dev/null",
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

static void spawn_failed(struct exec_result *res, const char *what, int err)
{
    res->outcome = EXEC_SPAWN_FAILED;
    res->end_time = time_now();
    switch (err) {
    case ENOENT:
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "command not found: %s", what);
        break;
    case EACCES:
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "permission denied: %s", what);
        break;
    case ENOEXEC:
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "exec format error: %s", what);
        break;
    default:
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "cannot start %s: %s", what, strerror(err));
        break;
    }
}

unsigned long long exec_proc_start(pid_t pid)
{
    char path[64], line[1024], *p;
    unsigned long long start = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')'))) {
        /* after the command name (which may hold spaces): state is field
         * 3, starttime field 22 */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u"
                          " %*d %*d %*d %*d %*d %*d %llu", &start) != 1)
            start = 0;
    }
    fclose(f);
    return start;
}

/* Starts the child.  Returns its pid, or -1 with res filled. */
static pid_t exec_spawn(const struct exec_spec *spec, struct exec_result *res)
{
    static char sh[] = "/bin/sh", dash_c[] = "-c";
    char *sh_argv[] = { sh, dash_c, (char *)spec->shell, NULL };
    char *const *argv = spec->shell ? sh_argv : spec->argv;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    char **envp = NULL;
    int fd_in = -1, fd_out = -1, fd_err = -1;
    pid_t pid = -1;
    int rc;

    if (spec->cwd) {
        struct stat st;

        if (stat(spec->cwd, &st) < 0) {
            snprintf(res->error_msg, sizeof(res->error_msg),
                     "working directory %s: %s", spec->cwd, strerror(errno));
            goto fail;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(res->error_msg, sizeof(res->error_msg),
                     "working directory %s: not a directory", spec->cwd);
            goto fail;
        }
    }
    fd_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    fd_out = open_output(spec->stdout_path);
    fd_err = open_output(spec->stderr_path);
    if (fd_in < 0 || fd_out < 0 || fd_err < 0) {
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "cannot open task output: %s", strerror(errno));
        goto fail;
    }
    envp = env_build(spec->env_add);
    if (!envp) {
        snprintf(res->error_msg, sizeof(res->error_msg), "out of memory");
        goto fail;
    }

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd_in, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, fd_out, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, fd_err, STDERR_FILENO);
    if (spec->cwd)
        posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);
    /* belt and braces: every daemon descriptor is O_CLOEXEC, and any that
     * a library opened without it is closed here */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);

    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK
                                        | POSIX_SPAWN_SETSIGDEF);

    res->start_time = time_now();
    rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        pid = -1;
        spawn_failed(res, argv[0], rc);
    }
    free(envp);
    close(fd_in);
    close(fd_out);
    close(fd_err);
    return pid;

fail:
    res->outcome = EXEC_SPAWN_FAILED;
    res->start_time = res->end_time = time_now();
    if (fd_in >= 0)
        close(fd_in);
    if (fd_out >= 0)
        close(fd_out);
    if (fd_err >= 0)
        close(fd_err);
    free(envp);
    return -1;
}

static int poll_ms(double until)
{
    double left;

    if (isinf(until))
        return -1;
    left = until - time_mono();
    if (left <= 0)
        return 0;
    return left > INT_MAX / 1000 ? INT_MAX : (int)ceil(left * 1000);
}

/* Waits for pid; signals its group on timeout or cancel.  On return the
 * child has been reaped and *status holds its wait status. */
static void exec_wait(pid_t pid, const struct exec_spec *spec,
                      struct exec_ctl *ctl, struct exec_result *res,
                      siginfo_t *info)
{
    double deadline = spec->timeout > 0 ? time_mono() + spec->timeout : INFINITY;
    double kill_at = INFINITY;
    double grace = spec->kill_grace > 0 ? spec->kill_grace : 0;
    bool term_sent = false;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

    for (;;) {
        struct pollfd pfd[2];
        int nfds = 0, ms;

        memset(info, 0, sizeof(*info));
        if (waitid(P_PID, (id_t)pid, info, WEXITED | WNOHANG | WNOWAIT) == 0
            && info->si_pid == pid)
            break;
        if (!term_sent && ctl && atomic_load(&ctl->cancel)) {
            res->outcome = EXEC_CANCELED;
            kill(-pid, SIGTERM);
            term_sent = true;
            kill_at = time_mono() + grace;
            continue;
        }
        if (!term_sent && time_mono() >= deadline) {
            res->outcome = EXEC_TIMED_OUT;
            kill(-pid, SIGTERM);
            term_sent = true;
            kill_at = time_mono() + grace;
            continue;
        }
        if (term_sent && time_mono() >= kill_at) {
            kill(-pid, SIGKILL);
            kill_at = INFINITY;
            continue;
        }
        /* Once the group is signalled, only the SIGKILL time and the
         * child's exit matter: the timeout deadline has passed and a cancel
         * leaves the eventfd readable, so waiting on either would spin. */
        ms = poll_ms(term_sent ? kill_at : deadline);
        if (pidfd >= 0) {
            pfd[nfds].fd = pidfd;
            pfd[nfds++].events = POLLIN;
        } else if (ms < 0 || ms > 10) {
            ms = 10; /* no pidfd (old kernel): poll the child every 10 ms */
        }
        if (ctl && !term_sent) {
            pfd[nfds].fd = ctl->efd;
            pfd[nfds++].events = POLLIN;
        }
        poll(pfd, (nfds_t)nfds, ms);
    }
    /* The leader is a zombie: its pid, and so its group id, cannot be
     * reused yet.  Clear out what it left behind if we were stopping it. */
    if (term_sent)
        kill(-pid, SIGKILL);
    while (waitid(P_PID, (id_t)pid, info, WEXITED) < 0 && errno == EINTR)
        ;
    if (pidfd >= 0)
        close(pidfd);
}

int exec_run(const struct exec_spec *spec, struct exec_ctl *ctl,
             struct exec_result *res)
{
    siginfo_t info;
    pid_t pid;

    memset(res, 0, sizeof(*res));
    res->exit_code = -1;
    res->outcome = EXEC_EXITED;
    if (ctl && atomic_load(&ctl->cancel)) {
        res->outcome = EXEC_CANCELED;
        res->start_time = res->end_time = time_now();
        snprintf(res->error_msg, sizeof(res->error_msg), "canceled");
        return 0;
    }
    pid = exec_spawn(spec, res);
    if (pid < 0)
        return 0;
    if (spec->on_spawn)
        spec->on_spawn(spec->on_spawn_arg, pid);
    exec_wait(pid, spec, ctl, res, &info);
    res->end_time = time_now();
    if (info.si_code == CLD_EXITED) {
        res->exit_code = info.si_status;
    } else {
        res->term_signal = info.si_status;
    }
    switch (res->outcome) {
    case EXEC_CANCELED:
        snprintf(res->error_msg, sizeof(res->error_msg), "canceled");
        break;
    case EXEC_TIMED_OUT:
        snprintf(res->error_msg, sizeof(res->error_msg),
                 "timed out after %g s", spec->timeout);
        break;
    default:
        if (info.si_code == CLD_EXITED) {
            res->outcome = EXEC_EXITED;
            if (res->exit_code != 0)
                snprintf(res->error_msg, sizeof(res->error_msg),
                         "exit status %d", res->exit_code);
        } else {
            res->outcome = EXEC_SIGNALED;
            snprintf(res->error_msg, sizeof(res->error_msg),
                     "killed by signal %d (%s)%s", res->term_signal,
                     exec_signal_name(res->term_signal),
                     info.si_code == CLD_DUMPED ? ", core dumped" : "");
        }
        break;
    }
    return 0;
}
