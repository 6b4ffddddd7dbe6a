/*
 * test_db.c - the SQLite store (db/db.c, db/writer.c) against real files.
 *
 * Covers: db_open (new file, WAL, schema version, tables, reopening, a newer
 * schema refused and left untouched, files that are not databases), the
 * writer round trip read back with db_load_* and a separate connection,
 * group commit from four threads, the metrics CSV and its RFC 4180 round
 * trip, failed batches (another connection holding the write lock, and a
 * file size limit that makes COMMIT fail): the new task is dropped with a
 * 503 and everything else in the batch is retried, and db_writer_stop
 * draining its queue.
 *
 * Every test runs in its own directory under one mkdtemp root, which main()
 * removes at the end whether the tests passed or not.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/buf.h"
#include "common/csv.h"
#include "common/enums.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "db/db.h"
#include "db/schema.h"

static char root[200];     /* the mkdtemp root of the whole run */
static char dir[224];      /* this test's directory */
static char dbpath[256];   /* dir/qtaud.db */

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s/t-XXXXXX", root);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(dbpath, sizeof(dbpath), "%s/qtaud.db", dir);
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* ---- helpers: a separate, plain sqlite3 connection -------------------- */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;

    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE
                                     | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;

    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK,
                  "%s: %s", sql, msg ? msg : "?");
}

/* The first column of the first row of sql, as an integer; -1 for none. */
static long long raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;

    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
                  "%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Same, as text (malloc'd; NULL for none or SQL NULL). */
static char *raw_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    char *v = NULL;

    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
                  "%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static void assert_raw_text(sqlite3 *db, const char *sql, const char *want)
{
    char *got = raw_text(db, sql);

    ck_assert_msg(got && strcmp(got, want) == 0, "%s: got '%s', want '%s'",
                  sql, got ? got : "(null)", want);
    free(got);
}

/* ---- helpers: the store under test ------------------------------------ */

static sqlite3 *open_ok(const char *path)
{
    struct qt_error err = { 0 };
    sqlite3 *db = db_open(path, &err);

    ck_assert_msg(db != NULL, "db_open: %s", err.message);
    return db;
}

static struct db_writer *writer_open(void)
{
    struct db_writer *w = db_writer_start(open_ok(dbpath));

    ck_assert_ptr_nonnull(w);
    return w;
}

static void wait_ok(struct db_writer *w, uint64_t seq)
{
    struct qt_error err = { 0 };

    ck_assert_msg(db_writer_wait(w, seq, &err) == 0, "wait %llu: %s",
                  (unsigned long long)seq, err.message);
}

/* A new task as the scheduler submits it: PENDING, with a description. */
static struct db_task_row new_task(int64_t id)
{
    return (struct db_task_row){
        .id = id, .description = "{\"command\":[\"true\"]}",
        .pilot_scheduled = "ANY", .state = TASK_PENDING,
        .submit_time = 1796320700.0 + (double)id, .exit_code = -1,
    };
}

static struct db_pilot_row local_pilot(int64_t id, const char *name)
{
    return (struct db_pilot_row){
        .id = id, .name = name, .resource = RESOURCE_LOCAL,
        .engine = ENGINE_QTAU, .state = PILOT_RUNNING,
        .description = "{\"resource\":\"local\"}", .cores = 4,
        .create_time = 1796320600.5, .start_time = 1796320601.25,
    };
}

static struct db_metrics_row success_metrics(int64_t task_id, int64_t pilot_id)
{
    return (struct db_metrics_row){
        .task_id = task_id, .attempt = 1, .status = TASK_SUCCESS,
        .submit_time = 1796320700.0, .start_time = 1796320701.0,
        .completion_time = 1796320702.0, .pilot_scheduled = "ANY",
        .exit_code = 0, .pilot_id = pilot_id, .hostname = "head",
    };
}

/* Rows read back by db_load_*, with strings copied out of the callback. */
#define MAX_LOADED 8

