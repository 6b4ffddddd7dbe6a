/*
 * test_service.c - qtaud under a service manager, with systemd's side
 * played by the test: the sd_notify datagrams (READY=1 only once the API
 * answers, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM) and socket
 * activation (a listening socket passed as fd 3 with LISTEN_FDS and
 * LISTEN_PID, served instead of binding).
 *
 * Each test starts the real daemon ($QTAUD_BIN) itself, by fork and exec,
 * since what is under test is the environment and descriptors it starts
 * with.  The notification tests need a build with libsystemd (without it
 * qtaud does not notify, by design) and are left out, with a message,
 * otherwise.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "tests/client.h"

extern char **environ;

static struct daemon d;

static void teardown(void)
{
    daemon_must_stop(&d);
}

static void make_state_dir(void)
{
    memset(&d, 0, sizeof(d));
    snprintf(d.dir, sizeof(d.dir), "/tmp/qtaud-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d.dir));
}

/* What the child sets up between fork and exec. */
struct child_env {
    const char *notify_socket;  /* NOTIFY_SOCKET, or NULL */
    int listen_fd;              /* becomes fd 3 with LISTEN_FDS=1; -1: none */
    bool wrong_pid;             /* LISTEN_PID names another process */
};

/* Forks and execs qtaud with the test client's usual flags and --listen
 * 127.0.0.1:0, so a qtaud that ignored a passed socket would show it by
 * binding another port.  Does not wait for it. */
static void spawn(const struct child_env *ce)
{
    const char *bin = getenv("QTAUD_BIN");
    pid_t pid;

    if (!bin)
        bin = "./qtaud";
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char pidbuf[32];

        if (ce->notify_socket)
            setenv("NOTIFY_SOCKET", ce->notify_socket, 1);
        else
            unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        if (ce->listen_fd >= 0) {
            if (ce->listen_fd != 3) {
                if (dup2(ce->listen_fd, 3) < 0)
                    _exit(127);
                close(ce->listen_fd);
            } else {
                fcntl(3, F_SETFD, 0);
            }
            snprintf(pidbuf, sizeof(pidbuf), "%ld",
                     ce->wrong_pid ? (long)getppid() : (long)getpid());
            setenv("LISTEN_FDS", "1", 1);
            setenv("LISTEN_PID", pidbuf, 1);
        }
        execl(bin, bin, "--listen", "127.0.0.1:0", "--state-dir", d.dir,
              "--allow-root", "--log-level", "warning", "--shutdown-grace", "2",
              (char *)NULL);
        _exit(127);
    }
    d.pid = pid;
}

static int read_port_file(void)
{
    return daemon_read_port(d.dir);
}

/* Waits until qtaud has written its port file (it does so once it
 * listens), or has exited; up to 30 s, a bound on a hang, not a measure. */
