/*
 * test_access.c - who may use qtaud: the admin token on TCP, the owner's
 * uid on the UNIX socket, and the token file itself.
 *
 * Every test runs a real qtaud; the route table (api/routes.c) is walked so
 * that a route added later without a thought about access fails here.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/internal.h"
#include "tests/client.h"

static struct daemon d;

static void start(const char *const *extra)
{
    daemon_must_start(&d, extra);
}

static void teardown(void)
{
    daemon_must_stop(&d);
}

/* A route's path with its {} filled in. */
static void route_path(const struct route *rt, char *out, size_t len)
{
    const char *brace = strstr(rt->path, "{}");

    if (brace)
        snprintf(out, len, "%.*s1%s", (int)(brace - rt->path), rt->path, brace + 2);
    else
        snprintf(out, len, "%s", rt->path);
}

static long status_of(const struct route *rt, const char *token)
{
    struct http_resp r;
    char path[128];
    long status;

    route_path(rt, path, sizeof(path));
    /* agent calls name their pilot in the body: pilot 1 is the local one */
    ck_assert_int_eq(http_bearer(&d, rt->method, path,
                                 rt->auth == AUTH_PILOT ? "{\"pilot\": 1, \"agent_id\": 1}"
                                 : rt->has_body ? "{}" : NULL, token, &r), 0);
    status = r.status;
    if (status == 401) {
        ck_assert_str_eq(r.www_authenticate, "Bearer");
        ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "code"), "unauthorized");
    }
    http_resp_free(&r);
    return status;
}

/* Every route but health needs the token: none, a wrong one, one a byte
 * off, qtaud's token cut short or with more after it - all 401. */
START_TEST(test_every_route_needs_the_token)
{
    char off_by_one[300], longer[310], shorter[300];
    size_t owner_routes = 0;

    start(NULL);
    ck_assert_int_eq((int)strlen(d.token), 64);
    snprintf(off_by_one, sizeof(off_by_one), "%s", d.token);
    off_by_one[63] = off_by_one[63] == 'a' ? 'b' : 'a';
    snprintf(longer, sizeof(longer), "%sa", d.token);
    snprintf(shorter, sizeof(shorter), "%.63s", d.token);

    for (size_t i = 0; i < api_nroutes; i++) {
        const struct route *rt = &api_routes[i];
        const char *wrong[] = { "", "not-the-token", off_by_one, longer, shorter };

        if (rt->auth == AUTH_NONE) {
            ck_assert_msg(status_of(rt, "") == 200, "%s %s without a token", rt->method,
                          rt->path);
            continue;
        }
        for (size_t w = 0; w < sizeof(wrong) / sizeof(wrong[0]); w++)
            ck_assert_msg(status_of(rt, wrong[w]) == 401, "%s %s with token '%s'",
                          rt->method, rt->path, wrong[w]);
        if (rt->auth == AUTH_PILOT) {
            /* agent calls take only a pilot's token, never qtaud's own */
            ck_assert_msg(status_of(rt, d.token) == 401, "%s %s with the admin token",
                          rt->method, rt->path);
            continue;
        }
        owner_routes++;
        /* with the token the request reaches its handler (which may well
         * find no task 1); DELETE is left out so pilot 1 stays */
        if (strcmp(rt->method, "DELETE") != 0)
            ck_assert_msg(status_of(rt, d.token) != 401, "%s %s with the token",
                          rt->method, rt->path);
    }
    ck_assert_uint_ge(owner_routes, 10);
}
END_TEST

/* A token in the URL is refused even when the header is right: URLs end up
 * in logs and shell history. */
START_TEST(test_token_in_url_refused)
{
    static const char *const urls[] = {
        "/v1/tasks?token=", "/v1/tasks?access_token=", "/v1/health?token=",
        "/v1/tasks?state=PENDING&TOKEN=",
    };

    start(NULL);
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        struct http_resp r;
        char url[400];

        snprintf(url, sizeof(url), "%s%s", urls[i], d.token);
        ck_assert_int_eq(http(&d, "GET", url, NULL, NULL, &r), 0);
        ck_assert_msg(r.status == 401, "%s: %ld", urls[i], r.status);
        ck_assert_str_eq(jstr(json_object_get(r.json, "error"), "field"), "token");
        http_resp_free(&r);
    }
}
END_TEST

