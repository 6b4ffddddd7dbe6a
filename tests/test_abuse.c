/*
 * test_abuse.c - hostile and malformed clients against a live qtaud.
 *
 * Each test starts the real daemon on a free loopback port with its own
 * state dir.  The malformed requests are written by hand on raw sockets
 * (libcurl would refuse to send most of them); while each abuse goes on,
 * a normal client must keep getting answers from GET /v1/health.  The
 * validation table goes through libcurl (tests/client.c) like any user.
 *
 * Nothing here asserts on time: waits have generous guards only so that
 * a broken daemon fails the test instead of hanging it.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/buf.h"
#include "common/jsoncheck.h"
#include "tests/client.h"

#define GUARD_MS 60000      /* longest wait for an answer before failing */

static struct daemon d;

static void start(const char *const *extra)
{
    daemon_must_start(&d, extra);
}

static void teardown(void)
{
    daemon_must_stop(&d);
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* A TCP connection to the daemon, from source address src (NULL: any). */
static int raw_connect(const char *src)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    if (src) {
        struct sockaddr_in from = { .sin_family = AF_INET };

        ck_assert_int_eq(inet_pton(AF_INET, src, &from.sin_addr), 1);
        ck_assert_msg(bind(fd, (struct sockaddr *)&from, sizeof(from)) == 0,
                      "bind %s: %s", src, strerror(errno));
    }
    sa.sin_port = htons((uint16_t)d.port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

/* The one place raw requests are built: request line, Host, the extra
 * header lines given (each ending in CRLF), and the bearer token from
 * <state-dir>/token when the daemon wrote one; then the blank line. */
static void raw_head(struct buf *b, const char *method, const char *path,
                     const char *headers)
{
    char tpath[300], token[256] = "";
    FILE *f;

    buf_addf(b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    snprintf(tpath, sizeof(tpath), "%s/token", d.dir);
    if ((f = fopen(tpath, "r"))) {
        if (fgets(token, sizeof(token), f))
            token[strcspn(token, "\r\n")] = '\0';
        fclose(f);
        if (token[0])
            buf_addf(b, "Authorization: Bearer %s\r\n", token);
    }
    buf_adds(b, headers ? headers : "");
    buf_adds(b, "\r\n");
}

/* Sends all of data; returns 0, or -1 when the peer closed or reset. */
static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one answer: up to the end of its headers and Content-Length bytes
 * of body, into out.  Returns the status, 0 if the connection was closed
 * (or reset) before any answer, -2 if nothing came within the guard. */
static int read_answer(int fd, struct buf *out)
{
    int status = 0;

    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        char chunk[4096], *end;
        ssize_t n;

        if (out->len > 0 && (end = strstr(out->data, "\r\n\r\n"))) {
            const char *cl = strcasestr(out->data, "\r\nContent-Length:");
            size_t head = (size_t)(end + 4 - out->data);
            size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;

            if (sscanf(out->data, "HTTP/1.%*d %d", &status) != 1)
                status = -1;
            if (out->len >= head + body)
                return status;
        }
        if (poll(&pfd, 1, GUARD_MS) != 1)
            return -2;
        n = recv(fd, chunk, sizeof(chunk), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return out->len > 0 ? -1 : 0;
        buf_add(out, chunk, (size_t)n);
    }
}

/* True if the server has closed fd (after whatever it still sends). */
static bool closed_by_server(int fd)
{
    char chunk[4096];

    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (poll(&pfd, 1, GUARD_MS) != 1)
            return false;
        n = recv(fd, chunk, sizeof(chunk), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0 && errno != EINTR)
            return true;
    }
}

/* One GET /v1/health on a raw connection from src; its status. */
static int raw_health(const char *src)
{
    struct buf b = BUF_INIT, in = BUF_INIT;
    int fd = raw_connect(src), status;

    raw_head(&b, "GET", "/v1/health", "Connection: close\r\n");
    ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
    status = read_answer(fd, &in);
    close(fd);
    buf_release(&b);
    buf_release(&in);
    return status;
}

/* The normal client: GET /v1/health answers 200. */
static void assert_healthy(const char *when)
{
    struct http_resp r;

    ck_assert_msg(http(&d, "GET", "/v1/health", NULL, NULL, &r) == 0 && r.status == 200,
                  "health did not answer 200 %s (status %ld)", when, r.status);
    http_resp_free(&r);
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    ck_assert_int_gt(kib, 0);
    return kib;
}

/* A client that sends its request a byte per second holds one connection
 * and nothing else: others are served meanwhile, and the slow one is
 * answered once its request is whole. */
START_TEST(test_slow_header)
{
    struct buf b = BUF_INIT, in = BUF_INIT;
    int fd;
    size_t slow = 8;

    start(NULL);
    raw_head(&b, "GET", "/v1/health", "Connection: close\r\n");
    fd = raw_connect(NULL);
    for (size_t i = 0; i < slow; i++) {
        ck_assert_int_eq(send_all(fd, b.data + i, 1), 0);
        assert_healthy("while a client sends its header a byte per second");
        sleep_ms(1000);
    }
    ck_assert_int_eq(send_all(fd, b.data + slow, b.len - slow), 0);
    ck_assert_int_eq(read_answer(fd, &in), 200);
    close(fd);
    buf_release(&b);
    buf_release(&in);
}
END_TEST

/* A connection that sends nothing is closed after idle-timeout. */
START_TEST(test_idle_connection_closed)
{
    int fd;

    start((const char *const[]){ "--idle-timeout", "1", NULL });
    fd = raw_connect(NULL);
    assert_healthy("while an idle connection is open");
    ck_assert_msg(closed_by_server(fd), "qtaud kept an idle connection open");
    close(fd);
    assert_healthy("after closing an idle connection");
}
END_TEST

/* One address may hold max-connections-per-client connections; the next
 * is closed at once, without an answer, while another address is served. */
START_TEST(test_per_client_limit)
{
    enum { LIMIT = 4 };
    int fds[LIMIT], extra, status = 0;
    struct buf b = BUF_INIT, in = BUF_INIT;

    start((const char *const[]){ "--max-connections-per-client", "4", NULL });
    raw_head(&b, "GET", "/v1/health", NULL);    /* keep-alive */
    for (int i = 0; i < LIMIT; i++) {
        /* one answered request each: the server has accepted them all */
        fds[i] = raw_connect(NULL);
        ck_assert_int_eq(send_all(fds[i], b.data, b.len), 0);
        ck_assert_int_eq(read_answer(fds[i], &in), 200);
        buf_release(&in);
    }
    extra = raw_connect(NULL);      /* the kernel accepts; qtaud closes it */
    if (send_all(extra, b.data, b.len) == 0)
        status = read_answer(extra, &in);
    ck_assert_msg(status == 0, "connection %d from one address was answered (%d): %s",
                  LIMIT + 1, status, in.data ? in.data : "");
    close(extra);
    buf_release(&in);
    /* another client address is unaffected */
    ck_assert_int_eq(raw_health("127.0.0.2"), 200);
    /* the connections within the limit still work */
    ck_assert_int_eq(send_all(fds[0], b.data, b.len), 0);
    ck_assert_int_eq(read_answer(fds[0], &in), 200);
    buf_release(&in);
    for (int i = 0; i < LIMIT; i++)
        close(fds[i]);
    /* once they are gone the address may connect again (qtaud notices the
     * closes asynchronously, hence the retries) */
    for (int i = 0; i < 200 && (status = raw_health(NULL)) != 200; i++)
        sleep_ms(50);
    ck_assert_int_eq(status, 200);
    buf_release(&b);
}
END_TEST

/* One keep-alive request answered on a new connection from src: the
 * server has accepted it and holds it open. */
static int held_connection(const char *src)
{
    struct buf b = BUF_INIT, in = BUF_INIT;
    int fd = raw_connect(src);

    raw_head(&b, "GET", "/v1/health", NULL);
    ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
    ck_assert_int_eq(read_answer(fd, &in), 200);
    buf_release(&b);
    buf_release(&in);
    return fd;
}

/* max-connections counts every address together.  Once it is reached
 * libmicrohttpd stops accepting: a new connection, from any address,
 * waits in the kernel's queue (it is not refused), and is served as soon
 * as a held one closes; the held ones are served meanwhile.  (The limit is
 * split evenly over the server threads, which accept independently: one
 * thread makes it exact.) */
START_TEST(test_total_connection_limit)
{
    struct buf b = BUF_INIT, in = BUF_INIT;
    int fds[4], waiting;
    char peek;

    start((const char *const[]){ "--max-connections", "4", "--http-threads", "1",
                                 "--max-connections-per-client", "2", NULL });
    fds[0] = held_connection(NULL);
    fds[1] = held_connection(NULL);
    ck_assert_int_eq(raw_health(NULL), 0);          /* third from 127.0.0.1 */
    fds[2] = held_connection("127.0.0.2");
    fds[3] = held_connection("127.0.0.2");
    /* the fifth in all, from a third address */
    raw_head(&b, "GET", "/v1/health", "Connection: close\r\n");
    waiting = raw_connect("127.0.0.3");
    ck_assert_int_eq(send_all(waiting, b.data, b.len), 0);
    buf_release(&b);
    raw_head(&b, "GET", "/v1/health", NULL);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(send_all(fds[i], b.data, b.len), 0);
        ck_assert_int_eq(read_answer(fds[i], &in), 200);
        buf_release(&in);
    }
    /* not answered while all four are held (the four answers above went
     * through the one server thread after its request arrived) */
    ck_assert_int_eq(recv(waiting, &peek, 1, MSG_DONTWAIT | MSG_PEEK), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(fds[0]);
    ck_assert_int_eq(read_answer(waiting, &in), 200);
    close(waiting);
    for (int i = 1; i < 4; i++)
        close(fds[i]);
    buf_release(&b);
    buf_release(&in);
}
END_TEST

/* A request line and headers beyond max-header-size (32 KiB by default)
 * get 431, a URL beyond it 414, and the connection is closed; the daemon
 * goes on.  Up to 16 KiB over the limit the answer is qtaud's JSON; beyond
 * that the request does not fit libmicrohttpd's connection memory and it
 * answers the same status itself, with a short HTML body. */
START_TEST(test_big_header)
{
    static const struct {
        size_t url_bytes;       /* 0: /v1/health */
        size_t header_bytes;
        int status;
        const char *code;       /* qtaud's JSON error code, NULL for none */
    } cases[] = {
        { 0, 64 * 1024, 431, NULL },
        { 0, 40 * 1024, 431, "header_too_large" },
        { 64 * 1024, 0, 414, NULL },
        { 40 * 1024, 0, 414, "uri_too_long" },
        { 0, 20 * 1024, 200, NULL },    /* within the limit */
    };

    start(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf b = BUF_INIT, in = BUF_INIT, hdr = BUF_INIT, path = BUF_INIT;
        size_t half;
        int fd, status;

        buf_adds(&path, "/v1/health");
        if (cases[i].url_bytes) {
            buf_adds(&path, "?");
            for (size_t j = 0; j < cases[i].url_bytes; j++)
                buf_addc(&path, 'a');
        }
        buf_adds(&hdr, "X-Filler: ");
        for (size_t j = 0; j < cases[i].header_bytes; j++)
            buf_addc(&hdr, 'x');
        buf_adds(&hdr, "\r\nConnection: close\r\n");
        raw_head(&b, "GET", path.data, hdr.data);
        fd = raw_connect(NULL);
        half = b.len / 2;
        ck_assert_int_eq(send_all(fd, b.data, half), 0);
        assert_healthy("while a client sends a large header");
        /* qtaud may answer and close before the rest is sent */
        (void)send_all(fd, b.data + half, b.len - half);
        status = read_answer(fd, &in);
        ck_assert_msg(status == cases[i].status, "case %zu: status %d, wanted %d", i,
                      status, cases[i].status);
        if (cases[i].code) {
            char want[64];

            snprintf(want, sizeof(want), "\"code\":\"%s\"", cases[i].code);
            ck_assert_msg(strstr(in.data, want), "case %zu: %s", i, in.data);
        }
        if (cases[i].status != 200)
            ck_assert(closed_by_server(fd));
        close(fd);
        assert_healthy("after a large header");
        buf_release(&b);
        buf_release(&in);
        buf_release(&hdr);
        buf_release(&path);
    }
}
END_TEST

/* A 100 MB body announced by Content-Length is refused with 413 on its
 * headers - before a byte of it is read - and the connection closed; one
 * sent chunked (no length up front) is kept up to max-body, then read and
 * dropped as it comes.  Either way qtaud's memory does not grow by the
 * body.  max-body is 1 MiB here so that what it may legitimately buffer
 * (64 MiB by default, and under ASan held on after it is freed) stays
 * well apart from the 100 MB that must not be. */
START_TEST(test_huge_body)
{
    enum { BODY = 100 * 1000 * 1000, CHUNK = 1024 * 1024 };
    char *chunk = malloc(CHUNK);
    struct buf b = BUF_INIT, in = BUF_INIT;
    long before, after;
    size_t sent = 0;
    int fd, status;

    ck_assert_ptr_nonnull(chunk);
    memset(chunk, ' ', CHUNK);
    start((const char *const[]){ "--max-body", "1048576", NULL });
    assert_healthy("before");
    before = rss_kib(d.pid);

    /* announced: the answer comes with no body sent at all */
    raw_head(&b, "POST", "/v1/tasks",
             "Content-Type: application/json\r\nContent-Length: 100000000\r\n");
    fd = raw_connect(NULL);
    ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
    status = read_answer(fd, &in);
    ck_assert_msg(status == 413, "status %d: %s", status, in.data ? in.data : "");
    ck_assert_ptr_nonnull(strstr(in.data, "\"payload_too_large\""));
    assert_healthy("after a 100 MB body was announced");
    /* and qtaud does not take it: the connection is gone before 100 MB
     * could be pushed into it */
    while (sent < BODY && send_all(fd, chunk, CHUNK) == 0)
        sent += CHUNK;
    ck_assert_msg(sent < BODY, "qtaud read all of a body it had refused");
    close(fd);
    buf_release(&b);
    buf_release(&in);

    /* chunked: read and dropped, then 413 */
    raw_head(&b, "POST", "/v1/tasks",
             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n");
    fd = raw_connect(NULL);
    ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
    for (sent = 0; sent < BODY; sent += CHUNK) {
        char size[32];

        snprintf(size, sizeof(size), "%x\r\n", CHUNK);
        ck_assert_int_eq(send_all(fd, size, strlen(size)), 0);
        ck_assert_int_eq(send_all(fd, chunk, CHUNK), 0);
        ck_assert_int_eq(send_all(fd, "\r\n", 2), 0);
        if (sent == 50 * CHUNK)
            assert_healthy("while a 100 MB chunked body is sent");
    }
    ck_assert_int_eq(send_all(fd, "0\r\n\r\n", 5), 0);
    status = read_answer(fd, &in);
    ck_assert_msg(status == 413, "chunked: status %d", status);
    close(fd);
    after = rss_kib(d.pid);
    ck_assert_msg(after - before < 20 * 1024, "qtaud's RSS grew from %ld to %ld KiB",
                  before, after);
    assert_healthy("after a 100 MB body");
    buf_release(&b);
    buf_release(&in);
    free(chunk);
}
END_TEST

/* Transfer-Encoding and Content-Length together: the two framings
 * disagree on where the body ends (what request smuggling feeds on), so
 * qtaud answers 400 and closes; the bytes after the chunked body, which
 * under the other reading would be a second request, are never run. */
START_TEST(test_te_and_content_length)
{
    static const char smuggle[] =
        "0\r\n\r\n"
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 22\r\n\r\n{\"command\": [\"true\"]}";
    struct buf b = BUF_INIT, in = BUF_INIT, hdr = BUF_INIT;
    json_t *list;
    int fd, status;

    start(NULL);
    buf_addf(&hdr, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: %zu\r\n", strlen(smuggle));
    raw_head(&b, "POST", "/v1/tasks", hdr.data);
    buf_adds(&b, smuggle);
    fd = raw_connect(NULL);
    ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
    status = read_answer(fd, &in);
    ck_assert_msg(status == 400, "status %d: %s", status, in.data ? in.data : "");
    ck_assert_ptr_nonnull(strstr(in.data, "\"bad_request\""));
    ck_assert_ptr_nonnull(strcasestr(in.data, "\r\nConnection: close"));
    ck_assert(closed_by_server(fd));
    close(fd);
    assert_healthy("after a request with both framings");
    list = http_json(&d, "GET", "/v1/tasks", NULL, 200);
    ck_assert_ptr_nonnull(list);
    ck_assert_int_eq(json_array_size(json_object_get(list, "tasks")), 0);
    json_decref(list);
    buf_release(&b);
    buf_release(&in);
    buf_release(&hdr);

    /* chunked alone is one unambiguous framing, and works */
    {
        static const char body[] = "{\"command\": [\"true\"]}";

        raw_head(&b, "POST", "/v1/tasks", "Content-Type: application/json\r\n"
                                          "Transfer-Encoding: chunked\r\n"
                                          "Connection: close\r\n");
        buf_addf(&b, "%zx\r\n%s\r\n0\r\n\r\n", strlen(body), body);
        fd = raw_connect(NULL);
        ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
        status = read_answer(fd, &in);
        ck_assert_msg(status == 201, "chunked: status %d: %s", status,
                      in.data ? in.data : "");
        close(fd);
        buf_release(&b);
        buf_release(&in);
    }
}
END_TEST

/* Content-Length values that are not one plain decimal within max-body
 * are refused on the headers, and the connection closed. */
START_TEST(test_bad_content_length)
{
    static const struct {
        const char *value;
        int status;
    } cases[] = {
        { "999999999999999999999999", 413 },    /* beyond any integer */
        { "67108865", 413 },                    /* max-body + 1 */
        { "abc", 400 },
        { "-5", 400 },
        { "+5", 400 },
        { "5, 5", 400 },
    };

    start(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf b = BUF_INIT, in = BUF_INIT, hdr = BUF_INIT;
        int fd, status;

        buf_addf(&hdr, "Content-Type: application/json\r\nContent-Length: %s\r\n",
                 cases[i].value);
        raw_head(&b, "POST", "/v1/tasks", hdr.data);
        fd = raw_connect(NULL);
        ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
        status = read_answer(fd, &in);
        ck_assert_msg(status == cases[i].status, "Content-Length: %s: status %d",
                      cases[i].value, status);
        ck_assert(closed_by_server(fd));
        close(fd);
        assert_healthy("after a bad Content-Length");
        buf_release(&b);
        buf_release(&in);
        buf_release(&hdr);
    }
    /* two lengths, equal or not: which one frames the body would be a
     * guess a proxy in front may make the other way */
    for (int same = 0; same < 2; same++) {
        struct buf b = BUF_INIT, in = BUF_INIT;
        static const char body[] = "{\"command\": [\"true\"]}";
        char hdr[160];
        json_t *list;
        int fd, status;

        snprintf(hdr, sizeof(hdr), "Content-Type: application/json\r\nContent-Length: %zu"
                 "\r\nContent-Length: %zu\r\n", strlen(body), same ? strlen(body) : (size_t)2);
        raw_head(&b, "POST", "/v1/tasks", hdr);
        buf_adds(&b, body);
        fd = raw_connect(NULL);
        ck_assert_int_eq(send_all(fd, b.data, b.len), 0);
        status = read_answer(fd, &in);
        ck_assert_msg(status == 400, "two Content-Length headers: status %d", status);
        ck_assert(closed_by_server(fd));
        close(fd);
        list = http_json(&d, "GET", "/v1/tasks", NULL, 200);
        ck_assert_int_eq(json_array_size(json_object_get(list, "tasks")), 0);
        json_decref(list);
        buf_release(&b);
        buf_release(&in);
    }
}
END_TEST

/* A body of many tiny values: jansson spends ~50 bytes on each, so a few
 * MB of "1," would be hundreds of MB in memory.  Over the item bound it is
 * a 413 before parsing; just under it, an ordinary answer.  (RSS is not
 * asserted: under ASan freed memory stays in quarantine.) */
START_TEST(test_many_values)
{
    struct http_resp r;
    struct buf b = BUF_INIT;

    start(NULL);
    /* a million and one: refused on the scan */
    buf_addc(&b, '[');
    for (size_t i = 0; i <= JSONCHECK_MAX_ITEMS; i++)
        buf_adds(&b, "1,");
    buf_adds(&b, "1]");
    ck_assert_int_eq(http(&d, "POST", "/v1/tasks", b.data, NULL, &r), 0);
    ck_assert_int_eq(r.status, 413);
    ck_assert_ptr_nonnull(strstr(jstr(json_object_get(r.json, "error"), "message"),
                                 "values"));
    http_resp_free(&r);
    buf_release(&b);
    assert_healthy("after a body of too many values");

    /* just under: parsed (and refused by the task parser as no task) */
    buf_addc(&b, '[');
    for (size_t i = 0; i < JSONCHECK_MAX_ITEMS - 10; i++)
        buf_adds(&b, "1,");
    buf_adds(&b, "1]");
    ck_assert_int_eq(http(&d, "POST", "/v1/tasks", b.data, NULL, &r), 0);
    ck_assert_int_eq(r.status, 400);
    http_resp_free(&r);
    buf_release(&b);
    assert_healthy("after a body of a million values");
}
END_TEST

/* qtaud's soft limit on open files, from /proc/<pid>/limits. */
static long open_files_soft(pid_t pid)
{
    char path[64], line[256];
    long soft = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Max open files %ld", &soft) == 1)
            break;
    fclose(f);
    return soft;
}

/* Started from a shell whose soft limit on open files is below what
 * max-connections needs (1024 is common), qtaud raises it to the hard
 * limit; when even the hard one is short, it says so. */
START_TEST(test_open_files_limit)
{
    struct rlimit rl = { 256, 4096 };
    char log[] = "/tmp/qtaud-test-log-XXXXXX";
    int fd = mkstemp(log);

    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);   /* this test's process only */
    start(NULL);
    ck_assert_int_eq(open_files_soft(d.pid), 4096);
    teardown();

    rl.rlim_max = 512;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    memset(&d, 0, sizeof(d));
    d.log_path = log;
    ck_assert_int_eq(daemon_start(&d, NULL), 0);
    ck_assert_int_eq(open_files_soft(d.pid), 512);
    ck_assert_msg(file_contains(log, "open files limit is 512"), "no warning in %s", log);
    unlink(log);
}
END_TEST

static char *repeat(const char *head, char c, size_t n, const char *tail)
{
    struct buf b = BUF_INIT;

    buf_adds(&b, head);
    for (size_t i = 0; i < n; i++)
        buf_addc(&b, c);
    buf_adds(&b, tail);
    return buf_detach(&b, NULL);
}

/* Bodies that must each be refused with the status, code and field
 * named, and store nothing. */
START_TEST(test_validation_table)
{
    struct vcase {
        const char *path;
        char *body;         /* owned */
        const char *ctype;
        long status;
        const char *code;
        const char *field;  /* "" when none is named */
    };
    char *deep = malloc(10000 * 2 + 1);
    struct vcase cases[64];
    size_t n = 0;
    json_t *list;

#define CASE(p, b, ct, st, co, f) \
    (cases[n++] = (struct vcase){ p, b, ct, st, co, f })
    ck_assert_ptr_nonnull(deep);
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\0';
    CASE("/v1/tasks", deep, NULL, 400, "invalid_json", "");
    CASE("/v1/tasks", repeat("[", '[', 10000, ""), NULL, 400, "invalid_json", "");
    CASE("/v1/tasks", repeat("{\"command\": [\"true\"], \"env\": {\"A\": ", '[', 40, ""),
         NULL, 400, "invalid_json", "");
    CASE("/v1/pilots", repeat("{\"name\": ", '{', 5000, ""), NULL, 400,
         "invalid_json", "");
    /* long strings */
    CASE("/v1/tasks", repeat("{\"command\": [\"", 'a', 65537, "\"]}"), NULL, 400,
         "invalid_argument", "command");
    CASE("/v1/tasks", repeat("{\"shell\": \"", 'a', 70000, "\"}"), NULL, 400,
         "invalid_argument", "shell");
    CASE("/v1/tasks", repeat("{\"command\": [\"true\"], \"name\": \"", 'n', 300, "\"}"),
         NULL, 400, "invalid_argument", "name");
    CASE("/v1/tasks", repeat("{\"command\": [\"true\"], \"env\": {\"", 'K', 300,
                             "\": \"v\"}}"),
         NULL, 400, "invalid_argument", "env");
    CASE("/v1/pilots", repeat("{\"name\": \"", 'p', 100, "\"}"), NULL, 400,
         "invalid_argument", "name");
    /* NUL bytes, wherever they are */
    CASE("/v1/tasks", strdup("{\"command\": [\"/bin/echo\", \"a\\u0000b\"]}"), NULL, 400,
         "invalid_argument", "command");
    CASE("/v1/tasks", strdup("{\"shell\": \"true\\u0000; rm -rf /\"}"), NULL, 400,
         "invalid_argument", "shell");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"A\": \"\\u0000\"}}"),
         NULL, 400, "invalid_argument", "env.A");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"cwd\": \"/tmp\\u0000x\"}"),
         NULL, 400, "invalid_argument", "cwd");
    CASE("/v1/tasks", strdup("[{\"command\": [\"true\"]}, {\"command\": [\"true\"], "
                             "\"name\": \"x\\u0000\"}]"),
         NULL, 400, "invalid_argument", "[1].name");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"name\\u0000x\": 1}"), NULL, 400,
         "invalid_json", "");
    CASE("/v1/pilots", strdup("{\"name\": \"p\\u0000\"}"), NULL, 400,
         "invalid_argument", "name");
    /* invalid UTF-8 and lone surrogates */
    CASE("/v1/tasks", strdup("{\"command\": [\"\xff\"]}"), NULL, 400, "invalid_json", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"\xc0\xaf\"]}"), NULL, 400, "invalid_json",
         "");
    CASE("/v1/tasks", strdup("{\"command\": [\"\xed\xa0\x80\"]}"), NULL, 400,
         "invalid_json", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"\\ud800\"]}"), NULL, 400, "invalid_json",
         "");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"n\xe9me\": 1}"), NULL, 400,
         "invalid_json", "");
    /* environment variable names */
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"1A\": \"x\"}}"), NULL,
         400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"A-B\": \"x\"}}"), NULL,
         400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"A=B\": \"x\"}}"), NULL,
         400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"A B\": \"x\"}}"), NULL,
         400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"\": \"x\"}}"), NULL,
         400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"\xc3\x84\": \"x\"}}"),
         NULL, 400, "invalid_argument", "env");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"env\": {\"A\": 1}}"), NULL, 400,
         "invalid_argument", "env");
    CASE("/v1/pilots", strdup("{\"environment\": {\"9X\": \"y\"}}"), NULL, 400,
         "invalid_argument", "environment");
    /* paths */
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"cwd\": \"tmp\"}"), NULL, 400,
         "invalid_argument", "cwd");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"cwd\": \"./tmp\"}"), NULL, 400,
         "invalid_argument", "cwd");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"cwd\": \"\"}"), NULL, 400,
         "invalid_argument", "cwd");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"cwd\": \"~/x\"}"), NULL, 400,
         "invalid_argument", "cwd");
    CASE("/v1/tasks", repeat("{\"command\": [\"true\"], \"cwd\": \"/", 'd', 5000, "\"}"),
         NULL, 400, "invalid_argument", "cwd");
    CASE("/v1/tasks", strdup("[{\"command\": [\"true\"], \"cwd\": \"/tmp\"}, "
                             "{\"command\": [\"true\"], \"cwd\": \"rel\"}]"),
         NULL, 400, "invalid_argument", "[1].cwd");
    CASE("/v1/pilots", strdup("{\"working_directory\": \"rel/dir\"}"), NULL, 400,
         "invalid_argument", "working_directory");
    /* content types: JSON only, UTF-8 only */
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"]}"), "text/plain", 415,
         "unsupported_media_type", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"]}"), "application/jsonx", 415,
         "unsupported_media_type", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"]}"), "application/json; charset=latin1",
         415, "unsupported_media_type", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"]}"), "application/json; boundary=x",
         415, "unsupported_media_type", "");
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"]}"), "multipart/form-data", 415,
         "unsupported_media_type", "");
    CASE("/v1/pilots", strdup("{\"cores\": 1}"), "text/json", 415,
         "unsupported_media_type", "");
    CASE("/v1/agent/report", strdup("{}"), "application/xml", 415,
         "unsupported_media_type", "");
    /* duplicate keys */
    CASE("/v1/tasks", strdup("{\"command\": [\"true\"], \"command\": [\"false\"]}"), NULL,
         400, "invalid_json", "");
