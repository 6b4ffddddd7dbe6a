/*
 * db.c - open and migrate the store, load it at start-up, export metrics.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/csv.h"
#include "common/enums.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "db/db.h"
#include "db/schema.h"

/* Busy timeout for the rare case another process holds the file (a reader
 * such as the sqlite3 shell); the daemon itself has one writer. */
#define DB_BUSY_TIMEOUT_MS 5000

static int db_fail(sqlite3 *db, struct qt_error *err, const char *what)
{
    return qt_error_set(err, 503, "store_unavailable", NULL, "%s: %s", what,
                        db ? sqlite3_errmsg(db) : "out of memory");
}

static int db_exec(sqlite3 *db, const char *sql, struct qt_error *err)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, err, "sqlite");
    return 0;
}

static int db_user_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* Brings the schema from its stored version to DB_SCHEMA_VERSION, in one
 * transaction per step. */
static int db_migrate(sqlite3 *db, struct qt_error *err)
{
    /* step k brings the schema from version k to k + 1 */
    static const char *const steps[] = {
        DB_SQL_SCHEMA_V1, DB_SQL_MIGRATE_TO_2, DB_SQL_MIGRATE_TO_3,
    };
    int version;

    _Static_assert(sizeof(steps) / sizeof(steps[0]) == DB_SCHEMA_VERSION,
                   "one migration step per schema version");
    if (db_user_version(db, &version) < 0)
        return db_fail(db, err, "reading schema version");
    if (version > DB_SCHEMA_VERSION)
        return qt_error_set(err, 503, "store_unavailable", NULL,
                            "database schema version %d is newer than this "
                            "qtaud understands (%d)", version, DB_SCHEMA_VERSION);
    for (; version < DB_SCHEMA_VERSION; version++) {
        char bump[48];

        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d;", version + 1);
        if (db_exec(db, "BEGIN IMMEDIATE", err) < 0)
            return -1;
        if (db_exec(db, steps[version], err) < 0 || db_exec(db, bump, err) < 0) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        if (db_exec(db, "COMMIT", err) < 0)
            return -1;
        log_info("database schema now at version %d", version + 1);
    }
    return 0;
}

int db_set_durability(sqlite3 *db, const char *mode, struct qt_error *err)
{
    if (strcmp(mode, "normal") == 0)
        return db_exec(db, "PRAGMA synchronous = NORMAL", err);
    if (strcmp(mode, "full") == 0)
        return db_exec(db, "PRAGMA synchronous = FULL", err);
    return qt_error_arg(err, "durability", "durability must be normal or full, got '%.32s'",
                        mode);
}

sqlite3 *db_open(const char *path, struct qt_error *err)
{
    sqlite3 *db = NULL;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                       | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        db_fail(db, err, path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS);
    /* Migrate first: a database from a newer qtaud is refused before
     * anything (its journal mode included) is changed in the file.
     * WAL: readers never block the writer.  synchronous=NORMAL: a commit
     * survives a crash of qtaud; only power loss can lose the last ones. */
    if (db_migrate(db, err) < 0
        || db_exec(db, "PRAGMA journal_mode = WAL", err) < 0
        || db_exec(db, "PRAGMA synchronous = NORMAL", err) < 0
        || db_exec(db, "PRAGMA foreign_keys = OFF", err) < 0) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

sqlite3 *db_open_reader(const char *path, struct qt_error *err)
{
    sqlite3 *db = NULL;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        db_fail(db, err, path);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS);
    return db;
}

void db_close(sqlite3 *db)
{
    int saved = errno;

    sqlite3_close(db);
    errno = saved;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static int col_state(sqlite3_stmt *st, int i, const struct qt_enum *e)
{
    int v = 0;
    const char *s = col_text(st, i);

    if (s)
        qt_enum_parse(e, s, &v, NULL, NULL);
    return v;
}

int db_load_pilots(sqlite3 *db, void (*fn)(void *arg, const struct db_pilot_row *),
                   void *arg, struct qt_error *err)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db, DB_SQL_PILOT_LOAD, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, err, "loading pilots");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_pilot_row r = {
            .id = sqlite3_column_int64(st, 0),
            .name = col_text(st, 1),
            .resource = col_state(st, 2, &resource_enum),
            .engine = col_state(st, 3, &engine_enum),
            .state = col_state(st, 4, &pilot_state_enum),
            .description = col_text(st, 5),
            .cores = sqlite3_column_int(st, 6),
            .reason = col_text(st, 7),
            .create_time = sqlite3_column_double(st, 8),
            .start_time = sqlite3_column_double(st, 9),
            .end_time = sqlite3_column_double(st, 10),
            .slurm_job_id = sqlite3_column_int64(st, 11),
            .token = col_text(st, 12),
            .workdir = col_text(st, 13),
        };
        fn(arg, &r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(db, err, "loading pilots");
    return 0;
}

