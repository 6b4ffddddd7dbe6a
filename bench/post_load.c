/*
 * post_load.c - how fast qtaud accepts task submissions.
 *
 * C client threads, each with its own libcurl easy handle (so each keeps one
 * keep-alive connection), POST to URL/v1/tasks for D seconds or until N
 * requests have been sent in total, whichever comes first.  Two modes:
 *
 *   -b 1  (default) each request is one task object; the figure that matters
 *         is requests/s, the cost of one HTTP round trip plus one committed
 *         row (qtaud answers 201 only after the row is in SQLite).
 *   -b B  each request is an array of B task objects; the figure that
 *         matters is tasks/s, the cost of validating and committing rows in
 *         bulk.
 *
 * Every task is {"command": ["/bin/true"], "pilot": PILOT}: real tasks that
 * the pilot then runs, so the load is what a user submitting no-ops sees.
 * Only 201 counts as success; the first other answer is printed to stderr
 * with its body, since that is what a daemon bug report needs.
 *
 * Output is "key value" lines (see print_results) so scripts can use awk.
 * Latency percentiles come from a log-scale histogram with ~5% buckets.
 *
 * Build: gcc -std=c11 -O2 -pthread <warning flags> -Werror
 *        $(curl-config --cflags) -o bench/post_load bench/post_load.c
 *        $(curl-config --libs) -lm
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Histogram of request latency in microseconds: bucket i holds latencies
 * in [e^(i/20), e^((i+1)/20)), i.e. ~5% wide; 400 buckets reach e^20 us,
 * far beyond any request we would wait for. */
#define LAT_BUCKETS_PER_E 20.0
#define LAT_BUCKETS 400

/* Kept from the first unexpected answer; enough for a JSON error body. */
#define BODY_KEEP 2048

struct load_config {
    const char *url;    /* full URL of the tasks endpoint */
    const char *body;   /* the request body, shared read-only by all threads */
    size_t body_len;
    const char *auth_header; /* "Authorization: Bearer ..." or NULL */
    int batch;
    long max_requests;  /* 0: no limit */
    double deadline;    /* monotonic seconds; 0: none */
};

struct load_worker {
    pthread_t thread;
    const struct load_config *cfg;
    long sent;
    long created;      /* answered 201 */
    long other_status; /* answered, but not 201 */
    long transport_errors;
    double lat_sum_us;
    double lat_max_us;
    long lat_hist[LAT_BUCKETS];
    char body[BODY_KEEP]; /* the current response, truncated */
    size_t body_len;
};

/* Requests handed out so far, across all threads (for -n). */
static atomic_long load_issued;

/* First non-201 answer or transport error, reported once. */
static pthread_mutex_t first_error_lock = PTHREAD_MUTEX_INITIALIZER;
static int first_error_seen;

static double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [options]\n"
            "  -u, --url URL          qtaud base URL (default http://127.0.0.1:8750)\n"
            "  -c, --clients C        concurrent clients (threads), default 4\n"
            "  -d, --duration D       seconds to run (default 5 unless -n is given)\n"
            "  -n, --requests N       stop after N requests in total\n"
            "  -b, --batch B          tasks per request: 1 posts objects, B>1 arrays (default 1)\n"
            "  -p, --pilot NAME       pilot the tasks name (default local)\n"
            "  -t, --token-file FILE  send 'Authorization: Bearer <first line of FILE>'\n",
            prog);
}

static long parse_long(const char *opt, const char *s, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "post_load: %s wants an integer in [%ld, %ld], got '%s'\n", opt,
                min, max, s);
        exit(2);
    }
    return v;
}

/* Reads the first line of path, without trailing whitespace.  Returns a
 * new string or NULL (message printed). */
static char *read_token(const char *path)
{
    char line[4096];
    size_t len;
    FILE *f = fopen(path, "r");

    if (!f) {
        fprintf(stderr, "post_load: cannot open token file %s: %s\n", path,
                strerror(errno));
        return NULL;
    }
    if (!fgets(line, sizeof line, f)) {
        fprintf(stderr, "post_load: token file %s is empty\n", path);
        fclose(f);
        return NULL;
    }
    fclose(f);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                       line[len - 1] == ' ' || line[len - 1] == '\t'))
        line[--len] = '\0';
    return strdup(line);
}

/*
 * Builds the request body: one task object, or an array of batch of them.
 * The pilot name is written into JSON as is, so it must not need escaping
 * (pilot names are identifiers).  Returns a new string or NULL.
 */