#undef CASE
    ck_assert_int_le(n, sizeof(cases) / sizeof(cases[0]));

    start((const char *const[]){ "--local-cores", "2", NULL });
    for (size_t i = 0; i < n; i++) {
        struct http_resp r;
        json_t *e;

        ck_assert_ptr_nonnull(cases[i].body);
        ck_assert_int_eq(http(&d, "POST", cases[i].path, cases[i].body, cases[i].ctype,
                              &r), 0);
        ck_assert_msg(r.status == cases[i].status, "case %zu (%.80s): status %ld: %s", i,
                      cases[i].body, r.status, r.body);
        ck_assert_msg(r.json != NULL, "case %zu: error body is not JSON", i);
        e = json_object_get(r.json, "error");
        ck_assert_msg(strcmp(jstr(e, "code"), cases[i].code) == 0,
                      "case %zu (%.80s): code '%s', wanted '%s'", i, cases[i].body,
                      jstr(e, "code"), cases[i].code);
        ck_assert_msg(jstr(e, "message")[0], "case %zu: no message", i);
        ck_assert_msg(strcmp(jstr(e, "field"), cases[i].field) == 0,
                      "case %zu (%.80s): field '%s', wanted '%s' (%s)", i, cases[i].body,
                      jstr(e, "field"), cases[i].field, jstr(e, "message"));
        http_resp_free(&r);
        free(cases[i].body);
    }
    assert_healthy("after the validation table");
    /* nothing from any of them was stored */
    list = http_json(&d, "GET", "/v1/tasks", NULL, 200);
    ck_assert_ptr_nonnull(list);
    ck_assert_int_eq(json_array_size(json_object_get(list, "tasks")), 0);
    json_decref(list);
    list = http_json(&d, "GET", "/v1/pilots", NULL, 200);
    ck_assert_ptr_nonnull(list);
    ck_assert_int_eq(json_array_size(json_object_get(list, "pilots")), 1);  /* local */
    json_decref(list);

    /* and the accepted spellings of the JSON media type are accepted */
    {
        static const char *const ok[] = {
            "application/json", "APPLICATION/JSON", "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        };

        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
            struct http_resp r;

            ck_assert_int_eq(http(&d, "POST", "/v1/tasks", "{\"command\": [\"true\"]}",
                                  ok[i], &r), 0);
            ck_assert_msg(r.status == 201, "%s: status %ld: %s", ok[i], r.status, r.body);
            http_resp_free(&r);
        }
    }
}
END_TEST