struct loaded {
    size_t ntasks, npilots, count;
    int64_t last_id;
    bool ordered;
    struct db_task_row tasks[MAX_LOADED];
    struct db_pilot_row pilots[MAX_LOADED];
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void load_task_cb(void *arg, const struct db_task_row *r)
{
    struct loaded *l = arg;
    struct db_task_row *c;

    if (l->count > 0 && r->id <= l->last_id)
        l->ordered = false;
    l->last_id = r->id;
    l->count++;
    if (l->ntasks == MAX_LOADED)
        return;
    c = &l->tasks[l->ntasks++];
    *c = *r;
    c->name = dup_or_null(r->name);
    c->description = dup_or_null(r->description);
    c->pilot_scheduled = dup_or_null(r->pilot_scheduled);
    c->error_msg = dup_or_null(r->error_msg);
    c->hostname = dup_or_null(r->hostname);
}

static void load_pilot_cb(void *arg, const struct db_pilot_row *r)
{
    struct loaded *l = arg;
    struct db_pilot_row *c;

    if (l->npilots == MAX_LOADED)
        return;
    c = &l->pilots[l->npilots++];
    *c = *r;
    c->name = dup_or_null(r->name);
    c->description = dup_or_null(r->description);
    c->reason = dup_or_null(r->reason);
    c->token = dup_or_null(r->token);
    c->workdir = dup_or_null(r->workdir);
}

static void loaded_free(struct loaded *l)
{
    for (size_t i = 0; i < l->ntasks; i++) {
        free((char *)l->tasks[i].name);
        free((char *)l->tasks[i].description);
        free((char *)l->tasks[i].pilot_scheduled);
        free((char *)l->tasks[i].error_msg);
        free((char *)l->tasks[i].hostname);
    }
    for (size_t i = 0; i < l->npilots; i++) {
        free((char *)l->pilots[i].name);
        free((char *)l->pilots[i].description);
        free((char *)l->pilots[i].reason);
        free((char *)l->pilots[i].token);
        free((char *)l->pilots[i].workdir);
    }
}

/* Loads everything through a reader connection, as the daemon does. */
static void load_all(struct loaded *l)
{
    struct qt_error err = { 0 };
    sqlite3 *rd = db_open_reader(dbpath, &err);

    ck_assert_msg(rd != NULL, "db_open_reader: %s", err.message);
    memset(l, 0, sizeof(*l));
    l->ordered = true;
    ck_assert_msg(db_load_pilots(rd, load_pilot_cb, l, &err) == 0, "%s",
                  err.message);
    ck_assert_msg(db_load_tasks(rd, load_task_cb, l, &err) == 0, "%s",
                  err.message);
    db_close(rd);
}

static void assert_task_eq(const struct db_task_row *got,
                           const struct db_task_row *want)
{
    ck_assert_int_eq(got->id, want->id);
    ck_assert_pstr_eq(got->name, want->name);
    ck_assert_pstr_eq(got->description, want->description);
    ck_assert_int_eq(got->pilot_id, want->pilot_id);
    ck_assert_pstr_eq(got->pilot_scheduled, want->pilot_scheduled);
    ck_assert_int_eq(got->state, want->state);
    ck_assert_int_eq(got->attempts, want->attempts);
    ck_assert_int_eq(got->requeues, want->requeues);
    ck_assert_int_eq(got->run_pilot_id, want->run_pilot_id);
    ck_assert_double_eq(got->submit_time, want->submit_time);
    ck_assert_double_eq(got->start_time, want->start_time);
    ck_assert_double_eq(got->end_time, want->end_time);
    ck_assert_int_eq(got->exit_code, want->exit_code);
    ck_assert_int_eq(got->term_signal, want->term_signal);
    ck_assert_pstr_eq(got->error_msg, want->error_msg);
    ck_assert_pstr_eq(got->hostname, want->hostname);
}

static void assert_pilot_eq(const struct db_pilot_row *got,
                            const struct db_pilot_row *want)
{
    ck_assert_int_eq(got->id, want->id);
    ck_assert_pstr_eq(got->name, want->name);
    ck_assert_int_eq(got->resource, want->resource);
    ck_assert_int_eq(got->engine, want->engine);
    ck_assert_int_eq(got->state, want->state);
    ck_assert_pstr_eq(got->description, want->description);
    ck_assert_int_eq(got->cores, want->cores);
    ck_assert_pstr_eq(got->reason, want->reason);
    ck_assert_double_eq(got->create_time, want->create_time);
    ck_assert_double_eq(got->start_time, want->start_time);
    ck_assert_double_eq(got->end_time, want->end_time);
    ck_assert_int_eq(got->slurm_job_id, want->slurm_job_id);
    ck_assert_pstr_eq(got->token, want->token);
    ck_assert_pstr_eq(got->workdir, want->workdir);
}

/* ---- helpers: CSV ----------------------------------------------------- */

enum {
    C_COMPLETION, C_ERROR, C_EXEC, C_STAGING_BYTES, C_PILOT_SCHED,
    C_STAGING_SECS, C_STATUS, C_SUBMIT, C_TASK_ID, C_WAIT, C_NAME,
    C_ATTEMPT, C_EXIT, C_SIGNAL, C_PILOT_ID, C_HOST, C_NCOLS
};

static const char metrics_header[] =
    "completion_time,error_msg,execution_secs,input_staging_data_size_bytes,"
    "pilot_scheduled,staging_time_secs,status,submit_time,task_id,"
    "wait_time_secs,task_name,attempt,exit_code,signal,pilot_id,hostname";

struct csv_table {
    size_t nrows;
    char **rows[16];
};

/* Parses the whole export, header included; every record must have all
 * C_NCOLS fields.  Returns the number of records; keeps the first 16. */
static size_t csv_parse(const struct buf *b, struct csv_table *t)
{
    size_t pos = 0, n = 0, nf;
    char **f;
    int rc;

    memset(t, 0, sizeof(*t));
    while ((rc = csv_read_record(b->data, b->len, &pos, &f, &nf)) == 1) {
        ck_assert_msg(nf == C_NCOLS, "record %zu has %zu fields", n, nf);
        if (t->nrows < 16)
            t->rows[t->nrows++] = f;
        else
            csv_free_record(f, nf);
        n++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(pos, b->len);
    return n;
}

static void csv_table_free(struct csv_table *t)
{
    for (size_t i = 0; i < t->nrows; i++)
        csv_free_record(t->rows[i], C_NCOLS);
}

static void metrics_csv_ok(sqlite3 *db, int64_t pilot, double since,
                           struct buf *out)
{
    struct qt_error err = { 0 };

    ck_assert_msg(db_metrics_csv(db, pilot, since, out, &err) == 0, "%s",
                  err.message);
}

/* ---- db_open ---------------------------------------------------------- */

START_TEST(test_open_creates_schema)
{
    static const char *const tables[] = { "pilots", "tasks", "task_metrics" };
    sqlite3 *db, *raw;
    struct stat sb;
    char sql[128];

    ck_assert_int_eq(stat(dbpath, &sb), -1);
    db = open_ok(dbpath);
    ck_assert_int_eq(stat(dbpath, &sb), 0);
    assert_raw_text(db, "PRAGMA journal_mode", "wal");
    db_close(db);

    /* what is on disk, seen by another connection */
    raw = raw_open(dbpath);
    assert_raw_text(raw, "PRAGMA journal_mode", "wal");
    ck_assert_int_eq(raw_int(raw, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master"
                 " WHERE type = 'table' AND name = '%s'", tables[i]);
        ck_assert_msg(raw_int(raw, sql) == 1, "no table %s", tables[i]);
    }
    assert_raw_text(raw, "PRAGMA integrity_check", "ok");
    sqlite3_close(raw);
}
END_TEST

START_TEST(test_reopen_keeps_rows)
{
    struct db_writer *w = writer_open();
    struct db_pilot_row p = local_pilot(1, "local");
    struct db_task_row t = new_task(1);
    struct loaded l;
    sqlite3 *db;

    db_writer_pilot(w, &p);
    wait_ok(w, db_writer_task(w, &t));
    db_writer_stop(w);

    /* open it again as the daemon does at its next start */
    db = open_ok(dbpath);
    ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM tasks"), 1);
    ck_assert_int_eq(raw_int(db, "SELECT count(*) FROM pilots"), 1);
    db_close(db);
    load_all(&l);
    ck_assert_uint_eq(l.ntasks, 1);
    ck_assert_uint_eq(l.npilots, 1);
    assert_task_eq(&l.tasks[0], &t);
    assert_pilot_eq(&l.pilots[0], &p);
    loaded_free(&l);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
    struct qt_error err = { 0 };
    sqlite3 *raw = raw_open(dbpath), *db;
    char sql[64], want[64];

    /* a database written by a later qtaud, in rollback-journal mode */
    raw_exec(raw, "CREATE TABLE future (x INTEGER)");
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
             DB_SCHEMA_VERSION + 1);
    raw_exec(raw, sql);
    sqlite3_close(raw);

    db = db_open(dbpath, &err);
    ck_assert_ptr_null(db);
    ck_assert_int_eq(err.status, 503);
    snprintf(want, sizeof(want), "schema version %d is newer",
             DB_SCHEMA_VERSION + 1);
    ck_assert_msg(strstr(err.message, want) != NULL, "message: %s", err.message);

    /* refused means untouched: no schema added, version and journal mode
     * as the later qtaud left them */
    raw = raw_open(dbpath);
    ck_assert_int_eq(raw_int(raw, "PRAGMA user_version"), DB_SCHEMA_VERSION + 1);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM sqlite_master"), 1);
    assert_raw_text(raw, "PRAGMA journal_mode", "delete");
    sqlite3_close(raw);
}
END_TEST

/* durability picks SQLite's synchronous level: NORMAL (1) or FULL (2). */
START_TEST(test_durability)
{
    struct qt_error err = { 0 };
    sqlite3 *db = open_ok(dbpath);

    ck_assert_int_eq(raw_int(db, "PRAGMA synchronous"), 1);
    ck_assert_int_eq(db_set_durability(db, "full", &err), 0);
    ck_assert_int_eq(raw_int(db, "PRAGMA synchronous"), 2);
    ck_assert_int_eq(db_set_durability(db, "normal", &err), 0);
    ck_assert_int_eq(raw_int(db, "PRAGMA synchronous"), 1);
    ck_assert_int_eq(db_set_durability(db, "always", &err), -1);
    ck_assert_str_eq(err.field, "durability");
    db_close(db);
}
END_TEST

/* A version 1 database (the first release's) is migrated in place: its
 * rows stay, pilots gain the SLURM columns, empty. */
START_TEST(test_migrate_from_v1)
{
    sqlite3 *raw = raw_open(dbpath), *db;
    struct loaded l = { 0 };

    raw_exec(raw, DB_SQL_SCHEMA_V1 "PRAGMA user_version = 1;");
    raw_exec(raw, "INSERT INTO pilots (id, name, resource, engine, state,"
                  " description, cores, create_time)"
                  " VALUES (1, 'local', 'local', 'qtau', 'RUNNING', '{}', 2, 5.0)");
    sqlite3_close(raw);

    db = open_ok(dbpath);
    ck_assert_int_eq(raw_int(db, "PRAGMA user_version"), DB_SCHEMA_VERSION);
    db_close(db);
    load_all(&l);
    ck_assert_int_eq(l.npilots, 1);
    ck_assert_str_eq(l.pilots[0].name, "local");
    ck_assert_int_eq(l.pilots[0].slurm_job_id, 0);
    ck_assert_ptr_null(l.pilots[0].token);
    loaded_free(&l);
}
END_TEST

/* A SLURM pilot's job id, token and folder survive a restart; an update
 * renames (the ended default pilot becomes "local-old"). */
START_TEST(test_pilot_slurm_fields_and_rename)
{
    struct db_writer *w = writer_open();
    struct db_pilot_row p = local_pilot(1, "local");
    struct db_pilot_row sp = local_pilot(2, "big");
    struct loaded l = { 0 };

    sp.resource = RESOURCE_SLURM;
    sp.state = PILOT_PENDING;
    sp.token = "0123abcd";
    sp.workdir = "/scratch/pilot-2";
    wait_ok(w, db_writer_pilot(w, &p));
    wait_ok(w, db_writer_pilot(w, &sp));
    sp.slurm_job_id = 4242;
    sp.state = PILOT_RUNNING;
    p.name = "local-old";
    p.state = PILOT_DONE;
    wait_ok(w, db_writer_pilot(w, &sp));
    wait_ok(w, db_writer_pilot(w, &p));
    /* the name is free again */
    wait_ok(w, db_writer_pilot(w, &(struct db_pilot_row){
                                      .id = 3, .name = "local", .resource = RESOURCE_LOCAL,
                                      .engine = ENGINE_QTAU, .state = PILOT_RUNNING,
                                      .description = "{}", .cores = 1,
                                      .create_time = 7.0 }));
    db_writer_stop(w);
    load_all(&l);
    ck_assert_int_eq(l.npilots, 3);
    assert_pilot_eq(&l.pilots[0], &p);
    assert_pilot_eq(&l.pilots[1], &sp);
    ck_assert_str_eq(l.pilots[2].name, "local");
    loaded_free(&l);
}
END_TEST

/* Paths db_open must answer with an error, not a crash or a new file. */
START_TEST(test_open_errors)
{
    static const char junk[] = "this is not an SQLite database, just text that "
                               "is long enough to hold a header; ";
    char notdb[288], missing[288], buf[sizeof(junk)];
    struct {
        const char *path, *what;
    } cases[] = {
        { notdb, "not a database" },
        { dir, "" },           /* a directory */
        { missing, "" },       /* in a directory that does not exist */
    };
    FILE *f;

    snprintf(notdb, sizeof(notdb), "%s/junk.db", dir);
    snprintf(missing, sizeof(missing), "%s/no/such/dir/qtaud.db", dir);
    f = fopen(notdb, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 64; i++)
        fputs(junk, f);
    fclose(f);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qt_error err = { 0 };

        ck_assert_ptr_null(db_open(cases[i].path, &err));
        ck_assert_int_eq(err.status, 503);
        ck_assert_str_eq(err.code, "store_unavailable");
        ck_assert_msg(err.message[0] != '\0', "case %zu: empty message", i);
        ck_assert_msg(strstr(err.message, cases[i].what) != NULL,
                      "case %zu: %s", i, err.message);
    }
    /* the junk file is left as it was */
    f = fopen(notdb, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(buf, 1, sizeof(junk) - 1, f), sizeof(junk) - 1);
    fclose(f);
    ck_assert_int_eq(memcmp(buf, junk, sizeof(junk) - 1), 0);
}
END_TEST

