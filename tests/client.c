/*
 * client.c - see client.h.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/buf.h"
#include "tests/client.h"

extern char **environ;

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

int daemon_read_port(const char *dir)
{
    char path[300];
    FILE *f;
    int port = 0;

    snprintf(path, sizeof(path), "%s/port", dir);
    f = fopen(path, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%d", &port) != 1)
        port = 0;
    fclose(f);
    return port;
}

/* The admin token qtaud made in dir (or "" when there is none yet). */
static void read_token(const char *dir, char *out, size_t size)
{
    char path[300];
    FILE *f;

    out[0] = '\0';
    snprintf(path, sizeof(path), "%s/token", dir);
    f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(out, (int)size, f))
        out[0] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    fclose(f);
}

void daemon_read_token(struct daemon *d)
{
    read_token(d->dir, d->token, sizeof(d->token));
}

int daemon_start(struct daemon *d, const char *const *extra)
{
    const char *bin = getenv("QTAUD_BIN");
    char *argv[64];
    char port_path[300];
    int n = 0;

    if (!bin)
        bin = "./qtaud";
    if (!d->dir[0]) {
        snprintf(d->dir, sizeof(d->dir), "/tmp/qtaud-test-XXXXXX");
        if (!mkdtemp(d->dir))
            return -1;
    }
    snprintf(port_path, sizeof(port_path), "%s/port", d->dir);
    unlink(port_path);
    argv[n++] = (char *)bin;
    argv[n++] = (char *)"--listen";
    argv[n++] = (char *)"127.0.0.1:0";
    argv[n++] = (char *)"--state-dir";
    argv[n++] = d->dir;
    argv[n++] = (char *)"--allow-root";
    argv[n++] = (char *)"--log-level";
    argv[n++] = (char *)"warning";
    argv[n++] = (char *)"--shutdown-grace";   /* tests may override */
    argv[n++] = (char *)"2";
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    {
        posix_spawn_file_actions_t fa;
        int rc;

        posix_spawn_file_actions_init(&fa);
        if (d->log_path)
            posix_spawn_file_actions_addopen(&fa, 2, d->log_path,
                                             O_WRONLY | O_CREAT | O_APPEND, 0600);
        rc = posix_spawn(&d->pid, bin, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0)
            return -1;
    }
    for (int i = 0; i < 500; i++) {   /* up to 10 s */
        int status;

        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "qtaud exited at start-up (status %d)\n", status);
            d->pid = 0;
            return -1;
        }
        d->port = daemon_read_port(d->dir);
        if (d->port > 0) {
            struct http_resp r;

            snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%d", d->port);
            read_token(d->dir, d->token, sizeof(d->token));
            if (http(d, "GET", "/v1/health", NULL, NULL, &r) == 0 && r.status == 200) {
                http_resp_free(&r);
                return 0;
            }
            http_resp_free(&r);
        }
        sleep_ms(20);
    }
    return -1;
}

int daemon_stop(struct daemon *d, int sig)
{
    int status = -1;

    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
        ;
    d->pid = 0;
    return status;
}

void daemon_cleanup(struct daemon *d)
{
    char cmd[300];

    if (d->pid > 0)
        daemon_stop(d, SIGKILL);
    if (d->dir[0] && strncmp(d->dir, "/tmp/qtaud-test-", 16) == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", d->dir);
    }
    d->dir[0] = '\0';
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    buf_add(arg, data, size * n);
    return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct http_resp *r = arg;
    size_t len = size * n;

    if (len > 14 && strncasecmp(data, "Content-Type: ", 14) == 0)
        snprintf(r->content_type, sizeof(r->content_type), "%.*s",
                 (int)strcspn(data + 14, "\r\n"), data + 14);
    if (len > 18 && strncasecmp(data, "WWW-Authenticate: ", 18) == 0)
        snprintf(r->www_authenticate, sizeof(r->www_authenticate), "%.*s",
                 (int)strcspn(data + 18, "\r\n"), data + 18);
    if (len > 7 && strncasecmp(data, "Allow: ", 7) == 0)
        snprintf(r->allow, sizeof(r->allow), "%.*s",
                 (int)strcspn(data + 7, "\r\n"), data + 7);
    return len;
}

