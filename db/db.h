/*
 * db.h - the SQLite store: open, migrate, load at start-up, and the single
 * writer every change goes through.
 *
 * One file, WAL mode.  The daemon keeps its working set in memory and uses
 * the store as the durable record: a task is acknowledged only after the
 * writer has committed its row, and every later change is queued to the
 * writer, which commits in groups (one transaction per batch of queued
 * changes).  The writer is the only path into task_metrics, which is what
 * keeps the metrics table serialized.  Reads (start-up load, CSV export) use
 * their own connections.
 *
 * Row structs below are plain data; the writer copies what it is given, so
 * callers keep ownership of their strings.
 */
#ifndef QT_DB_H
#define QT_DB_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/hist.h"

#define DB_SCHEMA_VERSION 3

struct db_task_row {
    int64_t id;
    const char *name;            /* NULL: none */
    const char *description;     /* the task's JSON description (insert only) */
    int64_t pilot_id;            /* requested pilot; 0 = ANY */
    const char *pilot_scheduled; /* "ANY" or the pilot's name */
    int state;                   /* enum task_state */
    int attempts;                /* attempts started */
    int requeues;                /* of those, interrupted ones (daemon stop,
                                    pilot lost): they do not use up retries */
    int64_t run_pilot_id;        /* pilot of the current/last attempt, 0 none */
    double submit_time, start_time, end_time;
    int exit_code;               /* -1 none */
    int term_signal;             /* 0 none */
    const char *error_msg;       /* NULL none */
    const char *hostname;
    int64_t run_pid;             /* local attempt's process, 0 none */
    int64_t run_pid_start;       /* its start time (exec_proc_start) */
};

struct db_metrics_row {
    int64_t task_id;
    int attempt;
    const char *task_name;
    int status;                  /* enum task_state: SUCCESS/FAILED/CANCELED */
    const char *error_msg;
    double submit_time, start_time, completion_time;
    const char *pilot_scheduled;
    int exit_code;               /* -1 none */
    int term_signal;             /* 0 none */
    int64_t pilot_id;            /* 0 if it never ran */
    const char *hostname;
};

struct db_pilot_row {
    int64_t id;
    const char *name;
    int resource;                /* enum pilot_resource */
    int engine;                  /* enum pilot_engine */
    int state;                   /* enum pilot_state */
    const char *description;     /* JSON */
    int cores;
    const char *reason;
    double create_time, start_time, end_time;
    int64_t slurm_job_id;        /* 0 none */
    const char *token;           /* SLURM pilots: their agents' token */
    const char *workdir;         /* SLURM pilots: the job's folder */
    bool is_new;                 /* a pilot awaiting its 201: dropped, not
                                    retried, if its batch fails */
};

/* Opens (creating if needed) the database at path read-write, sets WAL and
 * migrates the schema to DB_SCHEMA_VERSION.  Returns a handle or NULL with
 * err filled. */
sqlite3 *db_open(const char *path, struct qt_error *err);
/* How far a commit is on disk before it counts: "normal" (WAL, synced at
 * checkpoints: survives a crash of qtaud or of the kernel's processes, may
 * lose the last commits on power loss) or "full" (synced at every commit:
 * survives power loss, slower).  Returns 0 or -1 with err. */
int db_set_durability(sqlite3 *db, const char *mode, struct qt_error *err);
/* Opens a second, read-only connection for readers. */
sqlite3 *db_open_reader(const char *path, struct qt_error *err);
void db_close(sqlite3 *db);

/* Start-up load: calls fn for each row, in id order.  The row's strings are
 * valid only during the call.  Returns 0 or -1 with err filled. */
int db_load_pilots(sqlite3 *db, void (*fn)(void *arg, const struct db_pilot_row *),
                   void *arg, struct qt_error *err);
int db_load_tasks(sqlite3 *db, void (*fn)(void *arg, const struct db_task_row *),
                  void *arg, struct qt_error *err);

/* Appends the metrics table as CSV (header first) to out, filtered by
 * pilot id (0 = all) and completion time >= since (0 = all). */
int db_metrics_csv(sqlite3 *db, int64_t pilot_id, double since,
                   struct buf *out, struct qt_error *err);

/* The writer thread. */
struct db_writer;

/* Takes over db (closes it on stop).  Returns NULL with errno on failure. */
struct db_writer *db_writer_start(sqlite3 *db);
/* Drains the queue, commits, joins the thread, closes the db.  NULL ok. */
void db_writer_stop(struct db_writer *w);

/* Queue changes.  Each returns the sequence number of the change, to wait
 * on with db_writer_wait().  Strings are copied.  Task rows carrying a
 * description are new tasks, and pilot rows marked is_new new pilots: if
 * their batch fails to commit they are dropped (the submitter answers
 * 503).  A change that breaks a constraint can never commit: it is dropped
 * and its waiter told so.  Every other change is retried until it
 * commits. */
uint64_t db_writer_task(struct db_writer *w, const struct db_task_row *row);
uint64_t db_writer_tasks(struct db_writer *w, const struct db_task_row *rows,
                         size_t n);
uint64_t db_writer_metrics(struct db_writer *w, const struct db_metrics_row *row);
uint64_t db_writer_pilot(struct db_writer *w, const struct db_pilot_row *row);

/* An ended attempt: its metrics row (made with db_change_metrics, which
 * copies the row's strings) and the task's new row, queued so that they
 * commit in one transaction - never the row without the state, which
 * after a crash would run a finished task again.  Takes metrics. */
struct db_change;
struct db_change *db_change_metrics(const struct db_metrics_row *row);
uint64_t db_writer_task_ended(struct db_writer *w, const struct db_task_row *row,
                              struct db_change *metrics);

/* Blocks until change seq is committed.  Returns 0, or -1 if the batch
 * holding it failed to commit (err says why, status 503). */
int db_writer_wait(struct db_writer *w, uint64_t seq, struct qt_error *err);
/* Waits for everything queued so far. */
int db_writer_sync(struct db_writer *w, struct qt_error *err);

/* Writer statistics for logs and benchmarks. */
struct db_writer_stats {
    uint64_t commits;
    uint64_t changes;
    uint64_t failures;
    size_t queue_depth;          /* changes queued, not yet taken */
    struct hist commit_seconds;  /* each batch's transaction, committed
                                    or not (hist_commit_bounds) */
};
void db_writer_get_stats(struct db_writer *w, struct db_writer_stats *st);

#endif
