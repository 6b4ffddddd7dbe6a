/*
 * writer.c - the one thread that writes to the store.
 *
 * Producers (API threads, pool workers) append changes to a queue under a
 * mutex and get a sequence number.  The writer thread takes the whole queue
 * at once, applies it in a single transaction and publishes the highest
 * sequence number it committed; waiters sleep on a condition variable until
 * their number is reached.  Grouping is what makes thousands of changes per
 * second cheap (one WAL commit per batch), and a single thread is what
 * serializes the metrics table.
 *
 * If a commit fails (disk full, read-only file), the batch is rolled back
 * and its waiters are told.  New task rows in it are dropped: their
 * submitters answer 503 and the tasks never existed.  Every other change
 * (state, metrics, pilots of things already acknowledged) is kept and
 * retried with the next batch after a pause, so nothing acknowledged is
 * dropped.  The sequence numbers of dropped new tasks are remembered, so a
 * submitter that comes to wait only after a later batch committed is still
 * told its task was not stored.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/enums.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "db/db.h"
#include "db/schema.h"

/* Pause before retrying a batch whose commit failed. */
#define WRITER_RETRY_NS (200 * 1000 * 1000L)

enum op_kind { OP_TASKS, OP_METRICS, OP_PILOT };

struct op {
    struct op *next;
    enum op_kind kind;
    uint64_t seq;
    bool is_insert;             /* new tasks or a new pilot awaiting their 201 */
    size_t n;                   /* OP_TASKS: rows */
    struct db_task_row *tasks;
    struct db_metrics_row metrics;
    struct db_pilot_row pilot;
};

struct db_writer {
    sqlite3 *db;
    sqlite3_stmt *task_upsert;
    sqlite3_stmt *metrics_insert;
    sqlite3_stmt *pilot_upsert;
    pthread_t thread;

    pthread_mutex_t lock;
    pthread_cond_t wake;        /* work queued or stop asked */
    pthread_cond_t done;        /* committed_seq or failed_seq moved */
    struct op *head, **tail;
    size_t depth;
    uint64_t next_seq;          /* last number handed out */
    uint64_t committed_seq;     /* all changes <= this are committed, but
                                   those in dropped */
    uint64_t failed_seq;        /* the last failed batch ended here */
    uint64_t *dropped;          /* seqs of new-task changes never committed,
                                   ascending: one per submission answered 503 */
    size_t ndropped, dropped_cap;
    char failure[256];
    bool stopping;
    struct db_writer_stats stats;
};

static char *dup_or_null(const char *s)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void task_row_copy(struct db_task_row *dst, const struct db_task_row *src)
{
    *dst = *src;
    dst->name = dup_or_null(src->name);
    dst->description = dup_or_null(src->description);
    dst->pilot_scheduled = dup_or_null(src->pilot_scheduled);
    dst->error_msg = dup_or_null(src->error_msg);
    dst->hostname = dup_or_null(src->hostname);
}

static void task_row_free(struct db_task_row *r)
{
    free((char *)r->name);
    free((char *)r->description);
    free((char *)r->pilot_scheduled);
    free((char *)r->error_msg);
    free((char *)r->hostname);
}