/* ---- the writer ------------------------------------------------------- */

START_TEST(test_writer_roundtrip)
{
    struct db_writer *w = writer_open();
    struct db_pilot_row p1 = local_pilot(1, "local");
    struct db_pilot_row p2 = {   /* optional fields absent */
        .id = 2, .name = "gpu", .resource = RESOURCE_SLURM,
        .engine = ENGINE_QTAU, .state = PILOT_PENDING,
        .description = "{\"resource\":\"slurm\",\"queue\":\"gpu\"}",
        .cores = 0, .create_time = 1796320650.125,
    };
    struct db_task_row full = {
        .id = 1, .name = "alpha", .description = "{\"shell\":\"echo 'hi'\"}",
        .pilot_id = 1, .pilot_scheduled = "local", .state = TASK_PENDING,
        .submit_time = 1796320700.5, .exit_code = -1,
    };
    struct db_task_row bare[2] = {   /* name NULL, pilot ANY */
        new_task(2), new_task(3),
    };
    struct db_task_row done, interrupted;
    struct db_metrics_row m = success_metrics(1, 1), again;
    struct loaded l;
    sqlite3 *raw;
    uint64_t seq;

    db_writer_pilot(w, &p1);
    db_writer_pilot(w, &p2);
    db_writer_task(w, &full);
    db_writer_tasks(w, bare, 2);

    /* task 1 runs and ends: an update carries no description */
    done = full;
    done.description = NULL;
    done.name = NULL;          /* an update does not rename */
    done.state = TASK_SUCCESS;
    done.attempts = 1;
    done.run_pilot_id = 1;
    done.start_time = 1796320701.25;
    done.end_time = 1796320709.75;
    done.exit_code = 0;
    done.hostname = "head";
    done.error_msg = NULL;
    db_writer_task(w, &done);

    /* task 3 was interrupted by a pilot loss and requeued */
    interrupted = bare[1];
    interrupted.description = NULL;
    interrupted.state = TASK_PENDING;
    interrupted.attempts = 1;
    interrupted.requeues = 1;
    interrupted.term_signal = 15;
    interrupted.error_msg = "pilot 2 ended: SLURM job 17 TIMEOUT";
    db_writer_task(w, &interrupted);

    /* pilot 2 ends */
    p2.state = PILOT_FAILED;
    p2.reason = "SLURM job 17 TIMEOUT";
    p2.end_time = 1796320800.0;
    db_writer_pilot(w, &p2);

    m.task_name = "alpha";
    db_writer_metrics(w, &m);
    again = m;                 /* a repeated report of the same attempt */
    again.status = TASK_FAILED;
    seq = db_writer_metrics(w, &again);
    wait_ok(w, seq);

    load_all(&l);
    ck_assert_uint_eq(l.npilots, 2);
    assert_pilot_eq(&l.pilots[0], &p1);
    assert_pilot_eq(&l.pilots[1], &p2);
    ck_assert_uint_eq(l.ntasks, 3);
    ck_assert(l.ordered);
    done.name = full.name;                   /* kept from the insert */
    done.description = full.description;
    assert_task_eq(&l.tasks[0], &done);
    assert_task_eq(&l.tasks[1], &bare[0]);
    interrupted.description = bare[1].description;
    assert_task_eq(&l.tasks[2], &interrupted);
    loaded_free(&l);

    /* and as stored, through a connection of its own while the writer runs */
    raw = raw_open(dbpath);
    assert_raw_text(raw, "SELECT state FROM tasks WHERE id = 1", "SUCCESS");
    assert_raw_text(raw, "SELECT state FROM pilots WHERE id = 2", "FAILED");
    assert_raw_text(raw, "SELECT resource FROM pilots WHERE id = 2", "slurm");
    assert_raw_text(raw, "SELECT typeof(name) || typeof(error_msg)"
                    " || typeof(hostname) || typeof(exit_code) || typeof(signal)"
                    " || typeof(pilot_id) || typeof(run_pilot_id)"
                    " || typeof(start_time) FROM tasks WHERE id = 2",
                    "nullnullnullnullnullnullnullnull");
    assert_raw_text(raw, "SELECT typeof(reason) || typeof(start_time)"
                    " FROM pilots WHERE id = 1", "nullreal");
    ck_assert_int_eq(raw_int(raw, "SELECT exit_code FROM tasks WHERE id = 1"), 0);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM task_metrics"), 1);
    assert_raw_text(raw, "SELECT status || ' ' || task_name || ' ' || hostname"
                    " || ' ' || pilot_scheduled FROM task_metrics",
                    "SUCCESS alpha head ANY");
    assert_raw_text(raw, "SELECT typeof(error_msg) || typeof(signal)"
                    " FROM task_metrics", "nullnull");
    sqlite3_close(raw);
    db_writer_stop(w);
}
END_TEST