static int wait_port_file(void)
{
    for (int i = 0; i < 1500; i++) {
        struct timespec ts = { 0, 20 * 1000000L };
        int status, port = read_port_file();

        if (port > 0)
            return port;
        if (waitpid(d.pid, &status, WNOHANG) == d.pid) {
            d.pid = 0;
            return -1;
        }
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void set_url(int port)
{
    d.port = port;
    snprintf(d.url, sizeof(d.url), "http://127.0.0.1:%d", port);
    daemon_read_token(&d);   /* written before the port file */
}

static long health_status(void)
{
    struct http_resp r;
    long status = -1;

    if (http(&d, "GET", "/v1/health", NULL, NULL, &r) == 0)
        status = r.status;
    http_resp_free(&r);
    return status;
}

/* A listening TCP socket on a free loopback port. */
static int listening_socket(int *port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(s, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(s, 64), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return s;
}

/* A listening TCP socket on a free port of ::1, or -1 when this machine
 * has no IPv6 loopback. */
static int listening_socket6(int *port)
{
    struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    socklen_t len = sizeof(sa);
    int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        return -1;
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 64) < 0
        || getsockname(s, (struct sockaddr *)&sa, &len) < 0) {
        close(s);
        return -1;
    }
    *port = ntohs(sa.sin6_port);
    return s;
}

/* ---- socket activation --------------------------------------------------- */

START_TEST(test_socket_activation)
{
    int port, s, file_port;
    json_t *t;
    struct http_resp r;

    make_state_dir();
    s = listening_socket(&port);
    spawn(&(struct child_env){ .listen_fd = s });
    /* qtaud now holds the only copy: it answers on the port only if it
     * serves the passed socket */
    close(s);
    file_port = wait_port_file();
    ck_assert_msg(file_port > 0, "qtaud did not start (port file %d)", file_port);
    ck_assert_msg(file_port == port, "qtaud bound port %d instead of serving the "
                  "passed socket on %d", file_port, port);
    set_url(port);
    ck_assert_int_eq(health_status(), 200);

    /* the socket and the LISTEN_* variables are not handed on to tasks */
    t = http_json(&d, "POST", "/v1/tasks",
                  "{\"shell\": \"echo ${LISTEN_FDS-unset} ${LISTEN_PID-unset}; "
                  "if [ -e /proc/$$/fd/3 ]; then echo fd3 open; else echo fd3 closed; fi\"}",
                  201);
    ck_assert_ptr_nonnull(t);
    {
        long long id = jint(t, "id");
        char path[64];

        json_decref(t);
        t = wait_task(&d, id, 60);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(jstr(t, "state"), "SUCCESS");
        json_decref(t);
        snprintf(path, sizeof(path), "/v1/tasks/%lld/stdout", id);
        ck_assert_int_eq(http(&d, "GET", path, NULL, NULL, &r), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "unset unset\nfd3 closed\n");
        http_resp_free(&r);
    }
}
END_TEST

START_TEST(test_socket_activation_ipv6)
{
    int port, s, file_port;

    make_state_dir();
    s = listening_socket6(&port);
    if (s < 0) {
        printf("test_socket_activation_ipv6 skipped: no IPv6 loopback here\n");
        return;
    }
    spawn(&(struct child_env){ .listen_fd = s });
    close(s);
    file_port = wait_port_file();
    ck_assert_msg(file_port > 0, "qtaud did not start (port file %d)", file_port);
    ck_assert_int_eq(file_port, port);
    d.port = port;
    snprintf(d.url, sizeof(d.url), "http://[::1]:%d", port);
    daemon_read_token(&d);
    ck_assert_int_eq(health_status(), 200);
}
END_TEST

START_TEST(test_socket_for_another_pid_is_ignored)
{
    int port, s, file_port;

    make_state_dir();
    s = listening_socket(&port);
    spawn(&(struct child_env){ .listen_fd = s, .wrong_pid = true });
    file_port = wait_port_file();
    close(s);
    ck_assert_msg(file_port > 0, "qtaud did not start");
    /* LISTEN_PID names its parent: the socket is not qtaud's to take */
    ck_assert_int_ne(file_port, port);
    set_url(file_port);
    ck_assert_int_eq(health_status(), 200);
}
END_TEST

START_TEST(test_unusable_passed_socket_refused)
{
    /* bound but not listening (a socket unit with Accept=yes would pass a
     * connection instead): qtaud must say so and exit, not serve nothing */
    struct sockaddr_in sa = { .sin_family = AF_INET };
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status;

    make_state_dir();
    ck_assert_int_ge(s, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    spawn(&(struct child_env){ .listen_fd = s });
    close(s);
    ck_assert_int_eq(waitpid(d.pid, &status, 0), d.pid);
    d.pid = 0;
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 2);
    ck_assert_int_eq(read_port_file(), 0);
}
END_TEST

/* ---- sd_notify -------------------------------------------------------------- */

#ifdef HAVE_LIBSYSTEMD
struct notify {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static void notify_open(struct notify *n)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    ck_assert_int_lt(strlen(d.dir) + strlen("/notify"), sizeof(n->path));
    snprintf(n->path, sizeof(n->path), "%.*s/notify", (int)(sizeof(n->path) - 8), d.dir);
    memcpy(sa.sun_path, n->path, sizeof(sa.sun_path));
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(n->fd, 0);
    ck_assert_int_eq(bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
}

/* Reads datagrams until one holds the line want; returns that datagram
 * (static buffer) or NULL when qtaud exited first or nothing came for 60 s
 * (a bound on a hang, not a measure). */
static const char *notify_until(struct notify *n, const char *want)
{
    static char msg[4096];

    for (;;) {
        struct pollfd p = { .fd = n->fd, .events = POLLIN };
        ssize_t len;
        int rc = poll(&p, 1, 60000);

        if (rc <= 0)
            return NULL;
        len = recv(n->fd, msg, sizeof(msg) - 1, 0);
        if (len < 0)
            return NULL;
        msg[len] = '\0';
        /* a line of its own: "READY=1" must not match "XREADY=1" */
        for (const char *l = msg; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
            if (strncmp(l, want, strlen(want)) == 0
                && (l[strlen(want)] == '\n' || l[strlen(want)] == '\0'))
                return msg;
    }
}

START_TEST(test_ready_after_listener)
{
    struct notify n;
    const char *msg;
    char want[96];
    int port;

    make_state_dir();
    notify_open(&n);
    spawn(&(struct child_env){ .notify_socket = n.path, .listen_fd = -1 });
    msg = notify_until(&n, "READY=1");
    ck_assert_msg(msg, "no READY=1 from qtaud");
    /* At this moment, and without retrying: the port file is there and
     * the API answers.  A READY=1 sent before the listener was up fails
     * here, since nothing waits for qtaud in between. */
    port = read_port_file();
    ck_assert_msg(port > 0, "READY=1 came before the port file");
    set_url(port);
    ck_assert_int_eq(health_status(), 200);
    snprintf(want, sizeof(want), "STATUS=serving on 127.0.0.1:%d", port);
    ck_assert_msg(strstr(msg, want), "READY=1 without '%s': %s", want, msg);

    /* SIGHUP: RELOADING=1, then READY=1 again once reloaded */
    kill(d.pid, SIGHUP);
    ck_assert_msg(notify_until(&n, "RELOADING=1"), "no RELOADING=1 after SIGHUP");
    ck_assert_msg(notify_until(&n, "READY=1"), "no READY=1 after the reload");

    /* SIGTERM: STOPPING=1 as the drain starts, then a clean exit */
    kill(d.pid, SIGTERM);
    msg = notify_until(&n, "STOPPING=1");
    ck_assert_msg(msg, "no STOPPING=1 after SIGTERM");
    ck_assert_msg(strstr(msg, "STATUS=draining"), "STOPPING=1 without a status: %s", msg);
    {
        int status;

        ck_assert_int_eq(waitpid(d.pid, &status, 0), d.pid);
        d.pid = 0;
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0);
    }
    close(n.fd);
}
END_TEST

START_TEST(test_ready_with_passed_socket)
{
    struct notify n;
    const char *msg;
    char want[96];
    int port, s;

    make_state_dir();
    notify_open(&n);
    s = listening_socket(&port);
    spawn(&(struct child_env){ .notify_socket = n.path, .listen_fd = s });
    close(s);
    msg = notify_until(&n, "READY=1");
    ck_assert_msg(msg, "no READY=1 from qtaud");
    snprintf(want, sizeof(want), "STATUS=serving on 127.0.0.1:%d", port);
    ck_assert_msg(strstr(msg, want), "READY=1 without '%s': %s", want, msg);
    ck_assert_int_eq(read_port_file(), port);
    set_url(port);
    ck_assert_int_eq(health_status(), 200);
    ck_assert_int_eq(WEXITSTATUS(daemon_stop(&d, SIGTERM)), 0);
    close(n.fd);
}
END_TEST
#endif

static Suite *service_suite(void)
{
    Suite *s = suite_create("service");
    TCase *tc = tcase_create("live");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_socket_activation);
    tcase_add_test(tc, test_socket_activation_ipv6);
    tcase_add_test(tc, test_socket_for_another_pid_is_ignored);
    tcase_add_test(tc, test_unusable_passed_socket_refused);
#ifdef HAVE_LIBSYSTEMD
    tcase_add_test(tc, test_ready_after_listener);
    tcase_add_test(tc, test_ready_with_passed_socket);
#else
    printf("sd_notify tests skipped: built without libsystemd (configure --with-systemd)\n");
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    sr = srunner_create(service_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