static void op_free(struct op *op)
{
    switch (op->kind) {
    case OP_TASKS:
        for (size_t i = 0; i < op->n; i++)
            task_row_free(&op->tasks[i]);
        free(op->tasks);
        break;
    case OP_METRICS:
        free((char *)op->metrics.task_name);
        free((char *)op->metrics.error_msg);
        free((char *)op->metrics.pilot_scheduled);
        free((char *)op->metrics.hostname);
        break;
    case OP_PILOT:
        free((char *)op->pilot.name);
        free((char *)op->pilot.description);
        free((char *)op->pilot.reason);
        free((char *)op->pilot.token);
        free((char *)op->pilot.workdir);
        break;
    }
    free(op);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_id(sqlite3_stmt *st, int i, int64_t v)
{
    if (v > 0)
        sqlite3_bind_int64(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void bind_time(sqlite3_stmt *st, int i, double t)
{
    if (t > 0)
        sqlite3_bind_double(st, i, t);
    else
        sqlite3_bind_null(st, i);
}

static int step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int apply_task(struct db_writer *w, const struct db_task_row *r)
{
    sqlite3_stmt *st = w->task_upsert;

    sqlite3_bind_int64(st, 1, r->id);
    bind_text(st, 2, r->name);
    bind_text(st, 3, r->description ? r->description : "{}");
    bind_id(st, 4, r->pilot_id);
    bind_text(st, 5, r->pilot_scheduled ? r->pilot_scheduled : "ANY");
    bind_text(st, 6, qt_enum_name(&task_state_enum, r->state));
    sqlite3_bind_int(st, 7, r->attempts);
    bind_id(st, 8, r->run_pilot_id);
    sqlite3_bind_double(st, 9, r->submit_time);
    bind_time(st, 10, r->start_time);
    bind_time(st, 11, r->end_time);
    if (r->exit_code >= 0)
        sqlite3_bind_int(st, 12, r->exit_code);
    if (r->term_signal > 0)
        sqlite3_bind_int(st, 13, r->term_signal);
    bind_text(st, 14, r->error_msg);
    bind_text(st, 15, r->hostname);
    sqlite3_bind_int(st, 16, r->requeues);
    bind_id(st, 17, r->run_pid);
    bind_id(st, 18, r->run_pid_start);
    return step_reset(st);
}

static int apply_metrics(struct db_writer *w, const struct db_metrics_row *r)
{
    sqlite3_stmt *st = w->metrics_insert;

    sqlite3_bind_int64(st, 1, r->task_id);
    sqlite3_bind_int(st, 2, r->attempt);
    bind_text(st, 3, r->task_name);
    bind_text(st, 4, qt_enum_name(&task_state_enum, r->status));
    bind_text(st, 5, r->error_msg);
    sqlite3_bind_double(st, 6, r->submit_time);
    bind_time(st, 7, r->start_time);
    sqlite3_bind_double(st, 8, r->completion_time);
    bind_text(st, 9, r->pilot_scheduled ? r->pilot_scheduled : "ANY");
    if (r->exit_code >= 0)
        sqlite3_bind_int(st, 10, r->exit_code);
    if (r->term_signal > 0)
        sqlite3_bind_int(st, 11, r->term_signal);
    bind_id(st, 12, r->pilot_id);
    bind_text(st, 13, r->hostname);
    return step_reset(st);
}

static int apply_pilot(struct db_writer *w, const struct db_pilot_row *r)
{
    sqlite3_stmt *st = w->pilot_upsert;

    sqlite3_bind_int64(st, 1, r->id);
    bind_text(st, 2, r->name);
    bind_text(st, 3, qt_enum_name(&resource_enum, r->resource));
    bind_text(st, 4, qt_enum_name(&engine_enum, r->engine));
    bind_text(st, 5, qt_enum_name(&pilot_state_enum, r->state));
    bind_text(st, 6, r->description ? r->description : "{}");
    sqlite3_bind_int(st, 7, r->cores);
    bind_text(st, 8, r->reason);
    sqlite3_bind_double(st, 9, r->create_time);
    bind_time(st, 10, r->start_time);
    bind_time(st, 11, r->end_time);
    bind_id(st, 12, r->slurm_job_id);
    bind_text(st, 13, r->token);
    bind_text(st, 14, r->workdir);
    return step_reset(st);
}

static int apply_op(struct db_writer *w, const struct op *op)
{
    switch (op->kind) {
    case OP_TASKS:
        for (size_t i = 0; i < op->n; i++)
            if (apply_task(w, &op->tasks[i]) < 0)
                return -1;
        return 0;
    case OP_METRICS:
        return apply_metrics(w, &op->metrics);
    case OP_PILOT:
        return apply_pilot(w, &op->pilot);
    }
    return -1;
}

/* Fills why for an I/O error of db.  SQLite says "disk I/O error" for a
 * read-only file system, a failing disk and more alike, and the errno it
 * keeps is often gone by then; so ask the file system itself: make a
 * nameless file (O_TMPFILE, nothing to clean up) beside the store, and
 * name what the kernel answers - what an operator can act on. */
static void io_error_reason(sqlite3 *db, char *why, size_t whylen)
{
    const char *file = sqlite3_db_filename(db, "main");
    char dir[PATH_MAX];
    const char *slash;
    int fd;

    snprintf(why, whylen, "%s", sqlite3_errmsg(db));
    if (!file || !(slash = strrchr(file, '/')) || (size_t)(slash - file) >= sizeof(dir))
        return;
    if (slash == file)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
    fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    else if (errno == EROFS || errno == EIO || errno == ENOSPC || errno == EDQUOT)
        snprintf(why, whylen, "%s: %s (%.96s)", sqlite3_errmsg(db), strerror(errno), dir);
}

/* Applies the batch in one transaction.  Returns 0, or -1 (rolled back)
 * with SQLite's reason in why, taken before the ROLLBACK replaces it ("not
 * an error", or "no transaction is active" when SQLite rolled back itself;
 * after a failed BEGIN the ROLLBACK is a harmless no-op).  When one change
 * broke a constraint - it can never be stored, however often it is tried -
 * *poison is that change. */
static int commit_batch(struct db_writer *w, struct op *batch, size_t *changes,
                        char *why, size_t whylen, struct op **poison)
{
    *changes = 0;
    *poison = NULL;
    if (sqlite3_exec(w->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        goto error;
    for (struct op *op = batch; op; op = op->next) {
        if (apply_op(w, op) < 0) {
            if ((sqlite3_errcode(w->db) & 0xff) == SQLITE_CONSTRAINT)
                *poison = op;
            goto error;
        }
        *changes += op->kind == OP_TASKS ? op->n : 1;
    }
    if (sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto error;
    return 0;
error:
    if ((sqlite3_errcode(w->db) & 0xff) == SQLITE_IOERR)
        io_error_reason(w->db, why, whylen);
    else
        snprintf(why, whylen, "%s", sqlite3_errmsg(w->db));
    sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Records seq as dropped, keeping the list ascending (a retried batch's
 * poison change can be older than inserts dropped before it). */
static void dropped_add(struct db_writer *w, uint64_t seq)
{
    size_t i;

    if (w->ndropped == w->dropped_cap) {
        w->dropped_cap = w->dropped_cap ? w->dropped_cap * 2 : 16;
        w->dropped = realloc(w->dropped, w->dropped_cap * sizeof(*w->dropped));
        if (!w->dropped)
            abort();
    }
    for (i = w->ndropped; i > 0 && w->dropped[i - 1] > seq; i--)
        w->dropped[i] = w->dropped[i - 1];
    w->dropped[i] = seq;
    w->ndropped++;
}

/* Takes poison out of batch (returned), recording it as dropped. */
static struct op *drop_op(struct db_writer *w, struct op *batch, struct op *poison)
{
    struct op **pp = &batch;

    while (*pp && *pp != poison)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = poison->next;
        dropped_add(w, poison->seq);
        op_free(poison);
    }
    return batch;
}

/* Whether seq was a new-task change dropped from a failed batch.  Called
 * with the lock held. */
static bool dropped_has(const struct db_writer *w, uint64_t seq)
{
    size_t lo = 0, hi = w->ndropped;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (w->dropped[mid] == seq)
            return true;
        if (w->dropped[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Removes the new-task ops from a failed batch (their submitters are told
 * the submission failed) and returns the rest, in order.  Called with the
 * lock held.  The seqs recorded stay ascending: a retried batch holds no
 * new tasks, and everything after it was queued later. */
static struct op *drop_inserts(struct db_writer *w, struct op *batch)
{
    struct op *keep = NULL, **tail = &keep;

    while (batch) {
        struct op *next = batch->next;

        if (batch->is_insert) {
            dropped_add(w, batch->seq);
            op_free(batch);
        } else {
            batch->next = NULL;
            *tail = batch;
            tail = &batch->next;
        }
        batch = next;
    }
    return keep;
}

static void *writer_main(void *arg)
{
    struct db_writer *w = arg;
    struct op *retry = NULL;    /* a failed batch, kept to try again */

    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct op *batch, *last, *poison;
        uint64_t upto;
        size_t changes;
        double t0, t1;
        char why[sizeof(w->failure)];
        int rc;

        while (!w->head && !retry && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (!w->head && !retry && w->stopping)
            break;
        /* take the whole queue; a retried batch goes first, in order */
        batch = w->head;
        upto = w->next_seq;
        w->head = NULL;
        w->tail = &w->head;
        w->depth = 0;
        if (retry) {
            for (last = retry; last->next; last = last->next)
                ;
            last->next = batch;
            batch = retry;
            retry = NULL;
        }
        pthread_mutex_unlock(&w->lock);

        t0 = time_mono();
        rc = commit_batch(w, batch, &changes, why, sizeof(why), &poison);
        t1 = time_mono();

        pthread_mutex_lock(&w->lock);
        hist_observe(&w->stats.commit_seconds, t1 - t0);
        if (rc < 0 && poison) {
            /* retrying cannot help it, and it must not hold back the rest:
             * its waiter is told it failed, the others go again at once */
            log_err("store: dropping a change that breaks a constraint: %s", why);
            snprintf(w->failure, sizeof(w->failure), "%s", why);
            w->stats.failures++;
            retry = drop_op(w, batch, poison);
            pthread_cond_broadcast(&w->done);
            continue;
        }
        if (rc == 0) {
            w->committed_seq = upto;
            w->stats.commits++;
            w->stats.changes += changes;
            while (batch) {
                struct op *next = batch->next;
                op_free(batch);
                batch = next;
            }
        } else {
            struct timespec pause = { 0, WRITER_RETRY_NS };

            w->failed_seq = upto;
            w->stats.failures++;
            snprintf(w->failure, sizeof(w->failure), "%s", why);
            log_err("store commit failed, will retry: %s", w->failure);
            retry = drop_inserts(w, batch);
            pthread_cond_broadcast(&w->done);
            pthread_mutex_unlock(&w->lock);
            nanosleep(&pause, NULL);
            pthread_mutex_lock(&w->lock);
            if (w->stopping && !w->head) {
                /* shutting down with a store that will not take writes:
                 * say what is lost rather than spin forever */
                size_t lost = 0;

                while (retry) {
                    struct op *next = retry->next;
                    lost++;
                    op_free(retry);
                    retry = next;
                }
                log_err("shutting down with %zu uncommitted changes: %s", lost,
                        w->failure);
                w->committed_seq = upto;
            }
        }
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct db_writer *db_writer_start(sqlite3 *db)
{
    struct db_writer *w = calloc(1, sizeof(*w));
    int rc;

    if (!w)
        return NULL;
    w->db = db;
    if (sqlite3_prepare_v3(db, DB_SQL_TASK_UPSERT, -1, SQLITE_PREPARE_PERSISTENT,
                           &w->task_upsert, NULL) != SQLITE_OK
        || sqlite3_prepare_v3(db, DB_SQL_METRICS_INSERT, -1,
                              SQLITE_PREPARE_PERSISTENT, &w->metrics_insert,
                              NULL) != SQLITE_OK
        || sqlite3_prepare_v3(db, DB_SQL_PILOT_UPSERT, -1,
                              SQLITE_PREPARE_PERSISTENT, &w->pilot_upsert,
                              NULL) != SQLITE_OK) {
        log_err("preparing store statements: %s", sqlite3_errmsg(db));
        goto error;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->done, NULL);
    w->tail = &w->head;
    hist_init(&w->stats.commit_seconds, hist_commit_bounds, hist_commit_nbounds);
    rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        errno = rc;
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->wake);
        pthread_cond_destroy(&w->done);
        goto error;
    }
    return w;
error:
    sqlite3_finalize(w->task_upsert);
    sqlite3_finalize(w->metrics_insert);
    sqlite3_finalize(w->pilot_upsert);
    free(w);
    if (!errno)
        errno = EIO;
    return NULL;
}

void db_writer_stop(struct db_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    sqlite3_finalize(w->task_upsert);
    sqlite3_finalize(w->metrics_insert);
    sqlite3_finalize(w->pilot_upsert);
    /* leave a checkpointed WAL behind */
    sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    db_close(w->db);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->done);
    free(w->dropped);
    free(w);
}

static uint64_t enqueue(struct db_writer *w, struct op *op)
{
    uint64_t seq;

    pthread_mutex_lock(&w->lock);
    seq = op->seq = ++w->next_seq;
    *w->tail = op;
    w->tail = &op->next;
    w->depth++;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return seq;
}

static struct op *op_new(enum op_kind kind)
{
    struct op *op = calloc(1, sizeof(*op));

    if (!op)
        abort();
    op->kind = kind;
    return op;
}

static struct op *tasks_op(const struct db_task_row *rows, size_t n)
{
    struct op *op = op_new(OP_TASKS);

    op->n = n;
    op->tasks = calloc(n ? n : 1, sizeof(*op->tasks));
    if (!op->tasks)
        abort();
    for (size_t i = 0; i < n; i++)
        task_row_copy(&op->tasks[i], &rows[i]);
    op->is_insert = n > 0 && rows[0].description != NULL;
    return op;
}

uint64_t db_writer_tasks(struct db_writer *w, const struct db_task_row *rows,
                         size_t n)
{
    return enqueue(w, tasks_op(rows, n));
}

uint64_t db_writer_task(struct db_writer *w, const struct db_task_row *row)
{
    return db_writer_tasks(w, row, 1);
}

struct db_change *db_change_metrics(const struct db_metrics_row *row)
{
    struct op *op = op_new(OP_METRICS);

    op->metrics = *row;
    op->metrics.task_name = dup_or_null(row->task_name);
    op->metrics.error_msg = dup_or_null(row->error_msg);
    op->metrics.pilot_scheduled = dup_or_null(row->pilot_scheduled);
    op->metrics.hostname = dup_or_null(row->hostname);
    return (struct db_change *)op;
}

uint64_t db_writer_metrics(struct db_writer *w, const struct db_metrics_row *row)
{
    return enqueue(w, (struct op *)db_change_metrics(row));
}

uint64_t db_writer_task_ended(struct db_writer *w, const struct db_task_row *row,
                              struct db_change *metrics)
{
    struct op *m = (struct op *)metrics, *t = tasks_op(row, 1);
    uint64_t seq;

    /* one lock hold: the writer takes both into the same batch, so the
     * row of an ended attempt and the task's new state commit together */
    pthread_mutex_lock(&w->lock);
    m->seq = ++w->next_seq;
    seq = t->seq = ++w->next_seq;
    m->next = t;
    *w->tail = m;
    w->tail = &t->next;
    w->depth += 2;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return seq;
}

uint64_t db_writer_pilot(struct db_writer *w, const struct db_pilot_row *row)
{
    struct op *op = op_new(OP_PILOT);

    op->pilot = *row;
    op->pilot.name = dup_or_null(row->name);
    op->pilot.description = dup_or_null(row->description);
    op->pilot.reason = dup_or_null(row->reason);
    op->pilot.token = dup_or_null(row->token);
    op->pilot.workdir = dup_or_null(row->workdir);
    op->is_insert = row->is_new;
    return enqueue(w, op);
}

int db_writer_wait(struct db_writer *w, uint64_t seq, struct qt_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        /* a dropped change stays failed after later batches commit */
        if (w->committed_seq >= seq && !dropped_has(w, seq))
            break;
        if (w->failed_seq >= seq || dropped_has(w, seq)) {
            qt_error_set(err, 503, "store_unavailable", NULL,
                         "the store could not commit: %s", w->failure);
            rc = -1;
            break;
        }
        pthread_cond_wait(&w->done, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int db_writer_sync(struct db_writer *w, struct qt_error *err)
{
    uint64_t seq;

    pthread_mutex_lock(&w->lock);
    seq = w->next_seq;
    pthread_mutex_unlock(&w->lock);
    return db_writer_wait(w, seq, err);
}

void db_writer_get_stats(struct db_writer *w, struct db_writer_stats *st)
{
    pthread_mutex_lock(&w->lock);
    *st = w->stats;
    st->queue_depth = w->depth;
    pthread_mutex_unlock(&w->lock);
}