/* Four producers, each taking 625 tasks through their whole life (insert,
 * RUNNING, SUCCESS, metrics row): 10,000 changes queued concurrently. */
#define PRODUCERS 4
#define TASKS_EACH 625
#define CHANGES_EACH (TASKS_EACH * 4)

struct producer {
    struct db_writer *w;
    int index;
    int wait_failures;
};

static void *producer_main(void *arg)
{
    struct producer *pr = arg;

    for (int i = 0; i < TASKS_EACH; i++) {
        int64_t id = (int64_t)pr->index * TASKS_EACH + i + 1;
        struct db_task_row t = new_task(id);
        struct db_metrics_row m = success_metrics(id, 1);
        uint64_t seq;

        seq = db_writer_task(pr->w, &t);
        /* some submitters wait for their 201, as the API does */
        if (i % 25 == 0 && db_writer_wait(pr->w, seq, NULL) != 0)
            pr->wait_failures++;
        t.description = NULL;
        t.state = TASK_RUNNING;
        t.attempts = 1;
        t.run_pilot_id = 1;
        t.start_time = m.start_time;
        t.hostname = "head";
        db_writer_task(pr->w, &t);
        t.state = TASK_SUCCESS;
        t.end_time = m.completion_time;
        t.exit_code = 0;
        db_writer_task(pr->w, &t);
        db_writer_metrics(pr->w, &m);
    }
    return NULL;
}

