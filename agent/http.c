/*
 * http.c - JSON over HTTP to qtaud with libcurl's easy interface.
 *
 * Per call: serialize, POST on the handle's kept-alive connection, collect
 * the answer into a reusable buffer, parse it.  The progress callback is
 * the one way to stop a call early (a long poll when the agent stops).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "agent/http.h"
#include "common/buf.h"

/* Largest answer accepted: qtaud's own default request limit (max-body);
 * a lease of a node's worth of tasks is far below it. */
#define HTTP_MAX_REPLY (64u * 1024 * 1024)

struct http_client {
    CURL *curl;
    struct curl_slist *headers; /* one node holds the token: wiped on destroy */
    char *base;
    struct buf url;
    struct buf reply;
    bool too_big;
    http_abort_fn abort_fn;
    void *abort_arg;
    char errbuf[CURL_ERROR_SIZE];
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_client *c = arg;
    size_t n = size * nmemb;

    if (c->reply.len + n > HTTP_MAX_REPLY) {
        c->too_big = true;
        return 0;   /* makes curl fail the call with CURLE_WRITE_ERROR */
    }
    buf_add(&c->reply, data, n);
    return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    struct http_client *c = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return c->abort_fn && c->abort_fn(c->abort_arg) ? 1 : 0;
}

struct http_client *http_client_create(const char *base_url, const char *token)
{
    struct http_client *c = calloc(1, sizeof(*c));
    struct buf auth = BUF_INIT;
    struct curl_slist *h;

    if (!c)
        return NULL;
    c->base = strdup(base_url);
    c->curl = curl_easy_init();
    if (!c->base || !c->curl)
        goto error;
    buf_addf(&auth, "Authorization: Bearer %s", token);
    h = curl_slist_append(NULL, auth.data);
    explicit_bzero(auth.data, auth.len);
    buf_release(&auth);
    if (!h)
        goto error;
    c->headers = h;
    /* "Expect:" stops curl from waiting for a 100-continue on larger
     * bodies: a round trip for nothing on every big report. */
    if (!(h = curl_slist_append(c->headers, "Content-Type: application/json"))
        || !(h = curl_slist_append(c->headers, "Accept: application/json"))
        || !(h = curl_slist_append(c->headers, "Expect:")))
        goto error;

    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "qtau-agent/" PACKAGE_VERSION);
    /* no SIGALRM for DNS timeouts: the agent is threaded and blocks signals */
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(HTTP_CONNECT_TIMEOUT * 1000));
    /* TCP keep-alive notices a head node that vanished during a long poll
     * sooner than the poll's own timeout would */
    curl_easy_setopt(c->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(c->curl, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
    return c;

error:
    http_client_destroy(c);
    errno = ENOMEM;
    return NULL;
}

void http_client_destroy(struct http_client *c)
{
    int saved = errno;

    if (c) {
        if (c->curl)
            curl_easy_cleanup(c->curl);
        for (struct curl_slist *h = c->headers; h; h = h->next)
            explicit_bzero(h->data, strlen(h->data));
        curl_slist_free_all(c->headers);
        buf_release(&c->url);
        buf_release(&c->reply);
        free(c->base);
        free(c);
    }
    errno = saved;
}

void http_client_set_abort(struct http_client *c, http_abort_fn fn, void *arg)
{
    c->abort_fn = fn;
    c->abort_arg = arg;
}

static int curl_errno(CURLcode rc)
{
    switch (rc) {
    case CURLE_ABORTED_BY_CALLBACK: return ECANCELED;
    case CURLE_OPERATION_TIMEDOUT: return ETIMEDOUT;
    case CURLE_COULDNT_CONNECT: return ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST: return EHOSTUNREACH;
    case CURLE_OUT_OF_MEMORY: return ENOMEM;
    default: return EIO;
    }
}

int http_post_json(struct http_client *c, const char *path, json_t *body,
                   double timeout, long *status, json_t **reply, char *err,
                   size_t errlen)
{
    char *data = json_dumps(body, JSON_COMPACT);
    CURLcode rc;

    *reply = NULL;
    *status = 0;
    if (!data) {
        snprintf(err, errlen, "cannot encode the request");
        errno = ENOMEM;
        return -1;
    }
    c->url.len = 0;
    buf_adds(&c->url, c->base);
    buf_adds(&c->url, path);
    c->reply.len = 0;
    c->too_big = false;
    c->errbuf[0] = '\0';
    curl_easy_setopt(c->curl, CURLOPT_URL, c->url.data);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(data));
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    rc = curl_easy_perform(c->curl);
    /* curl keeps the pointer: clear it before the buffer goes */
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, NULL);
    free(data);
    if (rc != CURLE_OK) {
        if (c->too_big)
            snprintf(err, errlen, "answer larger than %u bytes", HTTP_MAX_REPLY);
        else
            snprintf(err, errlen, "%s", c->errbuf[0] ? c->errbuf
                                                     : curl_easy_strerror(rc));
        errno = c->too_big ? EMSGSIZE : curl_errno(rc);
        return -1;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, status);
    if (c->reply.len > 0)
        *reply = json_loadb(c->reply.data, c->reply.len, 0, NULL);
    return 0;
}
