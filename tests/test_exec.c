/*
 * test_exec.c - unit tests for common/exec.c, which runs one task command.
 *
 * Covers: each outcome and the exact error_msg words DESIGN.md promises
 * (exit status, signal, spawn failures, bad cwd, unopenable output); shell
 * mode versus argv mode; the child's environment, cwd, stdin (/dev/null),
 * output files (contents, truncation, mode 0600), signal dispositions and
 * inherited descriptors; timeout and cancel (SIGTERM, grace, SIGKILL, the
 * whole process group, no busy waiting while doing so); cancel before a
 * run and exec_ctl_reset; many exec_run() calls at once from several
 * threads; exec_signal_name().
 *
 * Every test runs in its own temporary directory inside one made for the
 * run under /tmp (both with mkdtemp, all removed at the end, failed tests'
 * included).  Children are real: /bin/sh, sleep, ls, env.  Timing bounds
 * are generous so a loaded machine or a sanitizer build does not make
 * them flaky; none is a benchmark.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/exec.h"
#include "common/timeutil.h"

static char root[PATH_MAX / 2]; /* this run's directory, made by main() */
static char tmpdir[PATH_MAX];   /* this test's, inside root */
static char out_path[PATH_MAX + 16];
static char err_path[PATH_MAX + 16];

/* ---- helpers ------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Each test gets its own directory inside root.  A failed assertion in
 * Check's fork mode _exit()s without running this teardown; main()
 * removing root afterwards covers that. */
static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/test-XXXXXX", root);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(out_path, sizeof(out_path), "%s/out", tmpdir);
    snprintf(err_path, sizeof(err_path), "%s/err", tmpdir);
}

static void teardown(void)
{
    if (tmpdir[0])
        rm_tree(tmpdir);
    tmpdir[0] = '\0';
}

/* tmpdir/name into buf. */
static char *tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

/* Whole content of path, NUL-terminated, malloc'd; NULL if unreadable. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, n;
    char chunk[4096];

    if (!f)
        return NULL;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        char *p = realloc(buf, len + n + 1);

        ck_assert_ptr_nonnull(p);
        buf = p;
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!buf)
        buf = calloc(1, 1);
    else
        buf[len] = '\0';
    return buf;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    ck_assert_int_eq(fchmod(fd, mode), 0);
    close(fd);
}

static void assert_file_eq(const char *path, const char *want)
{
    char *got = slurp(path);

    ck_assert_msg(got != NULL, "cannot read %s", path);
    ck_assert_str_eq(got, want);
    free(got);
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static double thread_cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A spec running script with /bin/sh -c, output to tmpdir/out and /err. */
static struct exec_spec spec_shell(const char *script)
{
    struct exec_spec s = {
        .shell = script,
        .stdout_path = out_path,
        .stderr_path = err_path,
        .kill_grace = 1.0,
    };
    return s;
}

static struct exec_spec spec_argv(char *const *argv)
{
    struct exec_spec s = spec_shell(NULL);

    s.argv = argv;
    return s;
}

/* exec_run() that must return 0; *wall and *cpu (optional) get the wall
 * time it took and the CPU time the calling thread spent in it. */
static void run(const struct exec_spec *spec, struct exec_ctl *ctl,
                struct exec_result *res, double *wall, double *cpu)
{
    double t0 = time_mono(), c0 = thread_cpu();

    ck_assert_int_eq(exec_run(spec, ctl, res), 0);
    if (wall)
        *wall = time_mono() - t0;
    if (cpu)
        *cpu = thread_cpu() - c0;
}

/* Waiting for a child must sleep in poll(), not spin: the thread may use
 * only a small part of the wall time as CPU (a spinning wait uses ~all). */
static void assert_no_spin(double wall, double cpu)
{
    ck_assert_msg(cpu < 0.05 + 0.2 * wall,
                  "exec_run used %.3f s of CPU in %.3f s: busy waiting",
                  cpu, wall);
}

/* Whether pid no longer runs.  A zombie counts as gone: the grandchildren
 * in these tests are reparented to PID 1, which in a container may reap
 * late or never, and a zombie has already died. */