START_TEST(test_group_commit_concurrent)
{
    struct db_writer *w = writer_open();
    struct producer pr[PRODUCERS];
    pthread_t th[PRODUCERS];
    struct db_writer_stats st;
    struct qt_error err = { 0 };
    struct buf csv = BUF_INIT;
    struct csv_table tab;
    struct loaded l;
    sqlite3 *raw;
    const long long ntasks = PRODUCERS * TASKS_EACH;

    for (int i = 0; i < PRODUCERS; i++) {
        pr[i] = (struct producer){ .w = w, .index = i };
        ck_assert_int_eq(pthread_create(&th[i], NULL, producer_main, &pr[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(pr[i].wait_failures, 0);
    }
    ck_assert_msg(db_writer_sync(w, &err) == 0, "%s", err.message);
    db_writer_get_stats(w, &st);
    ck_assert_uint_eq(st.changes, PRODUCERS * CHANGES_EACH);
    ck_assert_uint_eq(st.failures, 0);
    ck_assert_uint_eq(st.queue_depth, 0);
    ck_assert_uint_gt(st.commits, 0);
    ck_assert_msg(st.commits < st.changes, "%llu commits for %llu changes",
                  (unsigned long long)st.commits, (unsigned long long)st.changes);

    load_all(&l);
    ck_assert_int_eq(l.count, ntasks);
    ck_assert(l.ordered);
    ck_assert_int_eq(l.last_id, ntasks);
    loaded_free(&l);

    /* every metrics row well formed in the export */
    raw = raw_open(dbpath);
    metrics_csv_ok(raw, 0, 0, &csv);
    ck_assert_uint_eq(csv_parse(&csv, &tab), (size_t)ntasks + 1);
    csv_table_free(&tab);
    buf_release(&csv);
    sqlite3_close(raw);

    db_writer_stop(w);
    raw = raw_open(dbpath);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks"), ntasks);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks"
                             " WHERE state = 'SUCCESS' AND exit_code = 0"
                             " AND attempts = 1 AND end_time IS NOT NULL"),
                     ntasks);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM task_metrics"), ntasks);
    ck_assert_int_eq(raw_int(raw, "SELECT count(DISTINCT task_id)"
                             " FROM task_metrics"), ntasks);
    assert_raw_text(raw, "PRAGMA integrity_check", "ok");
    sqlite3_close(raw);
}
END_TEST

/* ---- metrics CSV ------------------------------------------------------ */

START_TEST(test_metrics_csv)
{
    static const char nasty[] = "exit status 3: said \"no, never\",\n"
                                "then \"\" and a comma,";
    struct db_writer *w = writer_open();
    struct db_metrics_row rows[] = {
        {   /* ran on pilot 1 and succeeded */
            .task_id = 1, .attempt = 1, .task_name = "alpha",
            .status = TASK_SUCCESS, .submit_time = 1796320700.0,
            .start_time = 1796320702.5, .completion_time = 1796320710.75,
            .pilot_scheduled = "ANY", .exit_code = 0, .pilot_id = 1,
            .hostname = "head",
        },
        {   /* failed on pilot 2, with an error that needs quoting */
            .task_id = 2, .attempt = 2, .task_name = "b,eta",
            .status = TASK_FAILED, .error_msg = nasty,
            .submit_time = 1796320705.0, .start_time = 1796320720.25,
            .completion_time = 1796320721.0, .pilot_scheduled = "gpu",
            .exit_code = 3, .pilot_id = 2, .hostname = "node-1",
        },
        {   /* cancelled while pending: never started, never ran anywhere */
            .task_id = 3, .attempt = 1, .status = TASK_CANCELED,
            .error_msg = "canceled", .submit_time = 1796320706.0,
            .completion_time = 1796320730.5, .pilot_scheduled = "ANY",
            .exit_code = -1,
        },
        {   /* killed by a signal on pilot 2 */
            .task_id = 4, .attempt = 1, .task_name = "delta",
            .status = TASK_FAILED, .error_msg = "killed by signal 9 (SIGKILL)",
            .submit_time = 1796320707.0, .start_time = 1796320708.0,
            .completion_time = 1796320740.0, .pilot_scheduled = "gpu",
            .exit_code = -1, .term_signal = 9, .pilot_id = 2,
            .hostname = "node-2",
        },
    };
    const size_t nrows = sizeof(rows) / sizeof(rows[0]);
    struct buf csv = BUF_INIT;
    struct csv_table tab;
    char **r, stamp[40];
    sqlite3 *rd;
    struct qt_error err = { 0 };

    for (size_t i = 0; i < nrows; i++)
        db_writer_metrics(w, &rows[i]);
    ck_assert_int_eq(db_writer_sync(w, NULL), 0);
    rd = db_open_reader(dbpath, &err);
    ck_assert_msg(rd != NULL, "%s", err.message);

    metrics_csv_ok(rd, 0, 0, &csv);
    ck_assert_msg(strncmp(csv.data, metrics_header, strlen(metrics_header)) == 0
                  && strncmp(csv.data + strlen(metrics_header), "\r\n", 2) == 0,
                  "header: %.*s", (int)strlen(metrics_header) + 2, csv.data);
    ck_assert_uint_eq(csv_parse(&csv, &tab), nrows + 1);
    ck_assert_str_eq(tab.rows[0][C_COMPLETION], "completion_time");
    ck_assert_str_eq(tab.rows[0][C_HOST], "hostname");

    /* row 1, field for field */
    r = tab.rows[1];
    ck_assert_str_eq(r[C_COMPLETION], "2026-12-03T17:58:30.750000Z");
    ck_assert_str_eq(r[C_ERROR], "");
    ck_assert_str_eq(r[C_EXEC], "8.250000");        /* completion - start */
    ck_assert_str_eq(r[C_STAGING_BYTES], "0");
    ck_assert_str_eq(r[C_PILOT_SCHED], "ANY");
    ck_assert_str_eq(r[C_STAGING_SECS], "0.000000");
    ck_assert_str_eq(r[C_STATUS], "SUCCESS");
    ck_assert_str_eq(r[C_SUBMIT], "2026-12-03T17:58:20.000000Z");
    ck_assert_str_eq(r[C_TASK_ID], "1");
    ck_assert_str_eq(r[C_WAIT], "2.500000");        /* start - submit */
    ck_assert_str_eq(r[C_NAME], "alpha");
    ck_assert_str_eq(r[C_ATTEMPT], "1");
    ck_assert_str_eq(r[C_EXIT], "0");
    ck_assert_str_eq(r[C_SIGNAL], "");
    ck_assert_str_eq(r[C_PILOT_ID], "1");
    ck_assert_str_eq(r[C_HOST], "head");

    /* row 2: commas, quotes and a newline survive the round trip */
    r = tab.rows[2];
    ck_assert_str_eq(r[C_ERROR], nasty);
    ck_assert_str_eq(r[C_NAME], "b,eta");
    ck_assert_str_eq(r[C_STATUS], "FAILED");
    ck_assert_str_eq(r[C_EXEC], "0.750000");
    ck_assert_str_eq(r[C_WAIT], "15.250000");
    ck_assert_str_eq(r[C_PILOT_SCHED], "gpu");
    ck_assert_str_eq(r[C_ATTEMPT], "2");
    ck_assert_str_eq(r[C_EXIT], "3");
    ck_assert_str_eq(r[C_PILOT_ID], "2");
    ck_assert_str_eq(r[C_HOST], "node-1");

    /* row 3: never started, so it ran 0 s and waited until it ended */
    r = tab.rows[3];
    ck_assert_str_eq(r[C_STATUS], "CANCELED");
    ck_assert_str_eq(r[C_EXEC], "0.000000");
    ck_assert_str_eq(r[C_WAIT], "24.500000");
    ck_assert_str_eq(r[C_NAME], "");
    ck_assert_str_eq(r[C_EXIT], "");
    ck_assert_str_eq(r[C_SIGNAL], "");
    ck_assert_str_eq(r[C_PILOT_ID], "");
    ck_assert_str_eq(r[C_HOST], "");

    /* row 4: a signal, no exit code */
    r = tab.rows[4];
    ck_assert_str_eq(r[C_ERROR], "killed by signal 9 (SIGKILL)");
    ck_assert_str_eq(r[C_EXIT], "");
    ck_assert_str_eq(r[C_SIGNAL], "9");
    ck_assert_str_eq(r[C_EXEC], "32.000000");
    ck_assert_str_eq(r[C_WAIT], "1.000000");

    /* the times are the stored ones, to the microsecond */
    for (size_t i = 0; i < nrows; i++) {
        double t;

        r = tab.rows[i + 1];
        ck_assert_str_eq(r[C_COMPLETION], time_iso8601(rows[i].completion_time,
                                                       stamp, sizeof(stamp)));
        ck_assert_int_eq(time_parse_iso8601(r[C_SUBMIT], &t), 0);
        ck_assert_double_eq_tol(t, rows[i].submit_time, 1e-6);
    }
    csv_table_free(&tab);
    buf_release(&csv);

    /* pilot filter: rows 2 and 4 */
    metrics_csv_ok(rd, 2, 0, &csv);
    ck_assert_uint_eq(csv_parse(&csv, &tab), 3);
    ck_assert_str_eq(tab.rows[0][C_TASK_ID], "task_id");
    ck_assert_str_eq(tab.rows[1][C_TASK_ID], "2");
    ck_assert_str_eq(tab.rows[2][C_TASK_ID], "4");
    csv_table_free(&tab);
    buf_release(&csv);

    /* since filter is inclusive: rows 3 and 4 end at or after row 3 */
    metrics_csv_ok(rd, 0, rows[2].completion_time, &csv);
    ck_assert_uint_eq(csv_parse(&csv, &tab), 3);
    ck_assert_str_eq(tab.rows[1][C_TASK_ID], "3");
    ck_assert_str_eq(tab.rows[2][C_TASK_ID], "4");
    csv_table_free(&tab);
    buf_release(&csv);

    /* both, and a filter that matches nothing gives the header alone */
    metrics_csv_ok(rd, 2, rows[2].completion_time, &csv);
    ck_assert_uint_eq(csv_parse(&csv, &tab), 2);
    ck_assert_str_eq(tab.rows[1][C_TASK_ID], "4");
    csv_table_free(&tab);
    buf_release(&csv);
    metrics_csv_ok(rd, 99, 0, &csv);
    ck_assert_uint_eq(csv_parse(&csv, &tab), 1);
    csv_table_free(&tab);
    buf_release(&csv);

    db_close(rd);
    db_writer_stop(w);
}
END_TEST

/* ---- failed batches --------------------------------------------------- */

/* What a failed batch holds: changes to things already acknowledged, and a
 * new task (id 2) in the middle. */
struct failed_batch {
    uint64_t update_seq, insert_seq, last_seq;
};

static void baseline(struct db_writer *w)
{
    struct db_pilot_row p = local_pilot(1, "local");
    struct db_task_row t = new_task(1);

    db_writer_pilot(w, &p);
    wait_ok(w, db_writer_task(w, &t));
}

/* Queues the batch; no Check assertions here, see test_failed_commit. */
static void queue_batch(struct db_writer *w, struct failed_batch *fb)
{
    struct db_task_row t1 = new_task(1), t2 = new_task(2);
    struct db_pilot_row p = local_pilot(1, "local");
    struct db_metrics_row m = success_metrics(1, 1);

    t1.description = NULL;
    t1.state = TASK_RUNNING;
    t1.attempts = 1;
    t1.run_pilot_id = 1;
    t1.start_time = 1796320701.0;
    fb->update_seq = db_writer_task(w, &t1);
    db_writer_metrics(w, &m);
    t2.name = "new";
    fb->insert_seq = db_writer_task(w, &t2);
    p.state = PILOT_DONE;
    p.reason = "drained";
    p.end_time = 1796320800.0;
    fb->last_seq = db_writer_pilot(w, &p);
}

/* After the store takes writes again: nothing of the new task is stored,
 * its submitter keeps being told so, and the rest of the batch is. */
static void assert_batch_outcome(struct db_writer *w,
                                 const struct failed_batch *fb)
{
    struct db_task_row t3 = new_task(3);
    struct db_writer_stats st;
    struct qt_error err = { 0 };
    sqlite3 *raw;

    /* a later change commits, and with it the retried ones before it */
    wait_ok(w, db_writer_task(w, &t3));
    wait_ok(w, fb->update_seq);
    wait_ok(w, fb->last_seq);
    /* a submitter that comes to wait only now must still hear of the
     * failure: the task was never committed */
    ck_assert_int_eq(db_writer_wait(w, fb->insert_seq, &err), -1);
    ck_assert_int_eq(err.status, 503);
    db_writer_get_stats(w, &st);
    ck_assert_uint_ge(st.failures, 1);

    raw = raw_open(dbpath);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks WHERE id = 2"), 0);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks"
                             " WHERE name = 'new'"), 0);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks"), 2);
    assert_raw_text(raw, "SELECT state FROM tasks WHERE id = 1", "RUNNING");
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM task_metrics"
                             " WHERE task_id = 1"), 1);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM task_metrics"
                             " WHERE task_id = 2"), 0);
    assert_raw_text(raw, "SELECT state || ' ' || reason FROM pilots WHERE id = 1",
                    "DONE drained");
    assert_raw_text(raw, "PRAGMA integrity_check", "ok");
    sqlite3_close(raw);
}