static char *build_body(const char *pilot, int batch, size_t *len_out)
{
    char task[512];
    int task_len;
    size_t len, cap;
    char *body, *p;

    task_len = snprintf(task, sizeof task,
                        "{\"command\":[\"/bin/true\"],\"pilot\":\"%s\"}", pilot);
    if (task_len < 0 || (size_t)task_len >= sizeof task)
        return NULL;
    if (batch == 1) {
        *len_out = (size_t)task_len;
        return strdup(task);
    }
    cap = (size_t)batch * ((size_t)task_len + 1) + 2;
    body = malloc(cap + 1);
    if (!body)
        return NULL;
    p = body;
    *p++ = '[';
    for (int i = 0; i < batch; i++) {
        if (i > 0)
            *p++ = ',';
        memcpy(p, task, (size_t)task_len);
        p += task_len;
    }
    *p++ = ']';
    *p = '\0';
    len = (size_t)(p - body);
    *len_out = len;
    return body;
}

/* libcurl write callback: keep the start of the body, swallow the rest. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct load_worker *w = arg;
    size_t n = size * nmemb;
    size_t room = sizeof w->body - 1 - w->body_len;
    size_t take = n < room ? n : room;

    memcpy(w->body + w->body_len, data, take);
    w->body_len += take;
    w->body[w->body_len] = '\0';
    return n;
}

static void report_first_error(long status, const char *what)
{
    pthread_mutex_lock(&first_error_lock);
    if (!first_error_seen) {
        first_error_seen = 1;
        if (status > 0)
            fprintf(stderr, "post_load: first unexpected answer: HTTP %ld: %s\n", status,
                    what);
        else
            fprintf(stderr, "post_load: first transport error: %s\n", what);
    }
    pthread_mutex_unlock(&first_error_lock);
}

static void record_latency(struct load_worker *w, double us)
{
    int i = us > 1.0 ? (int)(log(us) * LAT_BUCKETS_PER_E) : 0;

    if (i >= LAT_BUCKETS)
        i = LAT_BUCKETS - 1;
    w->lat_hist[i]++;
    w->lat_sum_us += us;
    if (us > w->lat_max_us)
        w->lat_max_us = us;
}

/* Claims the right to send one more request; 0 when the run is over. */
static int claim_request(const struct load_config *cfg)
{
    if (cfg->deadline > 0 && mono_now() >= cfg->deadline)
        return 0;
    if (cfg->max_requests > 0 && atomic_fetch_add(&load_issued, 1) >= cfg->max_requests)
        return 0;
    return 1;
}

static void *worker_main(void *arg)
{
    struct load_worker *w = arg;
    const struct load_config *cfg = w->cfg;
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE];
    CURL *h = curl_easy_init();

    if (!h) {
        report_first_error(0, "curl_easy_init failed");
        return NULL;
    }
    headers = curl_slist_append(headers, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip before larger array bodies. */
    headers = curl_slist_append(headers, "Expect:");
    if (cfg->auth_header)
        headers = curl_slist_append(headers, cfg->auth_header);

    curl_easy_setopt(h, CURLOPT_URL, cfg->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, cfg->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)cfg->body_len);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM timeouts */
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);

    while (claim_request(cfg)) {
        double t0 = mono_now();
        long status = 0;
        CURLcode rc;

        w->body_len = 0;
        w->body[0] = '\0';
        errbuf[0] = '\0';
        rc = curl_easy_perform(h);
        w->sent++;
        if (rc != CURLE_OK) {
            w->transport_errors++;
            report_first_error(0, errbuf[0] ? errbuf : curl_easy_strerror(rc));
            continue;
        }
        record_latency(w, (mono_now() - t0) * 1e6);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (status == 201) {
            w->created++;
        } else {
            w->other_status++;
            report_first_error(status, w->body);
        }
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return NULL;
}

/* The latency below which fraction q of requests fell, in microseconds:
 * the upper edge of the bucket reached, but never more than the maximum. */
static double percentile_us(const long *hist, long total, double q, double max_us)
{
    long want = (long)ceil(q * (double)total), seen = 0;

    for (int i = 0; i < LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want && seen > 0) {
            double edge = exp((i + 1) / LAT_BUCKETS_PER_E);

            return edge < max_us ? edge : max_us;
        }
    }
    return 0.0;
}