static bool pid_gone(pid_t pid)
{
    char path[64], buf[512];
    const char *paren;
    FILE *f;
    size_t n;

    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return true;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    paren = strrchr(buf, ')'); /* comm may hold spaces and parens */
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

static bool wait_pid_gone(pid_t pid, double secs)
{
    double until = time_mono() + secs;

    while (!pid_gone(pid)) {
        if (time_mono() > until)
            return false;
        sleep_s(0.01);
    }
    return true;
}

/* Waits (bounded) until path exists and is not empty. */
static bool wait_file(const char *path, double secs)
{
    double until = time_mono() + secs;
    struct stat st;

    while (stat(path, &st) < 0 || st.st_size == 0) {
        if (time_mono() > until)
            return false;
        sleep_s(0.01);
    }
    return true;
}

/* A thread that cancels ctl after delay seconds, or once wait_for (if set)
 * is a non-empty file and then delay seconds. */
struct canceller {
    pthread_t th;
    struct exec_ctl *ctl;
    double delay;
    const char *wait_for;
    double cancelled_at;    /* time_mono() of the cancel */
};

static void *canceller_main(void *arg)
{
    struct canceller *c = arg;

    if (c->wait_for)
        wait_file(c->wait_for, 10);
    sleep_s(c->delay);
    c->cancelled_at = time_mono();
    exec_ctl_cancel(c->ctl);
    return NULL;
}

static void canceller_start(struct canceller *c, struct exec_ctl *ctl,
                            double delay, const char *wait_for)
{
    c->ctl = ctl;
    c->delay = delay;
    c->wait_for = wait_for;
    ck_assert_int_eq(pthread_create(&c->th, NULL, canceller_main, c), 0);
}

static void canceller_join(struct canceller *c)
{
    ck_assert_int_eq(pthread_join(c->th, NULL), 0);
}

/* ---- outcomes ----------------------------------------------------------- */

/* How a child ends maps to outcome, exit_code, term_signal and the words
 * in error_msg; start_time/end_time bracket the run on the wall clock. */
static const struct {
    const char *script;
    enum exec_outcome outcome;
    int exit_code;
    int term_signal;
    const char *error_msg;
} end_cases[] = {
    { "exit 0", EXEC_EXITED, 0, 0, "" },
    { "true", EXEC_EXITED, 0, 0, "" },
    { "exit 3", EXEC_EXITED, 3, 0, "exit status 3" },
    { "exit 255", EXEC_EXITED, 255, 0, "exit status 255" },
    { "kill -9 $$", EXEC_SIGNALED, -1, 9, "killed by signal 9 (SIGKILL)" },
    { "kill -TERM $$", EXEC_SIGNALED, -1, 15, "killed by signal 15 (SIGTERM)" },
    { "kill -HUP $$", EXEC_SIGNALED, -1, 1, "killed by signal 1 (SIGHUP)" },
};

START_TEST(test_end)
{
    struct exec_spec spec = spec_shell(end_cases[_i].script);
    struct exec_result res;
    double before, after;

    before = time_now();
    run(&spec, NULL, &res, NULL, NULL);
    after = time_now();
    ck_assert_msg(res.outcome == end_cases[_i].outcome, "%s: outcome %d",
                  end_cases[_i].script, res.outcome);
    ck_assert_int_eq(res.exit_code, end_cases[_i].exit_code);
    ck_assert_int_eq(res.term_signal, end_cases[_i].term_signal);
    ck_assert_str_eq(res.error_msg, end_cases[_i].error_msg);
    ck_assert_double_ge(res.start_time, before);
    ck_assert_double_le(res.start_time, res.end_time);
    ck_assert_double_le(res.end_time, after);
    ck_assert_double_lt(res.end_time - res.start_time, 5.0);
}
END_TEST

/* Spawn failures never start a child; error_msg names the cause. */
enum { FAIL_ARGV_CMD, FAIL_ARGV_TMP };
static const struct {
    int argv_kind;         /* the command: as given, or a file in tmpdir */
    const char *cmd;
    const char *cwd;       /* in tmpdir; NULL for none */
    const char *stdout_in; /* stdout path in tmpdir; NULL for the default */
    const char *want;      /* error_msg; %s is the path in tmpdir */
} fail_cases[] = {
    { FAIL_ARGV_CMD, "no-such-command-xyz", NULL, NULL,
      "command not found: no-such-command-xyz" },
    { FAIL_ARGV_CMD, "/no/such/dir/cmd", NULL, NULL,
      "command not found: /no/such/dir/cmd" },
    { FAIL_ARGV_TMP, "noexec", NULL, NULL, "permission denied: %s" },
    { FAIL_ARGV_TMP, "garbage", NULL, NULL, "exec format error: %s" },
    { FAIL_ARGV_CMD, "true", "missing", NULL,
      "working directory %s: No such file or directory" },
    { FAIL_ARGV_CMD, "true", "noexec", NULL,
      "working directory %s: not a directory" },
    { FAIL_ARGV_CMD, "true", NULL, "missing/out",
      "cannot open task output: No such file or directory" },
};

START_TEST(test_spawn_failed)
{
    char cmd[PATH_MAX + 16], cwd[PATH_MAX + 16], out[PATH_MAX + 16];
    char want[2 * PATH_MAX + 64], marker[PATH_MAX + 16];
    char *argv[2] = { cmd, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    const char *in_tmp = NULL;

    /* noexec: a valid script without any x bit (root cannot run it
     * either); garbage: executable bits but no valid format */
    write_file(tmp_path(cmd, sizeof(cmd), "noexec"),
               "#!/bin/sh\ntouch \"$0.ran\"\n", 0644);
    write_file(tmp_path(cmd, sizeof(cmd), "garbage"),
               "\x01\x02\x03 this is not a program\n", 0755);

    if (fail_cases[_i].argv_kind == FAIL_ARGV_TMP)
        in_tmp = tmp_path(cmd, sizeof(cmd), fail_cases[_i].cmd);
    else
        snprintf(cmd, sizeof(cmd), "%s", fail_cases[_i].cmd);
    if (fail_cases[_i].cwd)
        spec.cwd = in_tmp = tmp_path(cwd, sizeof(cwd), fail_cases[_i].cwd);
    if (fail_cases[_i].stdout_in)
        spec.stdout_path = tmp_path(out, sizeof(out), fail_cases[_i].stdout_in);

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(want, sizeof(want), fail_cases[_i].want, in_tmp ? in_tmp : "");
#pragma GCC diagnostic pop

    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_msg(res.outcome == EXEC_SPAWN_FAILED, "outcome %d", res.outcome);
    ck_assert_str_eq(res.error_msg, want);
    ck_assert_int_eq(res.exit_code, -1);
    ck_assert_int_eq(res.term_signal, 0);
    ck_assert_double_gt(res.start_time, 1e9);
    ck_assert_double_le(res.start_time, res.end_time);
    ck_assert_int_eq(access(tmp_path(marker, sizeof(marker), "noexec.ran"),
                            F_OK), -1);
}
END_TEST

/* ---- how the child is started ------------------------------------------ */

/* shell runs with /bin/sh -c (so $0 is /bin/sh) and wins over argv. */
START_TEST(test_shell_mode)
{
    static char bogus[] = "no-such-command-xyz";
    char *argv[] = { bogus, NULL };
    struct exec_spec spec = spec_shell("echo \"$0\"; x=4; echo $((x * 10 + 2)) | cat");
    struct exec_result res;

    spec.argv = argv;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    assert_file_eq(out_path, "/bin/sh\n42\n");
}
END_TEST

/* argv is executed directly: quotes, $, globs, pipes, ; reach it as is. */
START_TEST(test_argv_no_shell)
{
    static char echo[] = "echo", a1[] = "a;b", a2[] = "$HOME", a3[] = "*",
                a4[] = "`id`", a5[] = "x | y > z", a6[] = "'q' \"q\"";
    char *argv[] = { echo, a1, a2, a3, a4, a5, a6, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    char z[PATH_MAX + 16];

    spec.cwd = tmpdir;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    assert_file_eq(out_path, "a;b $HOME * `id` x | y > z 'q' \"q\"\n");
    ck_assert_int_eq(access(tmp_path(z, sizeof(z), "z"), F_OK), -1);
}
END_TEST

/* env_add entries reach the child and replace inherited ones of the same
 * name (exactly, not by prefix); the rest of environ is inherited. */
static const struct {
    const char *line;
    int count;
} env_want[] = {
    { "QT_T_OVERRIDE=new", 1 },
    { "QT_T_OVERRIDE=old", 0 },
    { "QT_T_ADDED=a=b c", 1 },
    { "QT_T_KEPT=kept", 1 },
    { "QT_T_PREFIXED=inherited", 1 }, /* QT_T_PREFIX= must not replace it */
    { "QT_T_PREFIX=short", 1 },
    { "QT_T_EMPTY=", 1 },
};

START_TEST(test_env)
{
    static char e1[] = "QT_T_OVERRIDE=new", e2[] = "QT_T_ADDED=a=b c",
                e3[] = "QT_T_PREFIX=short", e4[] = "QT_T_EMPTY=";
    static char env[] = "env";
    char *env_add[] = { e1, e2, e3, e4, NULL };
    char *argv[] = { env, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    char *out;

    setenv("QT_T_OVERRIDE", "old", 1);
    setenv("QT_T_KEPT", "kept", 1);
    setenv("QT_T_PREFIXED", "inherited", 1);
    spec.env_add = env_add;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    out = slurp(out_path);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < sizeof(env_want) / sizeof(env_want[0]); i++) {
        size_t len = strlen(env_want[i].line);
        const char *l = out;
        int count = 0;

        while (*l) {
            const char *nl = strchr(l, '\n');

            if (strncmp(l, env_want[i].line, len) == 0 && l[len] == '\n')
                count++;
            if (!nl)
                break;
            l = nl + 1;
        }
        ck_assert_msg(count == env_want[i].count, "%s: %d times, want %d\n%s",
                      env_want[i].line, count, env_want[i].count, out);
    }
    free(out);
    unsetenv("QT_T_OVERRIDE");
    unsetenv("QT_T_KEPT");
    unsetenv("QT_T_PREFIXED");
}
END_TEST

/* cwd is the child's working directory; relative paths resolve there. */
START_TEST(test_cwd)
{
    static char pwd[] = "/bin/pwd";
    char *argv[] = { pwd, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    char sub[PATH_MAX + 16], real[PATH_MAX], want[PATH_MAX + 32];

    ck_assert_int_eq(mkdir(tmp_path(sub, sizeof(sub), "sub dir"), 0700), 0);
    ck_assert_ptr_nonnull(realpath(sub, real));
    snprintf(want, sizeof(want), "%s\n", real);
    spec.cwd = sub;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    assert_file_eq(out_path, want);

    spec = spec_shell("echo here > rel.txt");
    spec.cwd = sub;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.exit_code, 0);
    snprintf(want, sizeof(want), "%s/rel.txt", sub);
    assert_file_eq(want, "here\n");
}
END_TEST

/* stdin is /dev/null: a reader gets EOF at once, even without a timeout
 * to rescue a test whose own stdin is a terminal or an open pipe. */
START_TEST(test_stdin_devnull)
{
    struct exec_spec spec = spec_shell("n=$(cat | wc -c); echo \"read $n\"; "
                                       "readlink /proc/self/fd/0 >&2");
    struct exec_result res;
    double wall;

    spec.timeout = 10;
    run(&spec, NULL, &res, &wall, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_double_lt(wall, 5.0);
    assert_file_eq(out_path, "read 0\n");
    assert_file_eq(err_path, "/dev/null\n");
}
END_TEST

/* stdout and stderr go to their files, created with mode 0600 whatever
 * the umask, and truncated when they exist. */
START_TEST(test_output_files)
{
    struct exec_spec spec = spec_shell("echo to-out; echo to-err >&2; printf x");
    struct exec_result res;
    struct stat st;
    mode_t old_umask;

    write_file(err_path, "old content that is longer than the new\n", 0600);
    old_umask = umask(0);
    run(&spec, NULL, &res, NULL, NULL);
    umask(old_umask);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    assert_file_eq(out_path, "to-out\nx");
    assert_file_eq(err_path, "to-err\n");
    ck_assert_int_eq(stat(out_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    ck_assert_int_eq(stat(err_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
}
END_TEST

/* No stdout/stderr path: both go to /dev/null. */
START_TEST(test_output_default_devnull)
{
    char path[PATH_MAX + 16];
    struct exec_spec spec;
    struct exec_result res;
    char script[2 * PATH_MAX];

    snprintf(script, sizeof(script),
             "o=$(readlink /proc/$$/fd/1); e=$(readlink /proc/$$/fd/2); "
             "echo \"$o $e\" > '%s'",
             tmp_path(path, sizeof(path), "links"));
    spec = spec_shell(script);
    spec.stdout_path = spec.stderr_path = NULL;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    assert_file_eq(path, "/dev/null /dev/null\n");
}
END_TEST

/* A descriptor the caller opened without O_CLOEXEC does not leak into the
 * child: ls sees 0 (/dev/null), 1 and 2 (the output files) and only its
 * own directory descriptor besides. */
START_TEST(test_no_fd_leak)
{
    static char ls[] = "ls", l[] = "-l", dir[] = "/proc/self/fd";
    static char lc[] = "LC_ALL=C";
    char *argv[] = { ls, l, dir, NULL };
    char *env_add[] = { lc, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    char real_out[PATH_MAX], real_err[PATH_MAX];
    int p[2], seen[3] = { 0, 0, 0 }, others = 0;
    char *out, *line, *save = NULL;

    ck_assert_int_eq(pipe(p), 0);        /* deliberately without O_CLOEXEC */
    ck_assert_int_ge(dup2(p[0], 100), 0); /* and one far above the rest */
    spec.env_add = env_add;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_ptr_nonnull(realpath(out_path, real_out));
    ck_assert_ptr_nonnull(realpath(err_path, real_err));

    out = slurp(out_path);
    ck_assert_ptr_nonnull(out);
    for (line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, " -> "), *num;
        const char *target;
        int fd;

        if (!arrow)
            continue; /* "total 0" */
        *arrow = '\0';
        target = arrow + 4;
        num = strrchr(line, ' ');
        ck_assert_ptr_nonnull(num);
        fd = atoi(num + 1);
        if (fd == 0) {
            ck_assert_str_eq(target, "/dev/null");
        } else if (fd == 1) {
            ck_assert_str_eq(target, real_out);
        } else if (fd == 2) {
            ck_assert_str_eq(target, real_err);
        } else {
            /* ls's own opendir() of /proc/self/fd */
            ck_assert_msg(strncmp(target, "/proc/", 6) == 0,
                          "fd %d -> %s leaked into the child", fd, target);
            others++;
        }
        if (fd >= 0 && fd <= 2)
            seen[fd]++;
    }
    free(out);
    ck_assert_int_eq(seen[0], 1);
    ck_assert_int_eq(seen[1], 1);
    ck_assert_int_eq(seen[2], 1);
    ck_assert_int_le(others, 1);
    close(p[0]);
    close(p[1]);
    close(100);
}
END_TEST

/* Value of the hex field "name:" in a /proc/PID/status text. */
static unsigned long long status_mask(const char *status, const char *name)
{
    const char *p = strstr(status, name);

    ck_assert_msg(p != NULL, "no %s in\n%s", name, status);
    return strtoull(p + strlen(name), NULL, 16);
}

/* The child starts with default signal dispositions and an empty mask,
 * whatever the daemon ignores or blocks: otherwise an inherited SIG_IGN
 * for SIGTERM would make every timeout wait for the grace period.  Only
 * the standard signals 1-31 are checked: glibc's posix_spawn itself leaves
 * its internal signals 32 and 33 ignored in the child (a glibc child sets
 * them up again; nothing exec.c can ask for). */
START_TEST(test_signal_defaults)
{
    static char cat[] = "cat", status[] = "/proc/self/status";
    char *argv[] = { cat, status, NULL };
    struct exec_spec spec = spec_argv(argv);
    struct exec_result res;
    struct sigaction ign = { .sa_handler = SIG_IGN }, old_term, old_pipe;
    sigset_t block, old_mask;
    unsigned long long std_signals = 0x7fffffffULL; /* bit n-1: signal n */
    char *out;

    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    ck_assert_int_eq(sigaction(SIGTERM, &ign, &old_term), 0);
    ck_assert_int_eq(sigaction(SIGPIPE, &ign, &old_pipe), 0);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
    run(&spec, NULL, &res, NULL, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    out = slurp(out_path);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(status_mask(out, "\nSigBlk:") == 0, "blocked in child:\n%s", out);
    ck_assert_msg((status_mask(out, "\nSigIgn:") & std_signals) == 0,
                  "ignored in child:\n%s", out);
    free(out);
}
END_TEST

/* ---- timeout ------------------------------------------------------------ */

/* A child that obeys SIGTERM ends at the timeout, by SIGTERM; one that
 * exits before the timeout is not touched by it. */
START_TEST(test_timeout)
{
    struct exec_spec spec = spec_shell("sleep 30");
    struct exec_result res;
    double wall;

    spec.timeout = 0.3;
    spec.kill_grace = 5;
    run(&spec, NULL, &res, &wall, NULL);
    ck_assert_msg(res.outcome == EXEC_TIMED_OUT, "outcome %d", res.outcome);
    ck_assert_str_eq(res.error_msg, "timed out after 0.3 s");
    ck_assert_int_eq(res.term_signal, SIGTERM);
    ck_assert_int_eq(res.exit_code, -1);
    ck_assert_double_ge(wall, 0.3);
    ck_assert_double_lt(wall, 2.0); /* not the grace period, not 30 s */

    spec = spec_shell("sleep 0.1; exit 4");
    spec.timeout = 10;
    run(&spec, NULL, &res, &wall, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 4);
    ck_assert_str_eq(res.error_msg, "exit status 4");
    ck_assert_double_lt(wall, 5.0);
}
END_TEST

/* The words use the timeout as the user gave it. */
START_TEST(test_timeout_words)
{
    struct exec_spec spec = spec_shell("sleep 30");
    struct exec_result res;

    spec.timeout = 1;
    run(&spec, NULL, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_TIMED_OUT);
    ck_assert_str_eq(res.error_msg, "timed out after 1 s");
}
END_TEST

/* A child that ignores SIGTERM is SIGKILLed once kill_grace has passed,
 * and exec_run() sleeps, not spins, through the grace period. */
START_TEST(test_timeout_grace_kill)
{
    struct exec_spec spec = spec_shell("trap '' TERM; sleep 30");
    struct exec_result res;
    double wall, cpu;

    spec.timeout = 0.3;
    spec.kill_grace = 0.6;
    run(&spec, NULL, &res, &wall, &cpu);
    ck_assert_msg(res.outcome == EXEC_TIMED_OUT, "outcome %d", res.outcome);
    ck_assert_str_eq(res.error_msg, "timed out after 0.3 s");
    ck_assert_int_eq(res.term_signal, SIGKILL);
    ck_assert_double_ge(wall, 0.9);
    ck_assert_double_lt(wall, 3.0);
    assert_no_spin(wall, cpu);
}
END_TEST

/* ---- cancel ------------------------------------------------------------- */

/* Cancel from another thread while the child runs: SIGTERM, CANCELED. */
START_TEST(test_cancel_running)
{
    struct exec_ctl *ctl = exec_ctl_create();
    struct exec_spec spec = spec_shell("sleep 30");
    struct exec_result res;
    struct canceller c;
    double wall, cpu;

    ck_assert_ptr_nonnull(ctl);
    canceller_start(&c, ctl, 0.3, NULL);
    run(&spec, ctl, &res, &wall, &cpu);
    canceller_join(&c);
    ck_assert_msg(res.outcome == EXEC_CANCELED, "outcome %d", res.outcome);
    ck_assert_str_eq(res.error_msg, "canceled");
    ck_assert_int_eq(res.term_signal, SIGTERM);
    /* no lower bound on wall: the canceller's 0.3 s start before run()
     * takes its first time, so a wall a hair under 0.3 s is right; that
     * the cancel ended it, CANCELED and SIGTERM say */
    ck_assert_double_lt(wall, 2.0);
    assert_no_spin(wall, cpu);
    exec_ctl_destroy(ctl);
}
END_TEST

/* Cancel of a child that ignores SIGTERM: SIGKILL after kill_grace, with
 * no busy waiting meanwhile (the cancel eventfd stays readable). */
START_TEST(test_cancel_grace_kill)
{
    struct exec_ctl *ctl = exec_ctl_create();
    struct exec_spec spec = spec_shell("trap '' TERM; sleep 30");
    struct exec_result res;
    struct canceller c;
    double wall, cpu;

    ck_assert_ptr_nonnull(ctl);
    spec.kill_grace = 0.6;
    canceller_start(&c, ctl, 0.2, NULL);
    run(&spec, ctl, &res, &wall, &cpu);
    canceller_join(&c);
    ck_assert_msg(res.outcome == EXEC_CANCELED, "outcome %d", res.outcome);
    ck_assert_str_eq(res.error_msg, "canceled");
    ck_assert_int_eq(res.term_signal, SIGKILL);
    /* SIGKILL no sooner than kill_grace after the cancel (the canceller's
     * clock starts before run()'s, so measure from the cancel itself) */
    ck_assert_double_ge(time_mono() - c.cancelled_at, spec.kill_grace);
    ck_assert_double_lt(wall, 3.0);
    assert_no_spin(wall, cpu);
    exec_ctl_destroy(ctl);
}
END_TEST

/* exec.h: a cancel asks "the exec_run() using ctl (now or next)" to stop,
 * so one issued before exec_run() ends it CANCELED without starting the
 * child, and stays pending until exec_ctl_reset(); after the reset the
 * next task runs normally and its wait sleeps (the eventfd is drained). */
START_TEST(test_cancel_before_and_reset)
{
    struct exec_ctl *ctl = exec_ctl_create();
    char marker[PATH_MAX + 16], script[2 * PATH_MAX];
    struct exec_spec spec;
    struct exec_result res;
    double wall, cpu;

    ck_assert_ptr_nonnull(ctl);
    snprintf(script, sizeof(script), "touch '%s'; sleep 0.5",
             tmp_path(marker, sizeof(marker), "started"));
    spec = spec_shell(script);

    exec_ctl_cancel(ctl);
    exec_ctl_cancel(ctl); /* twice is the same as once */
    for (int i = 0; i < 2; i++) {
        run(&spec, ctl, &res, NULL, NULL);
        ck_assert_msg(res.outcome == EXEC_CANCELED, "run %d: outcome %d", i,
                      res.outcome);
        ck_assert_str_eq(res.error_msg, "canceled");
        ck_assert_double_le(res.start_time, res.end_time);
        ck_assert_int_eq(access(marker, F_OK), -1);
    }

    exec_ctl_reset(ctl);
    run(&spec, ctl, &res, &wall, &cpu);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_str_eq(res.error_msg, "");
    ck_assert_int_eq(access(marker, F_OK), 0);
    ck_assert_double_ge(wall, 0.5);
    assert_no_spin(wall, cpu);

    /* reset with nothing pending is harmless */
    exec_ctl_reset(ctl);
    run(&spec, ctl, &res, NULL, NULL);
    ck_assert_int_eq(res.outcome, EXEC_EXITED);
    exec_ctl_destroy(ctl);
    exec_ctl_destroy(NULL);
}
END_TEST

/* ---- the process group -------------------------------------------------- */

/* Timeout and cancel signal the child's whole process group: a background
 * grandchild is gone afterwards, also one that ignores SIGTERM (it is
 * SIGKILLed as soon as the leader has died, not after the grace period),
 * and the SIGTERM itself reaches the grandchild, so it can clean up: there
 * the leader waits for it in its own TERM trap.  Scripts run in tmpdir. */
#define GC_PLAIN "sleep 1000 & echo $! > gc.pid; sleep 30"
#define GC_IGNORES_TERM \
    "(trap '' TERM; exec sleep 1000) & echo $! > gc.pid; sleep 30"
#define GC_TRAPS_TERM                                                      \
    "trap 'wait; exit 0' TERM; "                                           \
    "(trap 'echo TERM > gc.term; exit 0' TERM; sleep 1000 & wait) & "      \
    "echo $! > gc.pid; sleep 30"

static const struct {
    bool cancel; /* stop by cancel, else by timeout */
    const char *script;
    bool term_marker; /* the grandchild must have written gc.term */
} group_cases[] = {
    { false, GC_PLAIN, false },        { true, GC_PLAIN, false },
    { false, GC_IGNORES_TERM, false }, { true, GC_IGNORES_TERM, false },
    { false, GC_TRAPS_TERM, true },    { true, GC_TRAPS_TERM, true },
};

START_TEST(test_group_killed)
{
    struct exec_ctl *ctl = exec_ctl_create();
    struct exec_spec spec = spec_shell(group_cases[_i].script);
    char pidfile[PATH_MAX + 16], marker[PATH_MAX + 16];
    struct exec_result res;
    struct canceller c;
    double wall;
    char *text;
    long pid;

    ck_assert_ptr_nonnull(ctl);
    tmp_path(pidfile, sizeof(pidfile), "gc.pid");
    tmp_path(marker, sizeof(marker), "gc.term");
    spec.cwd = tmpdir;
    spec.kill_grace = 5;
    if (group_cases[_i].cancel)
        canceller_start(&c, ctl, 0.2, pidfile);
    else
        spec.timeout = 0.5;
    run(&spec, ctl, &res, &wall, NULL);
    if (group_cases[_i].cancel)
        canceller_join(&c);

    ck_assert_int_eq(res.outcome,
                     group_cases[_i].cancel ? EXEC_CANCELED : EXEC_TIMED_OUT);
    ck_assert_double_lt(wall, 4.0); /* well inside the 5 s grace */
    text = slurp(pidfile);
    ck_assert_msg(text && *text, "the grandchild's pid was not written");
    pid = strtol(text, NULL, 10);
    free(text);
    ck_assert_int_gt(pid, 1);
    if (!wait_pid_gone((pid_t)pid, 2.0)) {
        kill((pid_t)pid, SIGKILL); /* ours: do not leave it behind */
        ck_abort_msg("grandchild %ld survived its task", pid);
    }
    if (group_cases[_i].term_marker)
        assert_file_eq(marker, "TERM\n");
    exec_ctl_destroy(ctl);
}
END_TEST

/* ---- threads ------------------------------------------------------------ */

/* Many exec_run() at once from several threads, each with its own ctl
 * (reset per task, as the pools do) and output file: all end EXITED 0
 * with their own output. */
enum { N_THREADS = 8, N_TASKS = 50 };

struct worker {
    pthread_t th;
    int id;
    int ok;
    char first_error[1024];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct exec_ctl *ctl = exec_ctl_create();
    char out[PATH_MAX + 32], name[32], tag[32], want[40];
    static char echo[] = "/bin/echo";
    char *argv[] = { echo, tag, NULL };
    struct exec_spec spec = spec_argv(argv);

    snprintf(name, sizeof(name), "out-%d", w->id);
    spec.stdout_path = tmp_path(out, sizeof(out), name);
    spec.stderr_path = NULL;
    for (int i = 0; ctl && i < N_TASKS; i++) {
        struct exec_result res;
        char *got;

        snprintf(tag, sizeof(tag), "t%d-%d", w->id, i);
        snprintf(want, sizeof(want), "%s\n", tag);
        exec_ctl_reset(ctl);
        if (exec_run(&spec, ctl, &res) != 0 || res.outcome != EXEC_EXITED
            || res.exit_code != 0) {
            if (!w->first_error[0])
                snprintf(w->first_error, sizeof(w->first_error),
                         "%s: outcome %d exit %d: %s", tag, res.outcome,
                         res.exit_code, res.error_msg);
            continue;
        }
        got = slurp(out);
        if (got && strcmp(got, want) == 0)
            w->ok++;
        else if (!w->first_error[0])
            snprintf(w->first_error, sizeof(w->first_error),
                     "%s: output \"%s\"", tag, got ? got : "(none)");
        free(got);
    }
    if (!ctl)
        snprintf(w->first_error, sizeof(w->first_error), "exec_ctl_create");
    exec_ctl_destroy(ctl);
    return NULL;
}

START_TEST(test_concurrent)
{
    struct worker w[N_THREADS];

    memset(w, 0, sizeof(w));
    for (int i = 0; i < N_THREADS; i++) {
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        ck_assert_int_eq(pthread_join(w[i].th, NULL), 0);
    for (int i = 0; i < N_THREADS; i++)
        ck_assert_msg(w[i].ok == N_TASKS, "thread %d: %d of %d ok; %s", i,
                      w[i].ok, N_TASKS, w[i].first_error);
}
END_TEST

/* ---- signal names ------------------------------------------------------- */

static const struct {
    int sig;
    const char *name;
} sig_cases[] = {
    { SIGKILL, "SIGKILL" }, { SIGTERM, "SIGTERM" }, { SIGHUP, "SIGHUP" },
    { SIGINT, "SIGINT" },   { SIGSEGV, "SIGSEGV" }, { SIGABRT, "SIGABRT" },
    { SIGPIPE, "SIGPIPE" }, { SIGSYS, "SIGSYS" },   { 9, "SIGKILL" },
    { 0, "SIG?" },          { -1, "SIG?" },         { 1000, "SIG?" },
};

START_TEST(test_signal_name)
{
    ck_assert_str_eq(exec_signal_name(sig_cases[_i].sig), sig_cases[_i].name);
}
END_TEST

/* ---- runner ------------------------------------------------------------- */

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60); /* sanitizer builds on a busy machine */
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *exec_suite(void)
{
    Suite *s = suite_create("exec");
    TCase *tc;

    tc = tcase(s, "outcome");
    tcase_add_loop_test(tc, test_end, 0, N_OF(end_cases));
    tcase_add_loop_test(tc, test_spawn_failed, 0, N_OF(fail_cases));

    tc = tcase(s, "start");
    tcase_add_test(tc, test_shell_mode);
    tcase_add_test(tc, test_argv_no_shell);
    tcase_add_test(tc, test_env);
    tcase_add_test(tc, test_cwd);
    tcase_add_test(tc, test_stdin_devnull);
    tcase_add_test(tc, test_output_files);
    tcase_add_test(tc, test_output_default_devnull);
    tcase_add_test(tc, test_no_fd_leak);
    tcase_add_test(tc, test_signal_defaults);

    tc = tcase(s, "timeout");
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_timeout_words);
    tcase_add_test(tc, test_timeout_grace_kill);

    tc = tcase(s, "cancel");
    tcase_add_test(tc, test_cancel_running);
    tcase_add_test(tc, test_cancel_grace_kill);
    tcase_add_test(tc, test_cancel_before_and_reset);

    tc = tcase(s, "group");
    tcase_add_loop_test(tc, test_group_killed, 0, N_OF(group_cases));

    tc = tcase(s, "threads");
    tcase_add_test(tc, test_concurrent);

    tc = tcase(s, "names");
    tcase_add_loop_test(tc, test_signal_name, 0, N_OF(sig_cases));
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    snprintf(root, sizeof(root), "/tmp/qt-test-exec-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(exec_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    rm_tree(root);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