/* A change that breaks a constraint can never commit: it is dropped, its
 * waiter told why, and nothing queued with it or after it is held back
 * (a duplicate pilot name once blocked every later write for good). */
START_TEST(test_constraint_change_dropped)
{
    struct db_writer *w = writer_open();
    struct db_pilot_row a = local_pilot(2, "pilot-3"), b = local_pilot(3, "pilot-3");
    struct db_task_row t = new_task(1), u;
    struct qt_error err = { 0 };
    struct loaded l = { 0 };
    uint64_t bad, after;

    wait_ok(w, db_writer_pilot(w, &a));
    b.is_new = true;
    bad = db_writer_pilot(w, &b);
    after = db_writer_task(w, &t);
    ck_assert_int_eq(db_writer_wait(w, bad, &err), -1);
    ck_assert_int_eq(err.status, 503);
    ck_assert_msg(strstr(err.message, "UNIQUE") != NULL, "message: %s", err.message);
    wait_ok(w, after);
    /* an old change that breaks one, too: an update renaming onto a taken
     * name, queued between good ones */
    b.is_new = false;
    b.id = 2;
    b.name = "local";
    {
        struct db_pilot_row local = local_pilot(1, "local");

        wait_ok(w, db_writer_pilot(w, &local));
    }
    bad = db_writer_pilot(w, &b);
    u = t;
    u.description = NULL;
    u.state = TASK_RUNNING;
    after = db_writer_task(w, &u);
    ck_assert_int_eq(db_writer_wait(w, bad, &err), -1);
    wait_ok(w, after);
    db_writer_stop(w);
    load_all(&l);
    ck_assert_int_eq(l.npilots, 2);
    ck_assert_str_eq(l.pilots[1].name, "pilot-3");
    ck_assert_int_eq(l.ntasks, 1);
    ck_assert_int_eq(l.tasks[0].state, TASK_RUNNING);
    loaded_free(&l);
}
END_TEST