static int run_qtaud(const char *args, const char *log)
{
    const char *bin = getenv("QTAUD_BIN");
    char cmd[1500];
    int rc;

    snprintf(cmd, sizeof(cmd), "timeout 10 %s --allow-root --listen 127.0.0.1:0 %s "
             ">/dev/null 2>%s", bin ? bin : "./qtaud", args, log);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The token file: made once with mode 0600 and kept across restarts; a
 * file others can read, or a configured file that is missing, stops
 * start-up with the reason; a configured token is the one that opens. */
START_TEST(test_token_file)
{
    char path[400], saved[300], log[400], args[1200], own[400];
    struct stat st;
    FILE *f;

    start(NULL);
    snprintf(path, sizeof(path), "%s/token", d.dir);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    for (const char *p = d.token; *p; p++)
        ck_assert_msg(strchr("0123456789abcdef", *p), "token byte %c", *p);
    snprintf(saved, sizeof(saved), "%s", d.token);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    ck_assert_str_eq(d.token, saved);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);

    /* readable by others: refused, saying why */
    snprintf(log, sizeof(log), "%s/start.log", d.dir);
    ck_assert_int_eq(chmod(path, 0644), 0);
    snprintf(args, sizeof(args), "--state-dir %s", d.dir);
    ck_assert_int_eq(run_qtaud(args, log), 2);
    ck_assert_msg(file_contains(log, "mode 0600"), "no reason given");
    ck_assert_int_eq(chmod(path, 0600), 0);

    /* an empty or short token file is refused too */
    snprintf(own, sizeof(own), "%s/own-token", d.dir);
    f = fopen(own, "w");
    fputs("short\n", f);
    fclose(f);
    chmod(own, 0600);
    snprintf(args, sizeof(args), "--state-dir %s --token-file %s", d.dir, own);
    ck_assert_int_eq(run_qtaud(args, log), 2);
    ck_assert_msg(file_contains(log, "token-file") || file_contains(log, "16 to"), "no reason");

    /* a configured file that does not exist is not made up */
    snprintf(args, sizeof(args), "--state-dir %s --token-file %s/nope", d.dir, d.dir);
    ck_assert_int_eq(run_qtaud(args, log), 2);
    snprintf(path, sizeof(path), "%s/nope", d.dir);
    ck_assert_int_ne(access(path, F_OK), 0);

    /* a configured token is the one that opens */
    f = fopen(own, "w");
    fputs("  site-token-0123456789  \n", f);
    fclose(f);
    {
        const char *extra[] = { "--token-file", own, NULL };
        struct http_resp r;

        ck_assert_int_eq(daemon_start(&d, extra), 0);
        ck_assert_int_eq(http_bearer(&d, "GET", "/v1/tasks", NULL, saved, &r), 0);
        ck_assert_int_eq(r.status, 401);
        http_resp_free(&r);
        ck_assert_int_eq(http_bearer(&d, "GET", "/v1/tasks", NULL,
                                     "site-token-0123456789", &r), 0);
        ck_assert_int_eq(r.status, 200);
        http_resp_free(&r);
    }
}
END_TEST

/* Neither a right nor a wrong token reaches the log, even at debug level. */
START_TEST(test_token_never_logged)
{
    char log[] = "/tmp/qtaud-test-log-XXXXXX";
    const char *extra[] = { "--log-level", "debug", NULL };
    int fd = mkstemp(log);
    struct http_resp r;

    ck_assert_int_ge(fd, 0);
    close(fd);
    memset(&d, 0, sizeof(d));
    d.log_path = log;
    ck_assert_int_eq(daemon_start(&d, extra), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(http(&d, "POST", "/v1/tasks", "{\"command\": [\"true\"]}", NULL,
                              &r), 0);
        ck_assert_int_eq(r.status, 201);
        http_resp_free(&r);
        ck_assert_int_eq(http_bearer(&d, "GET", "/v1/tasks", NULL,
                                     "wrong-token-0123456789", &r), 0);
        ck_assert_int_eq(r.status, 401);
        http_resp_free(&r);
    }
    teardown();
    ck_assert_msg(file_contains(log, "serving on"), "the log is not where the test looks");
    ck_assert_msg(!file_contains(log, d.token) && !file_contains(log, "wrong-token-0123456789"),
                  "a token is in the log");
    unlink(log);
}
END_TEST