static void print_results(struct load_worker *workers, int clients, int batch,
                          double elapsed)
{
    long sent = 0, created = 0, other = 0, terr = 0, answered;
    long hist[LAT_BUCKETS] = { 0 };
    double lat_sum = 0.0, lat_max = 0.0;

    for (int i = 0; i < clients; i++) {
        struct load_worker *w = &workers[i];

        sent += w->sent;
        created += w->created;
        other += w->other_status;
        terr += w->transport_errors;
        lat_sum += w->lat_sum_us;
        if (w->lat_max_us > lat_max)
            lat_max = w->lat_max_us;
        for (int j = 0; j < LAT_BUCKETS; j++)
            hist[j] += w->lat_hist[j];
    }
    answered = created + other;
    printf("requests %ld\n", sent);
    printf("created_201 %ld\n", created);
    printf("other_status %ld\n", other);
    printf("transport_errors %ld\n", terr);
    printf("tasks_created %ld\n", created * batch);
    printf("elapsed_s %.6f\n", elapsed);
    /* Rates count only 201s: a daemon answering errors fast is not fast. */
    printf("requests_per_s %.1f\n", elapsed > 0 ? created / elapsed : 0.0);
    printf("tasks_per_s %.1f\n", elapsed > 0 ? (double)created * batch / elapsed : 0.0);
    printf("latency_mean_ms %.3f\n", answered ? lat_sum / answered / 1e3 : 0.0);
    printf("latency_p50_ms %.3f\n", percentile_us(hist, answered, 0.50, lat_max) / 1e3);
    printf("latency_p99_ms %.3f\n", percentile_us(hist, answered, 0.99, lat_max) / 1e3);
    printf("latency_max_ms %.3f\n", lat_max / 1e3);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "url", required_argument, NULL, 'u' },
        { "clients", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' },
        { "requests", required_argument, NULL, 'n' },
        { "batch", required_argument, NULL, 'b' },
        { "pilot", required_argument, NULL, 'p' },
        { "token-file", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *base = "http://127.0.0.1:8750";
    const char *pilot = "local";
    const char *token_file = NULL;
    struct load_config cfg = { 0 };
    struct load_worker *workers = NULL;
    char *url = NULL, *body = NULL, *token = NULL, *auth = NULL;
    long clients = 4, duration = 0;
    size_t url_len;
    double t0, elapsed;
    int started = 0, c, ret = 1;

    while ((c = getopt_long(argc, argv, "u:c:d:n:b:p:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u':
            base = optarg;
            break;
        case 'c':
            clients = parse_long("--clients", optarg, 1, 4096);
            break;
        case 'd':
            duration = parse_long("--duration", optarg, 1, 86400);
            break;
        case 'n':
            cfg.max_requests = parse_long("--requests", optarg, 1, LONG_MAX / 2);
            break;
        case 'b':
            cfg.batch = (int)parse_long("--batch", optarg, 1, 1000000);
            break;
        case 'p':
            pilot = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (cfg.batch == 0)
        cfg.batch = 1;
    if (duration == 0 && cfg.max_requests == 0)
        duration = 5;

    url_len = strlen(base) + sizeof "/v1/tasks";
    if (!(url = malloc(url_len))) {
        fprintf(stderr, "post_load: out of memory\n");
        goto cleanup;
    }
    /* Accept the base URL with or without a trailing slash. */
    snprintf(url, url_len, "%.*s/v1/tasks",
             (int)(strlen(base) - (base[0] && base[strlen(base) - 1] == '/')), base);
    cfg.url = url;

    if (!(body = build_body(pilot, cfg.batch, &cfg.body_len))) {
        fprintf(stderr, "post_load: cannot build the request body\n");
        goto cleanup;
    }
    cfg.body = body;

    if (token_file) {
        size_t auth_len;

        if (!(token = read_token(token_file)))
            goto cleanup;
        auth_len = strlen(token) + sizeof "Authorization: Bearer ";
        if (!(auth = malloc(auth_len))) {
            fprintf(stderr, "post_load: out of memory\n");
            goto cleanup;
        }
        snprintf(auth, auth_len, "Authorization: Bearer %s", token);
        cfg.auth_header = auth;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "post_load: curl_global_init failed\n");
        goto cleanup;
    }
    if (!(workers = calloc((size_t)clients, sizeof *workers))) {
        fprintf(stderr, "post_load: out of memory\n");
        goto cleanup_curl;
    }

    printf("post_load: url=%s clients=%ld batch=%d pilot=%s", url, clients, cfg.batch,
           pilot);
    if (duration)
        printf(" duration=%lds", duration);
    if (cfg.max_requests)
        printf(" requests=%ld", cfg.max_requests);
    printf("\n");
    fflush(stdout);

    t0 = mono_now();
    cfg.deadline = duration ? t0 + (double)duration : 0.0;
    for (; started < clients; started++) {
        int rc;

        workers[started].cfg = &cfg;
        rc = pthread_create(&workers[started].thread, NULL, worker_main,
                            &workers[started]);
        if (rc != 0) {
            fprintf(stderr, "post_load: pthread_create: %s\n", strerror(rc));
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    elapsed = mono_now() - t0;

    if (started > 0)
        print_results(workers, started, cfg.batch, elapsed);
    ret = started == clients ? 0 : 1;

cleanup_curl:
    curl_global_cleanup();
cleanup:
    free(workers);
    free(auth);
    free(token);
    free(body);
    free(url);
    return ret;
}