/* Another process (an sqlite3 shell, say) holds the write lock. */
START_TEST(test_failed_batch_locked)
{
    sqlite3 *db = open_ok(dbpath), *other;
    struct db_writer *w;
    struct failed_batch fb;
    struct qt_error err = { 0 };

    /* fail after 50 ms rather than the production 5 s */
    sqlite3_busy_timeout(db, 50);
    w = db_writer_start(db);
    ck_assert_ptr_nonnull(w);
    baseline(w);

    other = raw_open(dbpath);
    raw_exec(other, "BEGIN IMMEDIATE");
    queue_batch(w, &fb);
    ck_assert_int_eq(db_writer_wait(w, fb.insert_seq, &err), -1);
    ck_assert_int_eq(err.status, 503);
    ck_assert_str_eq(err.code, "store_unavailable");
    ck_assert_msg(strstr(err.message, "locked") != NULL, "%s", err.message);
    raw_exec(other, "ROLLBACK");
    sqlite3_close(other);

    assert_batch_outcome(w, &fb);
    db_writer_stop(w);
}
END_TEST

/* The WAL cannot grow (a full disk, here a file size limit), so COMMIT
 * fails after every statement of the batch has been applied.  Nothing
 * writes to a file, Check's own reports included, while the limit holds. */
START_TEST(test_failed_commit)
{
    struct db_writer *w = writer_open();
    struct failed_batch fb;
    struct qt_error err = { 0 };
    struct rlimit old, lim;
    struct stat sb;
    char wal[288];
    void (*old_xfsz)(int);
    int rc;

    baseline(w);
    snprintf(wal, sizeof(wal), "%s-wal", dbpath);
    ck_assert_int_eq(stat(wal, &sb), 0);
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    old_xfsz = signal(SIGXFSZ, SIG_IGN);

    lim = old;
    lim.rlim_cur = (rlim_t)sb.st_size;
    if (setrlimit(RLIMIT_FSIZE, &lim) < 0)
        ck_abort_msg("setrlimit: %s", strerror(errno));
    queue_batch(w, &fb);
    rc = db_writer_wait(w, fb.insert_seq, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_xfsz);

    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(err.status, 503);
    ck_assert_str_eq(err.code, "store_unavailable");
    /* SQLite's own reason ("disk I/O error"), not what ROLLBACK said */
    ck_assert_msg(strstr(err.message, "disk") != NULL, "%s", err.message);
    assert_batch_outcome(w, &fb);
    db_writer_stop(w);
}
END_TEST

