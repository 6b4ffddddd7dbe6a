/*
 * schema.h - SQL text shared by db.c (migration, reads) and writer.c.
 * Version 1 is the first schema; each later version is one migration step
 * (DB_SQL_MIGRATE_TO_<n>) applied in order at start-up.
 */
#ifndef QT_DB_SCHEMA_H
#define QT_DB_SCHEMA_H

#define DB_SQL_SCHEMA_V1 \
    "CREATE TABLE pilots (" \
    " id INTEGER PRIMARY KEY," \
    " name TEXT NOT NULL UNIQUE," \
    " resource TEXT NOT NULL," \
    " engine TEXT NOT NULL," \
    " state TEXT NOT NULL," \
    " description TEXT NOT NULL," \
    " cores INTEGER NOT NULL," \
    " reason TEXT," \
    " create_time REAL NOT NULL," \
    " start_time REAL," \
    " end_time REAL);" \
    "CREATE TABLE tasks (" \
    " id INTEGER PRIMARY KEY," \
    " name TEXT," \
    " description TEXT NOT NULL," \
    " pilot_id INTEGER," \
    " pilot_scheduled TEXT NOT NULL," \
    " state TEXT NOT NULL," \
    " attempts INTEGER NOT NULL," \
    " requeues INTEGER NOT NULL," \
    " run_pilot_id INTEGER," \
    " submit_time REAL NOT NULL," \
    " start_time REAL," \
    " end_time REAL," \
    " exit_code INTEGER," \
    " signal INTEGER," \
    " error_msg TEXT," \
    " hostname TEXT);" \
    "CREATE TABLE task_metrics (" \
    " seq INTEGER PRIMARY KEY," \
    " task_id INTEGER NOT NULL," \
    " attempt INTEGER NOT NULL," \
    " task_name TEXT," \
    " status TEXT NOT NULL," \
    " error_msg TEXT," \
    " submit_time REAL," \
    " start_time REAL," \
    " completion_time REAL," \
    " pilot_scheduled TEXT NOT NULL," \
    " exit_code INTEGER," \
    " signal INTEGER," \
    " pilot_id INTEGER," \
    " hostname TEXT," \
    " UNIQUE (task_id, attempt));" \
    "CREATE INDEX task_metrics_pilot ON task_metrics (pilot_id);"

/* Insert a new task or update its changing columns; one statement for both
 * so the writer need not know which it is. */
/* Version 3: the process a local attempt runs as (pid and its start time),
 * so that after a crash qtaud can stop it - and only it. */
#define DB_SQL_MIGRATE_TO_3 \
    "ALTER TABLE tasks ADD COLUMN run_pid INTEGER;" \
    "ALTER TABLE tasks ADD COLUMN run_pid_start INTEGER;"

#define DB_SQL_TASK_UPSERT \
    "INSERT INTO tasks (id, name, description, pilot_id, pilot_scheduled," \
    " state, attempts, run_pilot_id, submit_time, start_time, end_time," \
    " exit_code, signal, error_msg, hostname, requeues, run_pid, run_pid_start)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15," \
    " ?16, ?17, ?18)" \
    " ON CONFLICT (id) DO UPDATE SET state = ?6, attempts = ?7," \
    " run_pilot_id = ?8, start_time = ?10, end_time = ?11, exit_code = ?12," \
    " signal = ?13, error_msg = ?14, hostname = ?15, requeues = ?16," \
    " run_pid = ?17, run_pid_start = ?18"

/* An attempt's row is written once; a repeated report is ignored. */
#define DB_SQL_METRICS_INSERT \
    "INSERT OR IGNORE INTO task_metrics (task_id, attempt, task_name, status," \
    " error_msg, submit_time, start_time, completion_time, pilot_scheduled," \
    " exit_code, signal, pilot_id, hostname)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"

/* Version 2: what a SLURM pilot needs to be followed again after a
 * restart - its job, its agents' token and its folder. */
#define DB_SQL_MIGRATE_TO_2 \
    "ALTER TABLE pilots ADD COLUMN slurm_job_id INTEGER;" \
    "ALTER TABLE pilots ADD COLUMN token TEXT;" \
    "ALTER TABLE pilots ADD COLUMN workdir TEXT;"

/* The name is updated too: an ended pilot gives its name up (the default
 * pilot "local" of an earlier run becomes "local-old"). */
#define DB_SQL_PILOT_UPSERT \
    "INSERT INTO pilots (id, name, resource, engine, state, description," \
    " cores, reason, create_time, start_time, end_time, slurm_job_id, token," \
    " workdir)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)" \
    " ON CONFLICT (id) DO UPDATE SET name = ?2, state = ?5, cores = ?7," \
    " reason = ?8, start_time = ?10, end_time = ?11, slurm_job_id = ?12"

#define DB_SQL_PILOT_LOAD \
    "SELECT id, name, resource, engine, state, description, cores, reason," \
    " create_time, start_time, end_time, slurm_job_id, token, workdir" \
    " FROM pilots ORDER BY id"

#define DB_SQL_TASK_LOAD \
    "SELECT id, name, description, pilot_id, pilot_scheduled, state," \
    " attempts, run_pilot_id, submit_time, start_time, end_time, exit_code," \
    " signal, error_msg, hostname, requeues, run_pid, run_pid_start" \
    " FROM tasks ORDER BY id"

#define DB_SQL_METRICS_SELECT \
    "SELECT completion_time, error_msg, start_time, pilot_scheduled, status," \
    " submit_time, task_id, task_name, attempt, exit_code, signal, pilot_id," \
    " hostname FROM task_metrics" \
    " WHERE (?1 = 0 OR pilot_id = ?1) AND (?2 = 0 OR completion_time >= ?2)" \
    " ORDER BY seq"

#endif
