/*
 * test_recovery.c - nothing acknowledged is lost when qtaud is killed.
 *
 * A bounded kill loop: bursts of tasks (quick successes, failures that
 * retry, tasks still running), kill -9 at a random moment of each burst -
 * while submissions are answered, while the writer commits, while tasks
 * run - and a restart on the same state dir each time.  At the end every
 * task that got a 201 has exactly one terminal state, the metrics table
 * holds one row per attempt (attempts and rows agree, no duplicates),
 * a SUCCESS is never followed by another attempt, and SQLite's
 * integrity check is ok.  QTAUD_KILL_ROUNDS sets the number of rounds
 * (default 4; scripts/soak runs many more).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "common/csv.h"
#include "tests/client.h"

#define MAX_IDS 100000

static struct daemon d;
static bool acked[MAX_IDS];     /* task ids answered 201 */
static long long max_id;

static void teardown(void)
{
    daemon_must_stop(&d);
}

/* Submits one burst as an array; records the ids if it was answered 201
 * (a request cut off by the kill is simply not acknowledged). */
static void burst(int n, unsigned round)
{
    json_t *arr = json_array(), *ids;
    struct http_resp r;
    char *text;
    size_t i;
    json_t *v;

    for (int k = 0; k < n; k++) {
        switch (k % 4) {
        case 0:
            json_array_append_new(arr, json_pack("{s:[s]}", "command", "true"));
            break;
        case 1:   /* fails once, then succeeds: a retry across kills */
            json_array_append_new(arr, json_pack("{s:s, s:i}", "shell",
                                                 "[ $(( $$ % 2 )) -eq 0 ] || exit 7",
                                                 "max_retries", 5));
            break;
        case 2:
            json_array_append_new(arr, json_pack("{s:s}", "shell", "sleep 0.05"));
            break;
        default:
            json_array_append_new(arr, json_pack("{s:s}", "shell", "exit 3"));
            break;
        }
    }
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    (void)round;
    if (http(&d, "POST", "/v1/tasks", text, NULL, &r) == 0 && r.status == 201) {
        ids = json_object_get(r.json, "ids");
        json_array_foreach(ids, i, v) {
            long long id = json_integer_value(v);

            ck_assert_int_lt(id, MAX_IDS);
            acked[id] = true;
            if (id > max_id)
                max_id = id;
        }
    }
    http_resp_free(&r);
    free(text);
}

/* Kills qtaud with SIGKILL after a random delay, with a burst in flight. */
static void *killer(void *arg)
{
    useconds_t delay = *(useconds_t *)arg;

    usleep(delay);
    kill(d.pid, SIGKILL);
    return NULL;
}