/* ---- stop ------------------------------------------------------------- */

START_TEST(test_stop_drains)
{
    struct db_writer *w = writer_open();
    struct stat sb;
    char wal[288];
    sqlite3 *raw;

    for (int64_t id = 1; id <= 500; id++) {
        struct db_task_row t = new_task(id);
        struct db_metrics_row m = success_metrics(id, 0);

        m.status = TASK_CANCELED;
        db_writer_task(w, &t);
        db_writer_metrics(w, &m);
    }
    db_writer_stop(w);
    db_writer_stop(NULL);

    /* the WAL was checkpointed into the database and is gone or empty */
    snprintf(wal, sizeof(wal), "%s-wal", dbpath);
    ck_assert(stat(wal, &sb) < 0 ? errno == ENOENT : sb.st_size == 0);
    raw = raw_open(dbpath);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM tasks"), 500);
    ck_assert_int_eq(raw_int(raw, "SELECT count(*) FROM task_metrics"
                             " WHERE status = 'CANCELED'"), 500);
    ck_assert_int_eq(raw_int(raw, "SELECT max(id) FROM tasks"), 500);
    sqlite3_close(raw);
}
END_TEST

static Suite *db_suite(void)
{
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("store");

    tcase_add_checked_fixture(tc, setup, NULL);
    /* generous for the sanitizer builds; the plain run takes a second or two */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_open_creates_schema);
    tcase_add_test(tc, test_reopen_keeps_rows);
    tcase_add_test(tc, test_migrate_from_v1);
    tcase_add_test(tc, test_durability);
    tcase_add_test(tc, test_pilot_slurm_fields_and_rename);
    tcase_add_test(tc, test_constraint_change_dropped);
    tcase_add_test(tc, test_newer_schema_refused);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_writer_roundtrip);
    tcase_add_test(tc, test_group_commit_concurrent);
    tcase_add_test(tc, test_metrics_csv);
    tcase_add_test(tc, test_failed_batch_locked);
    tcase_add_test(tc, test_failed_commit);
    tcase_add_test(tc, test_stop_drains);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    SRunner *sr;
    int failed;

    /* the expected store failures still log at error level */
    log_threshold = LOG_LVL_ERROR;
    snprintf(root, sizeof(root), "%s/qtaud-test-db-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 99;
    }
    sr = srunner_create(db_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed == 0 ? 0 : 1;
}
