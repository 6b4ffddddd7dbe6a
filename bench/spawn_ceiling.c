/*
 * spawn_ceiling.c - the machine's ceiling for running tiny tasks.
 *
 * Runs N copies of a command (default /bin/true) with posix_spawn, keeping P
 * of them in flight (default: online CPUs), and prints the elapsed time and
 * tasks per second.  Nothing sits between the loop and the kernel: no HTTP,
 * no database, no output capture.  Whatever qtaud's local pilot reaches for
 * the same N, P and command is compared with this figure (bench/run prints
 * the ratio), so this program must stay as thin as a spawner can be.
 *
 * Output is "key value" lines so that scripts can pick figures with awk:
 *
 *   spawn_ceiling: n=20000 parallelism=2 command=/bin/true
 *   elapsed_s 1.532104
 *   tasks_per_s 13054.0
 *   failed 0
 *
 * A command that exits non-zero or is killed counts as failed; a command
 * that cannot be spawned at all stops the run (exit 1), since every later
 * spawn would fail the same way.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Wformat=2 -Wshadow
 *        -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror
 *        -o bench/spawn_ceiling bench/spawn_ceiling.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *const default_argv[] = { "/bin/true", NULL };

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [-n TASKS] [-p PARALLELISM] [--] [COMMAND [ARG...]]\n"
            "  -n TASKS        how many times to run the command (default 20000)\n"
            "  -p PARALLELISM  how many run at once (default: online CPUs)\n"
            "  COMMAND         default /bin/true; looked up in PATH if it has no '/'\n",
            prog);
}

/* Parses a positive decimal that fits an int; -1 when s is not one. */
static int parse_positive(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > INT_MAX)
        return -1;
    return (int)v;
}

static double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Reaps one child of ours (we start no others), blocking.  Returns 1 when it
 * failed (non-zero exit or a signal), 0 when it succeeded, -1 on error.
 */
static int reap_one(void)
{
    int status;
    pid_t pid;

    do {
        pid = waitpid(-1, &status, 0);
    } while (pid < 0 && errno == EINTR);
    if (pid < 0)
        return -1;
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "tasks", required_argument, NULL, 'n' },
        { "parallelism", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char *const *cmd = (char *const *)default_argv;
    int n_tasks = 20000;
    int parallelism;
    int started = 0, running = 0, failed = 0;
    int use_path;
    long ncpu;
    double t0, elapsed;
    int c;

    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    parallelism = ncpu > 0 && ncpu < INT_MAX ? (int)ncpu : 1;

    /* '+': stop at the first non-option so the command keeps its own flags. */
    while ((c = getopt_long(argc, argv, "+n:p:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if ((n_tasks = parse_positive(optarg)) < 0) {
                fprintf(stderr, "spawn_ceiling: -n wants a positive integer, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'p':
            if ((parallelism = parse_positive(optarg)) < 0) {
                fprintf(stderr, "spawn_ceiling: -p wants a positive integer, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind < argc)
        cmd = argv + optind;
    use_path = strchr(cmd[0], '/') == NULL;

    printf("spawn_ceiling: n=%d parallelism=%d command=%s\n", n_tasks, parallelism,
           cmd[0]);
    fflush(stdout); /* children inherit stdout: don't let them see our buffer */

    t0 = mono_now();
    while (started < n_tasks || running > 0) {
        if (started < n_tasks && running < parallelism) {
            pid_t pid;
            int rc;

            rc = use_path ? posix_spawnp(&pid, cmd[0], NULL, NULL, cmd, environ)
                          : posix_spawn(&pid, cmd[0], NULL, NULL, cmd, environ);
            if (rc != 0) {
                fprintf(stderr, "spawn_ceiling: cannot spawn %s: %s\n", cmd[0],
                        strerror(rc));
                while (running > 0 && reap_one() >= 0)
                    running--;
                return 1;
            }
            started++;
            running++;
            continue;
        }
        switch (reap_one()) {
        case -1:
            fprintf(stderr, "spawn_ceiling: waitpid: %s\n", strerror(errno));
            return 1;
        case 1:
            failed++;
            break;
        default:
            break;
        }
        running--;
    }
    elapsed = mono_now() - t0;

    printf("elapsed_s %.6f\n", elapsed);
    printf("tasks_per_s %.1f\n", elapsed > 0 ? n_tasks / elapsed : 0.0);
    printf("failed %d\n", failed);
    return 0;
}