/* SQLite's integrity check of the store in dir says ok. */
static void store_integrity_ok(const char *dir)
{
    char path[400];
    sqlite3 *db;
    sqlite3_stmt *st;

    snprintf(path, sizeof(path), "%s/qtaud.db", dir);
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

START_TEST(test_kill_loop)
{
    const char *env = getenv("QTAUD_KILL_ROUNDS");
    int rounds = env ? atoi(env) : 4;
    unsigned seed = (unsigned)time(NULL);
    struct http_resp r;
    size_t pos = 0;
    char **fields;
    size_t nfields;
    int *rows;
    bool *succeeded, *stored;
    long long max_stored = 0, unacked = 0;

    fprintf(stderr, "test_kill_loop: %d rounds, seed %u\n", rounds, seed);
    srand(seed);
    ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--local-cores", "2", NULL }),
                     0);
    for (int round = 0; round < rounds; round++) {
        pthread_t th;
        useconds_t delay = (useconds_t)(rand() % 400000);
        int status;

        pthread_create(&th, NULL, killer, &delay);
        for (int b = 0; b < 4; b++)
            burst(200, (unsigned)round);
        pthread_join(th, NULL);
        while (waitpid(d.pid, &status, 0) < 0)
            ;
        d.pid = 0;
        ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--local-cores", "2",
                                                                 NULL }), 0);
    }
    /* everything acknowledged ends, exactly once (requeued attempts wait
     * behind all the rest: the deadline is for the whole drain) */
    double drain_until = (double)time(NULL) + 60 + rounds * 30;

    for (long long id = 1; id <= max_id; id++) {
        json_t *t;
        char p[64];

        if (!acked[id])
            continue;
        t = wait_task(&d, id, drain_until - (double)time(NULL) > 1
                                  ? drain_until - (double)time(NULL) : 1);
        ck_assert_msg(t != NULL, "task %lld lost", id);
        ck_assert_msg(strcmp(jstr(t, "state"), "SUCCESS") == 0
                          || strcmp(jstr(t, "state"), "FAILED") == 0,
                      "task %lld ended %s", id, jstr(t, "state"));
        json_decref(t);
        (void)p;
    }
    /* A task the store committed just before a kill exists although its
     * 201 never reached the client: it too must end, once.  The store
     * says which tasks exist; wait for those the client never heard of. */
    stored = calloc(MAX_IDS, sizeof(*stored));
    for (long long after = 0;;) {
        char p[96];
        json_t *page, *t;
        size_t i;

        snprintf(p, sizeof(p), "/v1/tasks?limit=1000&after=%lld", after);
        page = http_json(&d, "GET", p, NULL, 200);
        ck_assert_ptr_nonnull(page);
        json_array_foreach(json_object_get(page, "tasks"), i, t) {
            long long id = jint(t, "id");

            ck_assert_int_lt(id, MAX_IDS);
            stored[id] = true;
            if (id > max_stored)
                max_stored = id;
        }
        if (!json_is_integer(json_object_get(page, "next"))) {
            json_decref(page);
            break;
        }
        after = json_integer_value(json_object_get(page, "next"));
        json_decref(page);
    }
    for (long long id = 1; id <= max_id; id++)
        ck_assert_msg(!acked[id] || stored[id], "task %lld acknowledged, not stored", id);
    for (long long id = 1; id <= max_stored; id++) {
        json_t *t;

        if (!stored[id] || acked[id])
            continue;
        unacked++;
        t = wait_task(&d, id, drain_until - (double)time(NULL) > 1
                                  ? drain_until - (double)time(NULL) : 1);
        ck_assert_msg(t && (strcmp(jstr(t, "state"), "SUCCESS") == 0
                            || strcmp(jstr(t, "state"), "FAILED") == 0),
                      "unacknowledged task %lld did not end", id);
        json_decref(t);
    }
    /* one metrics row per attempt */
    rows = calloc((size_t)max_stored + 1, sizeof(*rows));
    succeeded = calloc((size_t)max_stored + 1, sizeof(*succeeded));
    ck_assert_int_eq(http(&d, "GET", "/v1/metrics.csv", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(csv_read_record(r.body, r.len, &pos, &fields, &nfields), 1);
    csv_free_record(fields, nfields);
    while (csv_read_record(r.body, r.len, &pos, &fields, &nfields) == 1) {
        long long id = atoll(fields[8]);
        int attempt = atoi(fields[11]);

        ck_assert_int_eq(nfields, 16);
        ck_assert_msg(id >= 1 && id <= max_stored && stored[id], "row for task %lld, which "
                      "the store does not hold", id);
        /* rows come in attempt order, one each: attempt k is the k-th */
        ck_assert_msg(attempt == rows[id] + 1, "task %lld: attempt %d after %d rows", id,
                      attempt, rows[id]);
        /* a task recorded SUCCESS never runs again */
        ck_assert_msg(!succeeded[id], "task %lld ran again after its SUCCESS", id);
        succeeded[id] = strcmp(fields[6], "SUCCESS") == 0;
        rows[id]++;
        csv_free_record(fields, nfields);
    }
    http_resp_free(&r);
    for (long long id = 1; id <= max_stored; id++) {
        json_t *t;
        char p[64];

        if (!stored[id])
            continue;
        snprintf(p, sizeof(p), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", p, NULL, 200);
        ck_assert_msg(jint(t, "attempts") == rows[id], "task %lld: %lld attempts, %d rows",
                      id, jint(t, "attempts"), rows[id]);
        json_decref(t);
    }
    free(rows);
    free(succeeded);
    free(stored);
    store_integrity_ok(d.dir);
    fprintf(stderr, "test_kill_loop: %lld tasks submitted (%lld stored, their 201 cut off "
            "by a kill), all ended once\n", max_id, unacked);
}
END_TEST

/* Whether pid is gone: no such process, or a zombie (this machine's init
 * may be slow to reap what qtaud's death left to it). */
static bool process_gone(pid_t pid)
{
    char path[64], line[512], *p;
    FILE *f;
    bool gone = true;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return true;
    if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')')))
        gone = p[2] == 'Z';
    fclose(f);
    return gone;
}