int db_load_tasks(sqlite3 *db, void (*fn)(void *arg, const struct db_task_row *),
                  void *arg, struct qt_error *err)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db, DB_SQL_TASK_LOAD, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, err, "loading tasks");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_task_row r = {
            .id = sqlite3_column_int64(st, 0),
            .name = col_text(st, 1),
            .description = col_text(st, 2),
            .pilot_id = sqlite3_column_int64(st, 3),
            .pilot_scheduled = col_text(st, 4),
            .state = col_state(st, 5, &task_state_enum),
            .attempts = sqlite3_column_int(st, 6),
            .run_pilot_id = sqlite3_column_int64(st, 7),
            .submit_time = sqlite3_column_double(st, 8),
            .start_time = sqlite3_column_double(st, 9),
            .end_time = sqlite3_column_double(st, 10),
            .exit_code = sqlite3_column_type(st, 11) == SQLITE_NULL
                             ? -1 : sqlite3_column_int(st, 11),
            .term_signal = sqlite3_column_int(st, 12),
            .error_msg = col_text(st, 13),
            .hostname = col_text(st, 14),
            .requeues = sqlite3_column_int(st, 15),
            .run_pid = sqlite3_column_int64(st, 16),
            .run_pid_start = sqlite3_column_int64(st, 17),
        };
        fn(arg, &r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(db, err, "loading tasks");
    return 0;
}

/* The first ten columns are the Python system's metrics.csv header, in its
 * (sorted) order; qtaud's own follow.  Fixed by DESIGN.md. */
static const char *const metrics_columns[] = {
    "completion_time", "error_msg", "execution_secs",
    "input_staging_data_size_bytes", "pilot_scheduled", "staging_time_secs",
    "status", "submit_time", "task_id", "wait_time_secs",
    "task_name", "attempt", "exit_code", "signal", "pilot_id", "hostname",
};

static void csv_double(struct buf *out, double v)
{
    char num[32];

    snprintf(num, sizeof(num), "%.6f", v);
    csv_field(out, num, false);
}

static void csv_int_or_empty(struct buf *out, sqlite3_stmt *st, int col)
{
    char num[24];

    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        csv_field(out, NULL, false);
        return;
    }
    snprintf(num, sizeof(num), "%lld", (long long)sqlite3_column_int64(st, col));
    csv_field(out, num, false);
}

int db_metrics_csv(sqlite3 *db, int64_t pilot_id, double since,
                   struct buf *out, struct qt_error *err)
{
    sqlite3_stmt *st;
    char stamp[40];
    int rc;

    for (size_t i = 0; i < sizeof(metrics_columns) / sizeof(metrics_columns[0]); i++)
        csv_field(out, metrics_columns[i], i == 0);
    csv_end_row(out);
    if (sqlite3_prepare_v2(db, DB_SQL_METRICS_SELECT, -1, &st, NULL) != SQLITE_OK)
        return db_fail(db, err, "reading metrics");
    sqlite3_bind_int64(st, 1, pilot_id);
    sqlite3_bind_double(st, 2, since);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        double completion = sqlite3_column_double(st, 0);
        double start = sqlite3_column_double(st, 2);
        double submit = sqlite3_column_double(st, 5);
        /* an attempt that never started (cancelled while pending, could not
         * spawn) ran for 0 s and waited until it ended */
        double started = start > 0 ? start : completion;

        csv_field(out, time_iso8601(completion, stamp, sizeof(stamp)), true);
        csv_field(out, col_text(st, 1), false);
        csv_double(out, completion - started);
        csv_field(out, "0", false);                 /* no input staging */
        csv_field(out, col_text(st, 3), false);
        csv_double(out, 0);                         /* staging_time_secs */
        csv_field(out, col_text(st, 4), false);
        csv_field(out, time_iso8601(submit, stamp, sizeof(stamp)), false);
        csv_int_or_empty(out, st, 6);
        csv_double(out, started - submit >= 0 ? started - submit : 0);
        csv_field(out, col_text(st, 7), false);
        csv_int_or_empty(out, st, 8);
        csv_int_or_empty(out, st, 9);
        csv_int_or_empty(out, st, 10);
        csv_int_or_empty(out, st, 11);
        csv_field(out, col_text(st, 12), false);
        csv_end_row(out);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(db, err, "reading metrics");
    return 0;
}