static int http_do(const struct daemon *d, const char *method, const char *path,
                   const char *body, const char *ctype, const char *token,
                   const char *unix_path, struct http_resp *r)
{
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    struct buf b = BUF_INIT;
    char url[4096], ct[160], auth[400];
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    if (!c)
        return -1;
    snprintf(url, sizeof(url), "%s%s", d->url, path);
    snprintf(ct, sizeof(ct), "Content-Type: %s", ctype ? ctype : "application/json");
    hdrs = curl_slist_append(hdrs, ct);
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (!token)
        token = d->token;
    if (token[0]) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (unix_path) {
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, unix_path);
        snprintf(url, sizeof(url), "http://localhost%s", path);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);   /* no body will come */
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    r->body = buf_detach(&b, &r->len);
    if (rc != CURLE_OK)
        return -1;
    if (strncmp(r->content_type, "application/json", 16) == 0)
        r->json = json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL);
    return 0;
}

int http(const struct daemon *d, const char *method, const char *path,
         const char *body, const char *ctype, struct http_resp *r)
{
    return http_do(d, method, path, body, ctype, NULL, NULL, r);
}

int http_unix(const struct daemon *d, const char *method, const char *path,
              const char *body, struct http_resp *r)
{
    char sock[300];

    snprintf(sock, sizeof(sock), "%s/qtaud.sock", d->dir);
    return http_do(d, method, path, body, NULL, "", sock, r);
}

int http_bearer(const struct daemon *d, const char *method, const char *path,
                const char *body, const char *token, struct http_resp *r)
{
    return http_do(d, method, path, body, NULL, token, NULL, r);
}

void http_resp_free(struct http_resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

json_t *http_json(const struct daemon *d, const char *method, const char *path,
                  const char *body, long want)
{
    struct http_resp r;
    json_t *out = NULL;

    if (http(d, method, path, body, NULL, &r) < 0) {
        fprintf(stderr, "%s %s: transport error\n", method, path);
    } else if (r.status != want || !r.json) {
        fprintf(stderr, "%s %s: status %ld (wanted %ld): %s\n", method, path,
                r.status, want, r.body);
    } else {
        out = json_incref(r.json);
    }
    http_resp_free(&r);
    return out;
}

json_t *wait_task(const struct daemon *d, long long id, double timeout)
{
    char path[96];
    time_t until = time(NULL) + (time_t)timeout + 1;

    for (;;) {
        json_t *t;
        const char *state;

        snprintf(path, sizeof(path), "/v1/tasks/%lld?wait=5", id);
        t = http_json(d, "GET", path, NULL, 200);
        if (!t)
            return NULL;
        state = jstr(t, "state");
        if (strcmp(state, "PENDING") != 0 && strcmp(state, "RUNNING") != 0)
            return t;
        if (time(NULL) > until)
            return t;
        json_decref(t);
    }
}

const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s ? s : "";
}

long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    return json_is_integer(v) ? json_integer_value(v) : -1;
}

bool daemon_teardown(struct daemon *d, int *status)
{
    *status = 0;
    if (d->pid > 0) {
        *status = daemon_stop(d, SIGTERM);
        daemon_cleanup(d);
        return WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
    }
    daemon_cleanup(d);
    return true;
}

void daemon_must_start(struct daemon *d, const char *const *extra)
{
    memset(d, 0, sizeof(*d));
    ck_assert_msg(daemon_start(d, extra) == 0, "qtaud did not start");
}

void daemon_must_stop(struct daemon *d)
{
    int status;

    ck_assert_msg(daemon_teardown(d, &status), "qtaud did not exit cleanly (status %d)",
                  status);
}

long long task_submit(const struct daemon *d, const char *body)
{
    json_t *t = http_json(d, "POST", "/v1/tasks", body, 201);
    long long id;

    ck_assert_ptr_nonnull(t);
    id = jint(t, "id");
    ck_assert_int_gt(id, 0);
    json_decref(t);
    return id;
}

bool file_contains(const char *path, const char *needle)
{
    char buf[8192];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, needle) != NULL;
}