/* A task runs in its own session, so it outlives a kill -9 of qtaud; the
 * restart stops that very process (pid and start time recorded with the
 * attempt) before the attempt runs again, so it never runs twice at once. */
START_TEST(test_orphan_stopped)
{
    char marker[64], body[400];
    json_t *t;
    long long id;
    pid_t old = 0;
    FILE *f;
    int status;

    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    snprintf(marker, sizeof(marker), "/tmp/qtaud-orphan.%d", (int)getpid());
    unlink(marker);
    snprintf(body, sizeof(body),
             "{\"shell\": \"[ -e %s ] && exit 0; echo $$ > %s; exec sleep 300\"}",
             marker, marker);
    t = http_json(&d, "POST", "/v1/tasks", body, 201);
    id = jint(t, "id");
    json_decref(t);
    for (int i = 0; i < 250 && old == 0; i++) {
        f = fopen(marker, "r");
        if (f) {
            int v = 0;

            if (fscanf(f, "%d", &v) == 1)
                old = (pid_t)v;
            fclose(f);
        }
        if (old == 0)
            usleep(20000);
    }
    ck_assert_int_gt(old, 1);
    usleep(200000);   /* the pid is on disk once the writer committed */
    kill(d.pid, SIGKILL);
    while (waitpid(d.pid, &status, 0) < 0)
        ;
    d.pid = 0;
    ck_assert_msg(!process_gone(old), "the task did not outlive qtaud (test premise)");
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    for (int i = 0; i < 250 && !process_gone(old); i++)
        usleep(20000);
    ck_assert_msg(process_gone(old), "pid %d of the interrupted attempt still runs", (int)old);
    /* and the attempt runs again - here it finds the marker and is done */
    t = wait_task(&d, id, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 2);
    json_decref(t);
    unlink(marker);
}
END_TEST

/* POSTs an array of n tasks with long names (to make the store grow);
 * returns the HTTP status and fills msg with the error message, if any. */
static long submit_array(int n, char *msg, size_t len)
{
    json_t *arr = json_array();
    struct http_resp r;
    char name[200], *text;
    long status;

    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    for (int k = 0; k < n; k++)
        json_array_append_new(arr, json_pack("{s:[s], s:s}", "command", "true",
                                             "name", name));
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (http(&d, "POST", "/v1/tasks", text, NULL, &r) != 0) {
        free(text);
        return -1;
    }
    status = r.status;
    snprintf(msg, len, "%s", r.json ? jstr(json_object_get(r.json, "error"), "message") : "");
    http_resp_free(&r);
    free(text);
    return status;
}

/* Submits until an answer other than 201 comes (or tries run out). */
static long submit_until_refused(char *msg, size_t len)
{
    long status = 201;

    for (int i = 0; i < 200 && status == 201; i++)
        status = submit_array(500, msg, len);
    return status;
}

/* Submits until a 201 comes back, for up to about 10 s. */
static long submit_until_accepted(char *msg, size_t len)
{
    long status = 0;

    for (int i = 0; i < 50 && status != 201; i++) {
        status = submit_array(10, msg, len);
        if (status != 201)
            usleep(200000);
    }
    return status;
}