/* The owner needs no token on the UNIX socket, which has mode 0600. */
START_TEST(test_unix_socket_owner)
{
    char path[400];
    struct http_resp r;
    struct stat st;

    start(NULL);
    snprintf(path, sizeof(path), "%s/qtaud.sock", d.dir);
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(http_unix(&d, "POST", "/v1/tasks", "{\"command\": [\"echo\", \"via-socket\"]}",
                               &r), 0);
    ck_assert_int_eq(r.status, 201);
    http_resp_free(&r);
    ck_assert_int_eq(http_unix(&d, "GET", "/v1/tasks/1?wait=10", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(jstr(r.json, "state"), "SUCCESS");
    http_resp_free(&r);
    ck_assert_int_eq(http_unix(&d, "GET", "/v1/tasks/1/stdout", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "via-socket\n");
    http_resp_free(&r);
    /* the token rule against URLs holds here too */
    ck_assert_int_eq(http_unix(&d, "GET", "/v1/tasks?token=x", NULL, &r), 0);
    ck_assert_int_eq(r.status, 401);
    http_resp_free(&r);
    /* a clean stop removes the socket */
    teardown();
}
END_TEST

/* As uid nobody: connect to path and ask GET /v1/health.  Returns the
 * HTTP status, 1000 + errno when connect() fails, or -1. */
static int status_as_nobody(const char *path)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        char buf[64] = "";
        int fd, code = 0;
        ssize_t n;

        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
            _exit(255);
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            _exit(errno == EACCES ? 2 : 254);
        if (write(fd, "GET /v1/health HTTP/1.0\r\n\r\n", 27) != 27)
            _exit(253);
        n = read(fd, buf, sizeof(buf) - 1);
        if (n > 0 && sscanf(buf, "HTTP/1.%*d %d", &code) == 1)
            _exit(code == 403 ? 3 : code == 200 ? 4 : 252);
        _exit(251);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    switch (WEXITSTATUS(status)) {
    case 2: return 1000 + EACCES;
    case 3: return 403;
    case 4: return 200;
    default: return -WEXITSTATUS(status);
    }
}

/* Another uid cannot use the socket: the file's mode keeps it out, and
 * were the mode opened, qtaud's check of the peer's uid still refuses. */
START_TEST(test_unix_socket_other_uid)
{
    char path[400];

    if (geteuid() != 0) {
        fprintf(stderr, "test_unix_socket_other_uid: needs root to become nobody\n");
        return;
    }
    start(NULL);
    snprintf(path, sizeof(path), "%s/qtaud.sock", d.dir);
    ck_assert_int_eq(chmod(d.dir, 0711), 0);   /* nobody may reach the socket file */
    ck_assert_int_eq(status_as_nobody(path), 1000 + EACCES);
    ck_assert_int_eq(chmod(path, 0666), 0);
    ck_assert_int_eq(status_as_nobody(path), 403);
}
END_TEST

/* A socket file left by a killed qtaud is replaced; anything else at the
 * socket's path stops start-up; --socket none listens on TCP only. */
START_TEST(test_unix_socket_path)
{
    char path[400], log[400], args[1200];
    struct http_resp r;
    FILE *f;

    start(NULL);
    snprintf(path, sizeof(path), "%s/qtaud.sock", d.dir);
    daemon_stop(&d, SIGKILL);
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    ck_assert_int_eq(http_unix(&d, "GET", "/v1/tasks", NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_resp_free(&r);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    ck_assert_int_ne(access(path, F_OK), 0);

    f = fopen(path, "w");
    fputs("not a socket\n", f);
    fclose(f);
    snprintf(log, sizeof(log), "%s/start.log", d.dir);
    snprintf(args, sizeof(args), "--state-dir %s", d.dir);
    ck_assert_int_ne(run_qtaud(args, log), 0);
    ck_assert_msg(file_contains(log, "not a socket"), "no reason given");
    ck_assert(file_contains(path, "not a socket"));   /* left alone */
    unlink(path);

    {
        const char *extra[] = { "--socket", "none", NULL };

        ck_assert_int_eq(daemon_start(&d, extra), 0);
        ck_assert_int_ne(access(path, F_OK), 0);
    }
}
END_TEST

/* Listening beyond loopback works, and says what it means. */
START_TEST(test_non_loopback_warns)
{
    char log[] = "/tmp/qtaud-test-log-XXXXXX";
    const char *extra[] = { "--listen", "0.0.0.0:0", NULL };
    int fd = mkstemp(log);

    ck_assert_int_ge(fd, 0);
    close(fd);
    memset(&d, 0, sizeof(d));
    d.log_path = log;
    ck_assert_int_eq(daemon_start(&d, extra), 0);
    ck_assert_msg(file_contains(log, "not loopback"), "no warning logged");
    teardown();
    unlink(log);
    /* and the default listener says nothing of the kind */
    memset(&d, 0, sizeof(d));
    d.log_path = log;
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    ck_assert(!file_contains(log, "not loopback"));
    unlink(log);
}
END_TEST

/* A second qtaud on a state dir in use refuses to start, naming the first
 * one's pid, and leaves the first one's running task alone. */
START_TEST(test_state_dir_in_use)
{
    char log[400], args[600], want[64];
    json_t *t;
    long long id;

    start(NULL);
    t = http_json(&d, "POST", "/v1/tasks", "{\"command\": [\"sleep\", \"2\"]}", 201);
    id = jint(t, "id");
    json_decref(t);
    for (int i = 0; i < 250; i++) {   /* until it runs: up to 5 s */
        char path[64];
        bool running;

        snprintf(path, sizeof(path), "/v1/tasks/%lld", id);
        t = http_json(&d, "GET", path, NULL, 200);
        running = strcmp(jstr(t, "state"), "RUNNING") == 0;
        json_decref(t);
        if (running)
            break;
        usleep(20000);
    }
    snprintf(log, sizeof(log), "%s/second.log", d.dir);
    snprintf(args, sizeof(args), "--state-dir %s --socket none", d.dir);
    ck_assert_int_eq(run_qtaud(args, log), 2);
    snprintf(want, sizeof(want), "in use by another qtaud (pid %d)", (int)d.pid);
    ck_assert_msg(file_contains(log, want), "the refusal does not say '%s'", want);
    t = wait_task(&d, id, 30);
    ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
    ck_assert_int_eq(jint(t, "attempts"), 1);
    json_decref(t);
    /* the port file is still the first one's */
    ck_assert_int_eq(daemon_stop(&d, SIGTERM), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);   /* and the lock went with it */
}
END_TEST

/* A state dir others can enter is closed to them at start-up: it holds
 * the token and the store. */
START_TEST(test_state_dir_closed_to_others)
{
    struct stat st;

    memset(&d, 0, sizeof(d));
    snprintf(d.dir, sizeof(d.dir), "/tmp/qtaud-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d.dir));
    ck_assert_int_eq(chmod(d.dir, 0755), 0);
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    ck_assert_int_eq(stat(d.dir, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
}
END_TEST

static Suite *access_suite(void)
{
    Suite *s = suite_create("access");
    TCase *tc = tcase_create("access");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_every_route_needs_the_token);
    tcase_add_test(tc, test_token_in_url_refused);
    tcase_add_test(tc, test_token_file);
    tcase_add_test(tc, test_token_never_logged);
    tcase_add_test(tc, test_unix_socket_owner);
    tcase_add_test(tc, test_unix_socket_other_uid);
    tcase_add_test(tc, test_unix_socket_path);
    tcase_add_test(tc, test_non_loopback_warns);
    tcase_add_test(tc, test_state_dir_in_use);
    tcase_add_test(tc, test_state_dir_closed_to_others);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(access_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