/* A task starts with none of the daemon's descriptors (listening socket,
 * database, logs), with stdin on /dev/null, as the leader of its own
 * session.  The task is a shell that prints its pid and its /proc stat
 * line, then becomes `ls -l /proc/self/fd` (exec: same process, same
 * descriptors), which lists every open descriptor with its readlink
 * target - the directory it is listing being the one extra entry. */
START_TEST(test_task_descriptors)
{
    static const char body[] =
        "{\"shell\": \"read -r stat < /proc/$$/stat; echo \\\"pid $$\\\"; "
        "echo \\\"stat $stat\\\"; exec ls -l /proc/self/fd\"}";
    struct http_resp r;
    json_t *t;
    long long id;
    int pid = -1, sid = -2, others = 0;
    bool fd0 = false, fd1 = false, fd2 = false;
    char *line, *save = NULL, listing[64];

    start((const char *const[]){ "--local-cores", "1", NULL });
    t = http_json(&d, "POST", "/v1/tasks", body, 201);
    ck_assert_ptr_nonnull(t);
    id = jint(t, "id");
    json_decref(t);
    t = wait_task(&d, id, 60);
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(strcmp(jstr(t, "state"), "SUCCESS") == 0, "task %s: %s",
                  jstr(t, "state"), jstr(t, "error_msg"));
    json_decref(t);
    ck_assert_int_eq(http(&d, "GET", "/v1/tasks/1/stdout", NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    for (line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, " -> "), *num;
        const char *target;
        int fd;

        if (sscanf(line, "pid %d", &pid) == 1)
            continue;
        if (strncmp(line, "stat ", 5) == 0) {
            /* pid (comm) state ppid pgrp session ... */
            const char *p = strrchr(line, ')');

            ck_assert_ptr_nonnull(p);
            ck_assert_int_eq(sscanf(p + 1, " %*c %*d %*d %d", &sid), 1);
            continue;
        }
        if (!arrow)
            continue;       /* "total 0" */
        *arrow = '\0';
        target = arrow + 4;
        num = strrchr(line, ' ');
        ck_assert_ptr_nonnull(num);
        fd = atoi(num + 1);
        if (fd == 0) {
            ck_assert_msg(strcmp(target, "/dev/null") == 0, "stdin is '%s'", target);
            fd0 = true;
        } else if (fd == 1 || fd == 2) {
            /* the task's output files in the state dir */
            ck_assert_msg(strncmp(target, d.dir, strlen(d.dir)) == 0, "fd %d is '%s'", fd,
                          target);
            ck_assert_ptr_null(strstr(target, "qtaud.db"));
            if (fd == 1)
                fd1 = true;
            else
                fd2 = true;
        } else {
            /* the listing's own directory handle, and nothing else */
            snprintf(listing, sizeof(listing), "/proc/%d/fd", pid);
            ck_assert_msg(strcmp(target, listing) == 0, "the task inherited fd %d -> %s",
                          fd, target);
            others++;
        }
    }
    ck_assert_msg(fd0 && fd1 && fd2, "fds 0-2 not all open");
    ck_assert_int_le(others, 1);
    ck_assert_int_gt(pid, 1);
    ck_assert_msg(sid == pid, "task pid %d is not its session's leader (session %d)", pid,
                  sid);
    http_resp_free(&r);
}
END_TEST

static Suite *abuse_suite(void)
{
    Suite *s = suite_create("abuse");
    TCase *tc = tcase_create("live");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_slow_header);
    tcase_add_test(tc, test_idle_connection_closed);
    tcase_add_test(tc, test_per_client_limit);
    tcase_add_test(tc, test_total_connection_limit);
    tcase_add_test(tc, test_big_header);
    tcase_add_test(tc, test_huge_body);
    tcase_add_test(tc, test_te_and_content_length);
    tcase_add_test(tc, test_bad_content_length);
    tcase_add_test(tc, test_many_values);
    tcase_add_test(tc, test_open_files_limit);
    tcase_add_test(tc, test_validation_table);
    tcase_add_test(tc, test_task_descriptors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    sr = srunner_create(abuse_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