/* A state dir on a full file system: new work is a 503 naming the cause,
 * what was acknowledged stays, qtaud keeps serving, and it takes work
 * again once there is room.  Needs root (a small tmpfs mount); skipped,
 * and said so, without it. */
START_TEST(test_store_full)
{
    char dir[128], cmd[400], msg[400], filler[200];
    json_t *t;
    long status;
    FILE *f;

    snprintf(dir, sizeof(dir), "/tmp/qtaud-fs-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=3m qtaud-test %s 2>/dev/null", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_store_full: SKIPPED: cannot mount a tmpfs "
                        "(needs root)\n");
        rmdir(dir);
        return;
    }
    snprintf(d.dir, sizeof(d.dir), "%s", dir);
    ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--no-local-pilot", NULL }), 0);
    /* no pilot runs them: they wait, PENDING, in the store */
    ck_assert_int_eq(submit_array(5, msg, sizeof(msg)), 201);

    /* full: fill what the store has left */
    snprintf(filler, sizeof(filler), "%s/filler", dir);
    f = fopen(filler, "w");
    ck_assert_ptr_nonnull(f);
    {
        static char block[65536];

        while (fwrite(block, 1, sizeof(block), f) == sizeof(block))
            ;
        fclose(f);
    }
    status = submit_until_refused(msg, sizeof(msg));
    ck_assert_msg(status == 503, "full store answered %ld (%s)", status, msg);
    ck_assert_msg(strstr(msg, "full") != NULL || strstr(msg, "disk") != NULL,
                  "message: %s", msg);
    json_decref(http_json(&d, "GET", "/v1/health", NULL, 200));
    t = http_json(&d, "GET", "/v1/tasks/1", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");
    json_decref(t);
    unlink(filler);
    status = submit_until_accepted(msg, sizeof(msg));
    ck_assert_msg(status == 201, "after freeing space: %ld (%s)", status, msg);

    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    d.pid = 0;
    ck_assert_int_eq(daemon_start(&d, (const char *const[]){ "--no-local-pilot", NULL }), 0);
    t = http_json(&d, "GET", "/v1/tasks/5", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");
    json_decref(t);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    d.pid = 0;
    snprintf(cmd, sizeof(cmd), "umount %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    rmdir(dir);
    d.dir[0] = '\0';
}
END_TEST

/* Runs a shell command, quiet; returns its exit status (-1: no exit). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/*
 * The store's file system turns read-only under a running qtaud, the way
 * the kernel does it after a disk error: ext4 on a loop device, mounted
 * errors=remount-ro, told to fail through its trigger_fs_error knob (a
 * plain remount,ro is refused while the store is open for writing).  New
 * work is a 503 with SQLite's reason, reads go on, qtaud stops when told;
 * after fsck and a rw mount, everything acknowledged is there, nothing
 * refused is, and the store is intact.  Needs root and loop devices;
 * skipped, and said so, without them.  --durability full: what was
 * acknowledged must be on the disk, not in the page cache the failing
 * file system drops.
 */
START_TEST(test_store_read_only)
{
    char img[] = "/tmp/qtaud-ro-XXXXXX", mnt[128], loop[64] = "", msg[400];
    const char *const args[] = { "--no-local-pilot", "--durability", "full", NULL };
    long status;
    json_t *t;
    FILE *p;
    int fd = mkstemp(img);

    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(mnt, sizeof(mnt), "%s.mnt", img);
    ck_assert_int_eq(mkdir(mnt, 0700), 0);
    if (sh("truncate -s 64M %s && mkfs.ext4 -q %s >/dev/null 2>&1", img, img) != 0) {
        fprintf(stderr, "test_store_read_only: SKIPPED: no mkfs.ext4\n");
        goto out;
    }
    {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "losetup -f --show %s 2>/dev/null", img);
        p = popen(cmd, "r");
        if (!p || !fgets(loop, sizeof(loop), p))
            loop[0] = '\0';
        if (p)
            pclose(p);
        loop[strcspn(loop, "\n")] = '\0';
    }
    /* a loop device keeps a read-only flag someone set on it before */
    if (!loop[0] || sh("blockdev --setrw %s", loop) != 0
        || sh("mount -o errors=remount-ro %s %s 2>/dev/null", loop, mnt) != 0) {
        fprintf(stderr, "test_store_read_only: SKIPPED: cannot attach and mount a "
                        "loop device (needs root and /dev/loop*)\n");
        goto out;
    }
    snprintf(d.dir, sizeof(d.dir), "%s/state", mnt);
    ck_assert_msg(mkdir(d.dir, 0700) == 0, "mkdir %s: %s", d.dir, strerror(errno));
    ck_assert_int_eq(daemon_start(&d, args), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(submit_array(5, msg, sizeof(msg)), 201);   /* tasks 1-20 */

    ck_assert_int_eq(sh("echo qtaud-test > /sys/fs/ext4/%s/trigger_fs_error",
                        strrchr(loop, '/') + 1), 0);
    ck_assert_int_ne(sh("touch %s/probe 2>/dev/null", mnt), 0);   /* read-only now */
    for (int i = 0; i < 3; i++) {
        status = submit_array(5, msg, sizeof(msg));
        ck_assert_msg(status == 503, "read-only store answered %ld (%s)", status, msg);
        ck_assert_msg(strstr(msg, "Read-only file system") != NULL,
                      "message does not say why: %s", msg);
    }
    fprintf(stderr, "test_store_read_only: refused with: %s\n", msg);
    json_decref(http_json(&d, "GET", "/v1/health", NULL, 200));
    t = http_json(&d, "GET", "/v1/tasks/20", NULL, 200);
    ck_assert_str_eq(jstr(t, "state"), "PENDING");
    json_decref(t);
    {
        int ws = daemon_stop(&d, SIGTERM);

        ck_assert_msg(WIFEXITED(ws), "qtaud died of signal %d on a read-only store",
                      WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    }

    /* the admin's repair: unmount, fsck, mount read-write again */
    ck_assert_int_eq(sh("umount %s", mnt), 0);
    ck_assert_int_le(sh("e2fsck -fy %s >/dev/null 2>&1", loop), 1);
    ck_assert_int_eq(sh("mount %s %s", loop, mnt), 0);
    ck_assert_int_eq(daemon_start(&d, args), 0);
    t = http_json(&d, "GET", "/v1/tasks?limit=1000", NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(t, "tasks")), 20);
    json_decref(t);
    ck_assert_int_eq(submit_array(5, msg, sizeof(msg)), 201);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    store_integrity_ok(d.dir);
    d.dir[0] = '\0';
out:
    if (loop[0]) {
        sh("umount %s 2>/dev/null", mnt);
        sh("losetup -d %s", loop);
    }
    rmdir(mnt);
    unlink(img);
}
END_TEST

/* After the test case, in the parent process: whatever a failed
 * test_store_read_only left mounted or attached goes. */
static void read_only_cleanup(void)
{
    sh("awk '$2 ~ /^\\/tmp\\/qtaud-ro-/ { print $2 }' /proc/mounts | "
       "xargs -r -n1 umount 2>/dev/null; "
       "losetup -a 2>/dev/null | grep /tmp/qtaud-ro- | cut -d: -f1 | "
       "xargs -r -n1 losetup -d 2>/dev/null; rm -rf /tmp/qtaud-ro-*");
}

int main(void)
{
    Suite *s = suite_create("recovery");
    TCase *tc = tcase_create("kill");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_unchecked_fixture(tc, NULL, read_only_cleanup);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_orphan_stopped);
    tcase_add_test(tc, test_store_full);
    tcase_add_test(tc, test_store_read_only);
    tcase_add_test(tc, test_kill_loop);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
