/*
 * test_units.c - Check unit tests for qtaud's pure modules, the ones that
 * need no daemon, database or child process:
 *
 *   common/enums     every name table round-trips, is unique, and rejects
 *                    unknown names with a 400 that lists the accepted ones
 *   common/error     the error struct and its helpers
 *   common/csv       RFC 4180 writing and reading, round trip, malformed input
 *   common/timeutil  ISO 8601 with microseconds, both ways
 *   common/buf       growth, printf, detach
 *   daemon/spec      task and pilot descriptions: valid forms, defaults,
 *                    every rejection naming its field, normalized JSON
 *   daemon/conf      defaults < config file < QTAUD_* environment < flags
 *
 * Tables drive the tests where inputs vary; a failure message names the row.
 * JSON in the tables is written with ' for " to stay readable.
 */
#include "config.h"

#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/csv.h"
#include "common/enums.h"
#include "common/error.h"
#include "common/exec.h"
#include "common/jsoncheck.h"
#include "common/timeutil.h"
#include "daemon/conf.h"
#include "daemon/spec.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

extern char **environ;

/* ---- helpers ------------------------------------------------------------ */

/* Parses test JSON, ' standing for ".  NUL bytes ("\u0000") and bare
 * scalars are allowed so that the code under test sees them. */
static json_t *jload(const char *text)
{
    char *s = strdup(text);
    json_error_t jerr;
    json_t *j;

    ck_assert_ptr_nonnull(s);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    j = json_loads(s, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, jerr.text);
    free(s);
    return j;
}

/* A string of n copies of c; free() it. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    ck_assert_ptr_nonnull(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static bool strv_has(char **v, const char *s)
{
    for (char **p = v; p && *p; p++)
        if (strcmp(*p, s) == 0)
            return true;
    return false;
}

static size_t strv_len(char **v)
{
    size_t n = 0;

    while (v && v[n])
        n++;
    return n;
}

/* Checks err is a 400 invalid_argument naming field, its message holding
 * msg (when not NULL).  what names the case in failure messages. */
static void assert_arg_error(const struct qt_error *err, const char *field,
                             const char *msg, const char *what)
{
    ck_assert_msg(err->status == 400, "%s: status %d, want 400", what,
                  err->status);
    ck_assert_msg(strcmp(err->code, "invalid_argument") == 0,
                  "%s: code '%s'", what, err->code);
    ck_assert_msg(strcmp(err->field, field) == 0,
                  "%s: field '%s', want '%s' (message: %s)", what, err->field,
                  field, err->message);
    if (msg)
        ck_assert_msg(strstr(err->message, msg) != NULL,
                      "%s: message '%s' lacks '%s'", what, err->message, msg);
    ck_assert_msg(err->message[0] != '\0', "%s: empty message", what);
}

/* ---- enums -------------------------------------------------------------- */

static const struct qt_enum *const all_enums[] = {
    &task_state_enum, &pilot_state_enum, &resource_enum, &engine_enum,
    &exec_outcome_enum,
};

/* The names DESIGN.md and the API promise, against the C constants. */
static const struct {
    const struct qt_enum *e;
    int value;
    const char *name;
} enum_expected[] = {
    { &task_state_enum, TASK_PENDING, "PENDING" },
    { &task_state_enum, TASK_RUNNING, "RUNNING" },
    { &task_state_enum, TASK_SUCCESS, "SUCCESS" },
    { &task_state_enum, TASK_FAILED, "FAILED" },
    { &task_state_enum, TASK_CANCELED, "CANCELED" },
    { &pilot_state_enum, PILOT_PENDING, "PENDING" },
    { &pilot_state_enum, PILOT_RUNNING, "RUNNING" },
    { &pilot_state_enum, PILOT_DONE, "DONE" },
    { &pilot_state_enum, PILOT_FAILED, "FAILED" },
    { &pilot_state_enum, PILOT_CANCELED, "CANCELED" },
    { &resource_enum, RESOURCE_LOCAL, "local" },
    { &resource_enum, RESOURCE_SLURM, "slurm" },
    { &engine_enum, ENGINE_QTAU, "qtau" },
    { &exec_outcome_enum, EXEC_EXITED, "EXITED" },
    { &exec_outcome_enum, EXEC_SIGNALED, "SIGNALED" },
    { &exec_outcome_enum, EXEC_TIMED_OUT, "TIMED_OUT" },
    { &exec_outcome_enum, EXEC_CANCELED, "CANCELED" },
    { &exec_outcome_enum, EXEC_SPAWN_FAILED, "SPAWN_FAILED" },
};

START_TEST(test_enum_round_trip)
{
    const struct qt_enum *e = all_enums[_i];

    ck_assert_int_gt(e->count, 0);
    for (int i = 0; i < e->count; i++) {
        const char *name = e->entries[i].name;
        struct qt_error err = { 0 };
        int value = -1;

        ck_assert_int_eq(qt_enum_parse(e, name, &value, "f", &err), 0);
        ck_assert_int_eq(value, e->entries[i].value);
        ck_assert_str_eq(qt_enum_name(e, value), name);
        ck_assert_int_eq(err.status, 0);
    }
    ck_assert_str_eq(qt_enum_name(e, 12345), "?");
    ck_assert_str_eq(qt_enum_name(e, -1), "?");
}
END_TEST

START_TEST(test_enum_unique)
{
    const struct qt_enum *e = all_enums[_i];

    for (int i = 0; i < e->count; i++) {
        ck_assert_msg(e->entries[i].name && e->entries[i].name[0],
                      "%s entry %d has no name", e->what, i);
        for (int j = i + 1; j < e->count; j++) {
            ck_assert_msg(strcmp(e->entries[i].name, e->entries[j].name) != 0,
                          "%s: name '%s' twice", e->what, e->entries[i].name);
            ck_assert_msg(e->entries[i].value != e->entries[j].value,
                          "%s: value %d twice", e->what, e->entries[i].value);
        }
    }
}
END_TEST

START_TEST(test_enum_expected_names)
{
    /* each promised name maps to its constant ... */
    for (size_t i = 0; i < NELEM(enum_expected); i++)
        ck_assert_str_eq(qt_enum_name(enum_expected[i].e, enum_expected[i].value),
                         enum_expected[i].name);
    /* ... and each table holds nothing else */
    for (size_t k = 0; k < NELEM(all_enums); k++) {
        int n = 0;

        for (size_t i = 0; i < NELEM(enum_expected); i++)
            n += enum_expected[i].e == all_enums[k];
        ck_assert_int_eq(all_enums[k]->count, n);
    }
    ck_assert_str_eq(task_state_name(TASK_CANCELED), "CANCELED");
    ck_assert_str_eq(pilot_state_name(PILOT_DONE), "DONE");
}
END_TEST

START_TEST(test_enum_terminal)
{
    ck_assert(!task_state_terminal(TASK_PENDING));
    ck_assert(!task_state_terminal(TASK_RUNNING));
    ck_assert(task_state_terminal(TASK_SUCCESS));
    ck_assert(task_state_terminal(TASK_FAILED));
    ck_assert(task_state_terminal(TASK_CANCELED));
    ck_assert(!pilot_state_terminal(PILOT_PENDING));
    ck_assert(!pilot_state_terminal(PILOT_RUNNING));
    ck_assert(pilot_state_terminal(PILOT_DONE));
    ck_assert(pilot_state_terminal(PILOT_FAILED));
    ck_assert(pilot_state_terminal(PILOT_CANCELED));
}
END_TEST

/* Checks one rejected name: 400, the field, every accepted name listed,
 * the value left alone. */
static void check_enum_rejects(const struct qt_enum *e, const char *name)
{
    struct qt_error err = { 0 };
    int value = -777;
    char what[128];

    snprintf(what, sizeof(what), "%s '%s'", e->what, name);
    ck_assert_msg(qt_enum_parse(e, name, &value, "the_field", &err) == -1,
                  "%s accepted", what);
    ck_assert_int_eq(value, -777);
    assert_arg_error(&err, "the_field", e->what, what);
    for (int i = 0; i < e->count; i++)
        ck_assert_msg(strstr(err.message, e->entries[i].name) != NULL,
                      "%s: message '%s' does not list '%s'", what, err.message,
                      e->entries[i].name);
}

START_TEST(test_enum_unknown)
{
    static const char *const fixed[] = { "", "nope", " ", "ANY", "0" };
    const struct qt_enum *e = all_enums[_i];

    for (size_t i = 0; i < NELEM(fixed); i++)
        check_enum_rejects(e, fixed[i]);
    /* case variants of every accepted name: all swapped, first swapped,
     * and with a trailing space */
    for (int i = 0; i < e->count; i++) {
        char swapped[64], first[64], spaced[72];

        snprintf(swapped, sizeof(swapped), "%s", e->entries[i].name);
        for (char *p = swapped; *p; p++)
            *p = (char)(isupper((unsigned char)*p) ? tolower((unsigned char)*p)
                                                    : toupper((unsigned char)*p));
        snprintf(first, sizeof(first), "%s", e->entries[i].name);
        first[0] = swapped[0];
        snprintf(spaced, sizeof(spaced), "%s ", e->entries[i].name);
        check_enum_rejects(e, swapped);
        check_enum_rejects(e, first);
        check_enum_rejects(e, spaced);
    }
}
END_TEST

/* ---- error -------------------------------------------------------------- */

/* Messages echo users' bytes; what is not UTF-8 becomes '?', what is
 * stays.  (A %FF in a URL once made the JSON answer unencodable and
 * qtaud abort.) */
START_TEST(test_error_utf8)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "plain", "plain" },
        { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
        { "\xff", "?" },
        { "a\xc3(b", "a?(b" },
        { "cut \xe2\x82", "cut ??" },              /* a sequence cut short */
        { "\xc0\xaf", "??" },                      /* overlong '/' */
        { "\xed\xa0\x80", "???" },                /* a surrogate */
        { "\xf4\x90\x80\x80", "????" },          /* above U+10FFFF */
        { "\x80x", "?x" },                          /* a stray continuation */
    };
    struct qt_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];

        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        qt_utf8_sanitize(buf);
        ck_assert_msg(strcmp(buf, cases[i].out) == 0, "case %zu: got '%s'", i, buf);
    }
    qt_error_arg(&err, "f\xff", "no pilot '%s'", "\xc3(");
    ck_assert_str_eq(err.message, "no pilot '?('");
    ck_assert_str_eq(err.field, "f?");
}
END_TEST

START_TEST(test_error_helpers)
{
    struct qt_error err = { 0 };
    char *big = repeat('m', 1000);

    ck_assert_int_eq(qt_error_set(&err, 409, "conflict", "pilot",
                                  "pilot %d has ended", 4), -1);
    ck_assert_int_eq(err.status, 409);
    ck_assert_str_eq(err.code, "conflict");
    ck_assert_str_eq(err.field, "pilot");
    ck_assert_str_eq(err.message, "pilot 4 has ended");

    ck_assert_int_eq(qt_error_arg(&err, NULL, "bad %s", "thing"), -1);
    ck_assert_int_eq(err.status, 400);
    ck_assert_str_eq(err.code, "invalid_argument");
    ck_assert_str_eq(err.field, "");
    ck_assert_str_eq(err.message, "bad thing");

    /* NULL err is allowed and still fails */
    ck_assert_int_eq(qt_error_set(NULL, 500, "x", "y", "z"), -1);
    ck_assert_int_eq(qt_error_arg(NULL, "y", "z"), -1);

    /* too long for the struct: truncated, still terminated */
    qt_error_arg(&err, big, "%s", big);
    ck_assert_uint_eq(strlen(err.field), sizeof(err.field) - 1);
    ck_assert_uint_eq(strlen(err.message), sizeof(err.message) - 1);
    free(big);
}
END_TEST

/* ---- csv ---------------------------------------------------------------- */

static const struct csv_case {
    size_t n;
    const char *f[6];
} csv_rows[] = {
    { 3, { "a", "b", "c" } },
    { 5, { "has,comma", "has \"quotes\"", "cr\rinside", "lf\ninside",
           "crlf\r\nboth" } },
    { 3, { "", NULL, "" } },
    { 1, { NULL } },
    { 1, { "" } },
    { 3, { "\"", ",", "\"\"" } },
    { 2, { " spaces kept ", "tab\there" } },
    { 2, { "exit status 3", "killed by signal 9 (SIGKILL)" } },
    { 1, { "\"starts, and ends\"" } },
    { 6, { "utf-8 \xc3\xbc", "x", NULL, "y", "", "\r\n" } },
};

START_TEST(test_csv_round_trip)
{
    struct buf b = BUF_INIT;
    size_t pos = 0;

    for (size_t r = 0; r < NELEM(csv_rows); r++) {
        size_t before = b.len;

        for (size_t i = 0; i < csv_rows[r].n; i++)
            csv_field(&b, csv_rows[r].f[i], i == 0);
        csv_end_row(&b);
        ck_assert_msg(b.len >= before + 2 && memcmp(b.data + b.len - 2, "\r\n", 2) == 0,
                      "row %zu does not end in CRLF", r);
    }
    for (size_t r = 0; r < NELEM(csv_rows); r++) {
        char **fields;
        size_t n;

        ck_assert_msg(csv_read_record(b.data, b.len, &pos, &fields, &n) == 1,
                      "row %zu not read", r);
        ck_assert_msg(n == csv_rows[r].n, "row %zu: %zu fields, want %zu", r, n,
                      csv_rows[r].n);
        for (size_t i = 0; i < n; i++) {
            const char *want = csv_rows[r].f[i] ? csv_rows[r].f[i] : "";

            ck_assert_msg(strcmp(fields[i], want) == 0,
                          "row %zu field %zu: '%s', want '%s'", r, i, fields[i], want);
        }
        csv_free_record(fields, n);
    }
    {
        char **fields = (char **)1;
        size_t n = 99;

        ck_assert_int_eq(csv_read_record(b.data, b.len, &pos, &fields, &n), 0);
        ck_assert_ptr_null(fields);
        ck_assert_uint_eq(n, 0);
    }
    buf_release(&b);
}
END_TEST

START_TEST(test_csv_write_form)
{
    struct buf b = BUF_INIT;

    csv_field(&b, "a", true);
    csv_field(&b, "b,c", false);
    csv_field(&b, "d\"e", false);
    csv_field(&b, NULL, false);
    csv_field(&b, "f\ng", false);
    csv_end_row(&b);
    ck_assert_str_eq(b.data, "a,\"b,c\",\"d\"\"e\",,\"f\ng\"\r\n");
    buf_release(&b);
}
END_TEST

/* Inputs read as records, each given as fields joined by '|'. */
static const struct {
    const char *in;
    const char *records[3];
} csv_reads[] = {
    { "a,b", { "a|b" } },                        /* no line end at EOF */
    { "a,", { "a|" } },                          /* trailing empty field */
    { ",", { "|" } },
    { "a\nb\n", { "a", "b" } },                  /* bare LF ends rows too */
    { "a\r\n\r\nb\r\n", { "a", "", "b" } },      /* an empty row is one field */
    { "\"x\"\"y\",z\r\n", { "x\"y|z" } },
    { "\"\",\"\"\r\n", { "|" } },
    { "\"a\nb\",c\nd", { "a\nb|c", "d" } },
};

START_TEST(test_csv_read_cases)
{
    const char *in = csv_reads[_i].in;
    size_t len = strlen(in), pos = 0, r = 0;
    char **fields;
    size_t n;
    int rc;

    while ((rc = csv_read_record(in, len, &pos, &fields, &n)) == 1) {
        struct buf joined = BUF_INIT;

        ck_assert_msg(r < NELEM(csv_reads[_i].records) && csv_reads[_i].records[r],
                      "case %d: extra record", _i);
        for (size_t i = 0; i < n; i++) {
            if (i)
                buf_addc(&joined, '|');
            buf_adds(&joined, fields[i]);
        }
        ck_assert_msg(strcmp(joined.data ? joined.data : "", csv_reads[_i].records[r]) == 0,
                      "case %d record %zu: '%s', want '%s'", _i, r,
                      joined.data ? joined.data : "", csv_reads[_i].records[r]);
        buf_release(&joined);
        csv_free_record(fields, n);
        r++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(r == NELEM(csv_reads[_i].records) || !csv_reads[_i].records[r],
                  "case %d: only %zu records", _i, r);
}
END_TEST

static const char *const csv_malformed[] = {
    "\"abc",                 /* unterminated quote */
    "\"abc\r\n",
    "a,\"b\r\n",
    "\"a\"\"",               /* ends inside the quotes after a doubled quote */
    "ab\"c\r\n",             /* quote inside an unquoted field */
    "a,b\"\r\n",
    "a,b\"c\"\r\n",
    "\"a\"b\r\n",            /* junk after the closing quote */
    "\"a\" ,b\r\n",
    "x,\"y\"z",
};

START_TEST(test_csv_malformed)
{
    const char *in = csv_malformed[_i];
    char **fields = (char **)1;
    size_t n = 99, pos = 0;

    ck_assert_msg(csv_read_record(in, strlen(in), &pos, &fields, &n) == -1,
                  "malformed case %d accepted", _i);
    ck_assert_uint_eq(pos, 0);
    ck_assert_ptr_null(fields);
    ck_assert_uint_eq(n, 0);
}
END_TEST

/* A malformed record after a good one: the good one reads, then -1. */
START_TEST(test_csv_malformed_second)
{
    const char *in = "ok,1\r\nbad\"x\r\n";
    size_t pos = 0, n;
    char **fields;

    ck_assert_int_eq(csv_read_record(in, strlen(in), &pos, &fields, &n), 1);
    ck_assert_uint_eq(n, 2);
    csv_free_record(fields, n);
    ck_assert_uint_eq(pos, 6);
    ck_assert_int_eq(csv_read_record(in, strlen(in), &pos, &fields, &n), -1);
    ck_assert_uint_eq(pos, 6);
}
END_TEST

/* ---- timeutil ----------------------------------------------------------- */

static const struct {
    double t;
    const char *iso;
} time_forms[] = {
    { 1796320700.123456, "2026-12-03T17:58:20.123456Z" },   /* DESIGN.md's */
    { 1796320700.0, "2026-12-03T17:58:20.000000Z" },
    { 1796320700.000001, "2026-12-03T17:58:20.000001Z" },
    { 1796320700.9999996, "2026-12-03T17:58:21.000000Z" },  /* rounds up a second */
    { 1709208000.5, "2024-02-29T12:00:00.500000Z" },
    { 946684800.25, "2000-01-01T00:00:00.250000Z" },
    { 2147483648.0, "2038-01-19T03:14:08.000000Z" },        /* past 32-bit time_t */
    { 1.0, "1970-01-01T00:00:01.000000Z" },
};

START_TEST(test_time_format)
{
    char buf[64];

    for (size_t i = 0; i < NELEM(time_forms); i++) {
        ck_assert_str_eq(time_iso8601(time_forms[i].t, buf, sizeof(buf)),
                         time_forms[i].iso);
    }
    /* t <= 0 is "no time" */
    memset(buf, 'x', sizeof(buf));
    ck_assert_str_eq(time_iso8601(0, buf, sizeof(buf)), "");
    memset(buf, 'x', sizeof(buf));
    ck_assert_str_eq(time_iso8601(-1, buf, sizeof(buf)), "");
    ck_assert_str_eq(time_iso8601(-1796320700.5, buf, sizeof(buf)), "");
    /* a short buffer truncates and stays terminated */
    memset(buf, 'x', sizeof(buf));
    ck_assert_str_eq(time_iso8601(1796320700.0, buf, 5), "2026");
    ck_assert_int_eq(buf[5], 'x');
}
END_TEST

START_TEST(test_time_parse)
{
    static const struct {
        const char *s;
        double t;
    } forms[] = {
        { "2026-12-03T17:58:20.123456Z", 1796320700.123456 },
        { "2026-12-03T17:58:20Z", 1796320700.0 },
        { "2026-12-03T17:58:20", 1796320700.0 },
        { "2026-12-03T17:58:20.5", 1796320700.5 },
        { "2026-12-03T17:58:20.5Z", 1796320700.5 },
        { "1970-01-01T00:00:00Z", 0.0 },
    };
    char buf[64];
    double t;

    for (size_t i = 0; i < NELEM(forms); i++) {
        t = -1;
        ck_assert_msg(time_parse_iso8601(forms[i].s, &t) == 0, "'%s' rejected",
                      forms[i].s);
        ck_assert_double_eq_tol(t, forms[i].t, 1e-6);
    }
    /* format then parse gives the time back, to the microsecond */
    for (size_t i = 0; i < NELEM(time_forms); i++) {
        ck_assert_int_eq(time_parse_iso8601(time_forms[i].iso, &t), 0);
        ck_assert_double_eq_tol(t, time_forms[i].t, 1e-6);
    }
    for (double x = 1e9 + 0.000001; x < 2e9; x += 12345678.901234) {
        ck_assert_int_eq(time_parse_iso8601(time_iso8601(x, buf, sizeof(buf)), &t), 0);
        ck_assert_double_eq_tol(t, x, 1e-6);
    }
    /* the clock gives something that prints and parses */
    ck_assert_int_eq(time_parse_iso8601(time_iso8601(time_now(), buf, sizeof(buf)),
                                        &t), 0);
    ck_assert_double_gt(t, 1.7e9);
}
END_TEST

static const char *const time_garbage[] = {
    "",
    "garbage",
    "2026-12-03",
    "2026-12-03 17:58:20Z",
    "2026-12-03T17:58",
    "2026-12-03T17:58:20.",
    "2026-12-03T17:58:20.Z",
    "2026-12-03T17:58:20.123456Zjunk",
    "2026-12-03T17:58:20ZZ",
    "2026-12-03T17:58:20+01:00",
    "2026-12-03T17:58:20.12x",
    "2026-13-03T17:58:20Z",
    "2026-12-03T25:58:20Z",
    "2026-12-32T17:58:20Z",
};

START_TEST(test_time_parse_garbage)
{
    double t = 42;

    ck_assert_msg(time_parse_iso8601(time_garbage[_i], &t) == -1, "'%s' accepted",
                  time_garbage[_i]);
    ck_assert_double_eq(t, 42);
}
END_TEST

START_TEST(test_time_clocks)
{
    double m1 = time_mono(), m2 = time_mono();

    ck_assert_double_ge(m2, m1);
    ck_assert_double_gt(time_now(), 1.7e9);
}
END_TEST

/* ---- buf ---------------------------------------------------------------- */

START_TEST(test_buf_growth)
{
    struct buf b = BUF_INIT;
    const size_t n = 100000;

    for (size_t i = 0; i < n; i++) {
        buf_addc(&b, (char)('a' + i % 26));
        ck_assert_uint_lt(b.len, b.cap);
        ck_assert_int_eq(b.data[b.len], '\0');
    }
    ck_assert_uint_eq(b.len, n);
    ck_assert_uint_eq(strlen(b.data), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(b.data[i], 'a' + (int)(i % 26));
    for (size_t i = 0; i < 1000; i++)
        buf_adds(&b, "0123456789");
    ck_assert_uint_eq(b.len, n + 10000);
    ck_assert_int_eq(memcmp(b.data + b.len - 10, "0123456789", 10), 0);
    /* buf_add counts bytes, NULs included */
    buf_add(&b, "x\0y", 3);
    ck_assert_uint_eq(b.len, n + 10003);
    ck_assert_int_eq(memcmp(b.data + b.len - 3, "x\0y", 4), 0);
    buf_release(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    buf_release(&b);    /* twice is harmless */
}
END_TEST

START_TEST(test_buf_addf)
{
    struct buf b = BUF_INIT;
    char *long_arg = repeat('z', 5000);

    buf_addf(&b, "%d-%s-%.2f", 42, "x", 1.5);
    ck_assert_str_eq(b.data, "42-x-1.50");
    ck_assert_uint_eq(b.len, 9);
    buf_addf(&b, "%s", "");
    ck_assert_uint_eq(b.len, 9);
    /* longer than the free space: the buffer grows and nothing is cut */
    buf_addf(&b, "[%s]", long_arg);
    ck_assert_uint_eq(b.len, 9 + 5002);
    ck_assert_uint_eq(strlen(b.data), b.len);
    ck_assert_int_eq(b.data[9], '[');
    ck_assert_int_eq(b.data[b.len - 1], ']');
    ck_assert_int_eq(memcmp(b.data + 10, long_arg, 5000), 0);
    /* many small ones across several regrowths */
    buf_release(&b);
    for (int i = 0; i < 10000; i++)
        buf_addf(&b, "%04d,", i);
    ck_assert_uint_eq(b.len, 50000);
    ck_assert_int_eq(strncmp(b.data + 5 * 9999, "9999,", 5), 0);
    buf_release(&b);
    free(long_arg);
}
END_TEST

START_TEST(test_buf_detach)
{
    struct buf b = BUF_INIT;
    size_t len = 99;
    char *s = buf_detach(&b, &len);

    /* an empty buffer still gives a string the caller can use and free */
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(b.data);
    free(s);

    buf_adds(&b, "hello");
    s = buf_detach(&b, &len);
    ck_assert_str_eq(s, "hello");
    ck_assert_uint_eq(len, 5);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    free(s);

    /* reusable after detach; len may be NULL */
    buf_adds(&b, "again");
    s = buf_detach(&b, NULL);
    ck_assert_str_eq(s, "again");
    free(s);
}
END_TEST

/* ---- task_spec ---------------------------------------------------------- */

static int parse_task(const char *text, const char *prefix,
                      struct task_spec *spec, struct qt_error *err)
{
    json_t *j = jload(text);
    int rc = task_spec_parse(j, prefix, spec, err);

    json_decref(j);
    return rc;
}

START_TEST(test_task_forms)
{
    struct task_spec s;
    struct qt_error err = { 0 };

    ck_assert_int_eq(parse_task("{'command': ['echo', 'hi there']}", "", &s, &err), 0);
    ck_assert_ptr_nonnull(s.argv);
    ck_assert_uint_eq(strv_len(s.argv), 2);
    ck_assert_str_eq(s.argv[0], "echo");
    ck_assert_str_eq(s.argv[1], "hi there");
    ck_assert_ptr_null(s.shell);
    task_spec_release(&s);

    ck_assert_int_eq(parse_task("{'shell': 'echo hi | wc -c'}", "", &s, &err), 0);
    ck_assert_ptr_null(s.argv);
    ck_assert_str_eq(s.shell, "echo hi | wc -c");
    task_spec_release(&s);

    /* the other one given as null counts as absent */
    ck_assert_int_eq(parse_task("{'command': ['ls'], 'shell': null}", "", &s, &err), 0);
    ck_assert_str_eq(s.argv[0], "ls");
    task_spec_release(&s);
    ck_assert_int_eq(parse_task("{'command': null, 'shell': 'ls'}", "", &s, &err), 0);
    ck_assert_str_eq(s.shell, "ls");
    task_spec_release(&s);
    ck_assert_ptr_null(s.shell);    /* release leaves it empty */
}
END_TEST

START_TEST(test_task_defaults)
{
    static const char *const minimal[] = {
        "{'command': ['true']}",
        "{'command': ['true'], 'name': null, 'env': null, 'cwd': null, "
        "'pilot': null, 'cores': null, 'timeout': null, 'max_retries': null}",
        "{'command': ['true'], 'pilot': 'ANY'}",
    };

    for (size_t i = 0; i < NELEM(minimal); i++) {
        struct task_spec s;
        struct qt_error err = { 0 };

        ck_assert_msg(parse_task(minimal[i], "", &s, &err) == 0, "%s: %s",
                      minimal[i], err.message);
        ck_assert_ptr_null(s.name);
        ck_assert_ptr_null(s.env);
        ck_assert_ptr_null(s.cwd);
        ck_assert_ptr_null(s.pilot);      /* ANY */
        ck_assert_int_eq(s.cores, 1);
        ck_assert_double_eq(s.timeout, 0);
        ck_assert_int_eq(s.max_retries, 0);
        task_spec_release(&s);
    }
}
END_TEST

START_TEST(test_task_all_fields)
{
    struct task_spec s;
    struct qt_error err = { 0 };

    ck_assert_int_eq(parse_task("{'name': 'job 1', 'command': ['/bin/x', '-v'], "
                                "'env': {'A': '1', '_B2': '', 'C': 'x=y'}, "
                                "'cwd': '/tmp', 'pilot': 'gpu-1', 'cores': 4096, "
                                "'timeout': 2678400, 'max_retries': 100}",
                                "", &s, &err), 0);
    ck_assert_str_eq(s.name, "job 1");
    ck_assert_uint_eq(strv_len(s.env), 3);
    ck_assert(strv_has(s.env, "A=1"));
    ck_assert(strv_has(s.env, "_B2="));
    ck_assert(strv_has(s.env, "C=x=y"));
    ck_assert_str_eq(s.cwd, "/tmp");
    ck_assert_str_eq(s.pilot, "gpu-1");
    ck_assert_int_eq(s.cores, SPEC_MAX_CORES);
    ck_assert_double_eq(s.timeout, SPEC_MAX_TIMEOUT);
    ck_assert_int_eq(s.max_retries, SPEC_MAX_RETRIES);
    task_spec_release(&s);

    /* a pilot id is kept as its decimal form; fractional timeouts are fine */
    ck_assert_int_eq(parse_task("{'shell': 'x', 'pilot': 7, 'timeout': 0.25, "
                                "'cores': 1, 'max_retries': 0}", "", &s, &err), 0);
    ck_assert_str_eq(s.pilot, "7");
    ck_assert_double_eq(s.timeout, 0.25);
    task_spec_release(&s);
}
END_TEST

static const struct spec_err_case {
    const char *json;
    const char *prefix;
    const char *field;
    const char *msg;     /* part of the message, or NULL */
} task_errors[] = {
    /* command and shell */
    { "{'command': ['ls'], 'shell': 'ls'}", "", "command", "not both" },
    { "{}", "", "command", "needs a command" },
    { "{'name': 'x'}", "", "command", "needs a command" },
    { "{'command': null, 'shell': null}", "", "command", "needs a command" },
    { "{'command': []}", "", "command", "command must not be empty" },
    { "{'command': ['']}", "", "command", "command must not be empty" },
    { "{'command': ['ls', 5]}", "", "command", "must be a string" },
    { "{'command': ['ls', null]}", "", "command", "must be a string" },
    { "{'command': [['ls']]}", "", "command", "must be a string" },
    { "{'command': 'ls'}", "", "command", "array of strings" },
    { "{'command': {'0': 'ls'}}", "", "command", "array of strings" },
    { "{'command': true}", "", "command", "array of strings" },
    { "{'shell': ''}", "", "shell", "shell must not be empty" },
    { "{'shell': ['ls']}", "", "shell", "must be a string" },
    { "{'shell': 5}", "", "shell", "must be a string" },
    /* unknown fields, case-sensitively */
    { "{'command': ['ls'], 'comand': 1}", "", "comand", "unknown field 'comand'" },
    { "{'command': ['ls'], 'Cores': 1}", "", "Cores", "unknown field 'Cores'" },
    { "{'command': ['ls'], 'queue': null}", "", "queue", "unknown field" },
    { "{'command': ['ls'], '': 1}", "", "", "unknown field ''" },
    /* wrong types */
    { "{'command': ['ls'], 'name': 5}", "", "name", "name must be a string" },
    { "{'command': ['ls'], 'name': ['a']}", "", "name", "must be a string" },
    { "{'command': ['ls'], 'env': ['A=B']}", "", "env", "object of strings" },
    { "{'command': ['ls'], 'env': 'A=B'}", "", "env", "object of strings" },
    { "{'command': ['ls'], 'env': {'A': 5}}", "", "env", "must be a string" },
    { "{'command': ['ls'], 'env': {'A': true}}", "", "env", "must be a string" },
    { "{'command': ['ls'], 'env': {'A': null}}", "", "env", "must be a string" },
    { "{'command': ['ls'], 'cwd': 5}", "", "cwd", "must be a string" },
    { "{'command': ['ls'], 'pilot': true}", "", "pilot", NULL },
    { "{'command': ['ls'], 'pilot': ['p']}", "", "pilot", NULL },
    { "{'command': ['ls'], 'pilot': 1.5}", "", "pilot", NULL },
    { "{'command': ['ls'], 'cores': '2'}", "", "cores", "must be an integer" },
    { "{'command': ['ls'], 'cores': 2.0}", "", "cores", "must be an integer" },
    { "{'command': ['ls'], 'cores': true}", "", "cores", "must be an integer" },
    { "{'command': ['ls'], 'timeout': '10'}", "", "timeout", "number of seconds" },
    { "{'command': ['ls'], 'timeout': true}", "", "timeout", "number of seconds" },
    { "{'command': ['ls'], 'timeout': [1]}", "", "timeout", "number of seconds" },
    { "{'command': ['ls'], 'max_retries': '1'}", "", "max_retries", "must be an integer" },
    { "{'command': ['ls'], 'max_retries': 1.5}", "", "max_retries", "must be an integer" },
    { "{'command': ['ls'], 'max_retries': false}", "", "max_retries", "must be an integer" },
    /* numbers out of range, negative and huge */
    { "{'command': ['ls'], 'cores': 0}", "", "cores", "between 1 and 4096" },
    { "{'command': ['ls'], 'cores': -1}", "", "cores", "between 1 and 4096" },
    { "{'command': ['ls'], 'cores': 4097}", "", "cores", "between 1 and 4096" },
    { "{'command': ['ls'], 'cores': 4294967297}", "", "cores", "between" },
    { "{'command': ['ls'], 'cores': 9223372036854775807}", "", "cores", "between" },
    { "{'command': ['ls'], 'cores': -9223372036854775808}", "", "cores", "between" },
    { "{'command': ['ls'], 'cores': 1e300}", "", "cores", "must be an integer" },
    { "{'command': ['ls'], 'timeout': 0}", "", "timeout", "positive" },
    { "{'command': ['ls'], 'timeout': -1}", "", "timeout", "positive" },
    { "{'command': ['ls'], 'timeout': -0.5}", "", "timeout", "positive" },
    { "{'command': ['ls'], 'timeout': 2678401}", "", "timeout", "at most 2678400" },
    { "{'command': ['ls'], 'timeout': 1e300}", "", "timeout", "at most" },
    { "{'command': ['ls'], 'timeout': 9223372036854775807}", "", "timeout", "at most" },
    { "{'command': ['ls'], 'max_retries': -1}", "", "max_retries", "between 0 and 100" },
    { "{'command': ['ls'], 'max_retries': 101}", "", "max_retries", "between 0 and 100" },
    { "{'command': ['ls'], 'max_retries': 9223372036854775807}", "", "max_retries",
      "between" },
    { "{'command': ['ls'], 'max_retries': -9223372036854775808}", "", "max_retries",
      "between" },
    /* environment variable names */
    { "{'command': ['ls'], 'env': {'1X': 'y'}}", "", "env", "'1X' is not a valid" },
    { "{'command': ['ls'], 'env': {'A=B': 'y'}}", "", "env", "'A=B' is not a valid" },
    { "{'command': ['ls'], 'env': {'': 'y'}}", "", "env", "'' is not a valid" },
    { "{'command': ['ls'], 'env': {'A-B': 'y'}}", "", "env", "not a valid" },
    { "{'command': ['ls'], 'env': {'A B': 'y'}}", "", "env", "not a valid" },
    { "{'command': ['ls'], 'env': {'\\u00c9': 'y'}}", "", "env", "not a valid" },
    { "{'command': ['ls'], 'env': {'OK': 'y', '9': 'z'}}", "", "env", "not a valid" },
    /* working directory */
    { "{'command': ['ls'], 'cwd': 'tmp'}", "", "cwd", "absolute path" },
    { "{'command': ['ls'], 'cwd': ''}", "", "cwd", "absolute path" },
    { "{'command': ['ls'], 'cwd': './x'}", "", "cwd", "absolute path" },
    { "{'command': ['ls'], 'cwd': '~/x'}", "", "cwd", "absolute path" },
    /* pilot */
    { "{'command': ['ls'], 'pilot': 0}", "", "pilot", "positive" },
    { "{'command': ['ls'], 'pilot': -3}", "", "pilot", "positive" },
    { "{'command': ['ls'], 'pilot': ''}", "", "pilot", "pilot name, an id or" },
    /* NUL bytes in strings */
    { "{'name': 'a\\u0000b', 'command': ['ls']}", "", "name", "NUL" },
    { "{'shell': 'true\\u0000rm -rf /'}", "", "shell", "NUL" },
    { "{'command': ['ls', 'a\\u0000b']}", "", "command", "NUL" },
    { "{'command': ['\\u0000']}", "", "command", "NUL" },
    { "{'command': ['ls'], 'env': {'A': 'x\\u0000y'}}", "", "env", "NUL" },
    { "{'command': ['ls'], 'cwd': '/tmp\\u0000x'}", "", "cwd", "NUL" },
    { "{'command': ['ls'], 'pilot': 'p\\u0000q'}", "", "pilot", "NUL" },
    /* the array index prefix, in the field and the message */
    { "{'command': ['ls'], 'cores': 0}", "[3].", "[3].cores",
      "[3].cores must be between 1 and 4096" },
    { "{'shell': 'x', 'bogus': 1}", "[0].", "[0].bogus", "unknown field 'bogus'" },
    { "{}", "[12].", "[12].command", NULL },
    { "{'command': ['ls'], 'shell': 'x'}", "[1].", "[1].command", NULL },
    { "{'command': ['ls', 1]}", "[2].", "[2].command", "[2].command must be a string" },
    { "{'command': ['ls'], 'env': {'1X': 'y'}}", "[3].", "[3].env", "[3].env" },
    { "{'command': ['ls'], 'cwd': 'rel'}", "[4].", "[4].cwd", "[4].cwd" },
    { "{'command': ['ls'], 'timeout': 0}", "[5].", "[5].timeout", "[5].timeout" },
    { "{'command': ['ls'], 'pilot': 0}", "[6].", "[6].pilot", "[6].pilot" },
    { "{'command': ['ls'], 'max_retries': 101}", "[7].", "[7].max_retries",
      "[7].max_retries" },
    { "{'shell': ''}", "[8].", "[8].shell", "[8].shell must not be empty" },
    /* not an object at all: the element itself is at fault */
    { "[]", "[3].", "[3]", "JSON object" },
    { "'ls'", "[0].", "[0]", "JSON object" },
    { "5", "", "", "JSON object" },
    { "null", "", "", "JSON object" },
};

START_TEST(test_task_errors)
{
    const struct spec_err_case *c = &task_errors[_i];
    struct task_spec s;
    struct qt_error err = { 0 };
    char what[256];

    snprintf(what, sizeof(what), "task %s (prefix '%s')", c->json, c->prefix);
    ck_assert_msg(parse_task(c->json, c->prefix, &s, &err) == -1, "%s accepted", what);
    assert_arg_error(&err, c->field, c->msg, what);
    /* a failed parse leaves nothing behind */
    ck_assert_ptr_null(s.argv);
    ck_assert_ptr_null(s.shell);
    ck_assert_ptr_null(s.name);
    ck_assert_ptr_null(s.env);
    ck_assert_ptr_null(s.cwd);
    ck_assert_ptr_null(s.pilot);
}
END_TEST

/* Limits that need long inputs, built rather than written out. */
START_TEST(test_task_limits)
{
    struct task_spec s;
    struct qt_error err;
    char *long_str = repeat('x', SPEC_MAX_STRING + 1);
    char *long_name = repeat('n', SPEC_MAX_NAME + 1);
    json_t *o, *argv, *env;

    /* a shell line of exactly the limit passes, one byte more does not */
    o = json_pack("{s:s%}", "shell", long_str, (size_t)SPEC_MAX_STRING);
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), 0);
    task_spec_release(&s);
    json_decref(o);
    o = json_pack("{s:s}", "shell", long_str);
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "shell", "longer than 65536", "long shell");
    json_decref(o);

    /* argv elements */
    argv = json_array();
    for (int i = 0; i < SPEC_MAX_ARGV; i++)
        json_array_append_new(argv, json_string("a"));
    o = json_pack("{s:O}", "command", argv);
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), 0);
    ck_assert_uint_eq(strv_len(s.argv), SPEC_MAX_ARGV);
    task_spec_release(&s);
    json_decref(o);
    json_array_append_new(argv, json_string("a"));
    o = json_pack("{s:o}", "command", argv);
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "command", "more than 4096", "long argv");
    json_decref(o);

    /* names */
    o = json_pack("{s:s, s:[s]}", "name", long_name, "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "name", "longer than 256", "long name");
    json_decref(o);
    o = json_pack("{s:s, s:[s]}", "pilot", long_name, "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "pilot", NULL, "long pilot");
    json_decref(o);
    o = json_pack("{s:{s:s}, s:[s]}", "env", long_name, "v", "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "env", "not a valid variable name", "long env name");
    json_decref(o);
    long_name[SPEC_MAX_NAME] = '\0';
    o = json_pack("{s:s, s:{s:s}, s:[s]}", "name", long_name, "env", long_name, "v",
                  "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), 0);
    task_spec_release(&s);
    json_decref(o);

    /* environment entries */
    env = json_object();
    for (int i = 0; i < SPEC_MAX_ENV; i++) {
        char key[16];

        snprintf(key, sizeof(key), "V%d", i);
        json_object_set_new(env, key, json_string("1"));
    }
    o = json_pack("{s:O, s:[s]}", "env", env, "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), 0);
    ck_assert_uint_eq(strv_len(s.env), SPEC_MAX_ENV);
    task_spec_release(&s);
    json_decref(o);
    json_object_set_new(env, "ONE_MORE", json_string("1"));
    o = json_pack("{s:o, s:[s]}", "env", env, "command", "ls");
    ck_assert_int_eq(task_spec_parse(o, "", &s, &err), -1);
    assert_arg_error(&err, "env", "more than 1024", "big env");
    json_decref(o);

    free(long_str);
    free(long_name);
}
END_TEST

/* parse -> to_json -> parse gives the same description. */
static const char *const task_round_trips[] = {
    "{'command': ['ls']}",
    "{'shell': 'echo \\u0022a,b\\u0022 | wc'}",
    "{'name': 'n', 'command': ['/bin/x', '', 'y z'], 'env': {'A': '1', 'B': ''}, "
    "'cwd': '/w', 'pilot': 'p1', 'cores': 3, 'timeout': 1.5, 'max_retries': 2}",
    "{'shell': 'x', 'pilot': 12, 'timeout': 30}",
    "{'shell': 'x', 'pilot': 'ANY'}",
};

START_TEST(test_task_to_json)
{
    struct task_spec a, b;
    struct qt_error err = { 0 };
    json_t *ja, *jb;

    ck_assert_int_eq(parse_task(task_round_trips[_i], "", &a, &err), 0);
    ja = task_spec_to_json(&a);
    ck_assert_msg(task_spec_parse(ja, "", &b, &err) == 0, "%s: normalized form "
                  "rejected: %s", task_round_trips[_i], err.message);
    jb = task_spec_to_json(&b);
    ck_assert_msg(json_equal(ja, jb), "%s: to_json differs after a round trip",
                  task_round_trips[_i]);
    /* defaults are written out */
    ck_assert_str_eq(json_string_value(json_object_get(ja, "pilot")),
                     a.pilot ? a.pilot : "ANY");
    ck_assert_int_eq(json_integer_value(json_object_get(ja, "cores")), a.cores);
    ck_assert_int_eq(json_integer_value(json_object_get(ja, "max_retries")),
                     a.max_retries);
    ck_assert_int_eq(json_object_get(ja, "timeout") != NULL, a.timeout > 0);
    /* and the parsed structs agree */
    ck_assert_pstr_eq(a.name, b.name);
    ck_assert_pstr_eq(a.shell, b.shell);
    ck_assert_pstr_eq(a.cwd, b.cwd);
    ck_assert_pstr_eq(a.pilot, b.pilot);
    ck_assert_uint_eq(strv_len(a.argv), strv_len(b.argv));
    for (size_t i = 0; i < strv_len(a.argv); i++)
        ck_assert_str_eq(a.argv[i], b.argv[i]);
    ck_assert_uint_eq(strv_len(a.env), strv_len(b.env));
    for (size_t i = 0; i < strv_len(a.env); i++)
        ck_assert(strv_has(b.env, a.env[i]));
    ck_assert_int_eq(a.cores, b.cores);
    ck_assert_double_eq(a.timeout, b.timeout);
    ck_assert_int_eq(a.max_retries, b.max_retries);
    json_decref(ja);
    json_decref(jb);
    task_spec_release(&a);
    task_spec_release(&b);
}
END_TEST

/* ---- pilot_spec --------------------------------------------------------- */

static int parse_pilot(const char *text, struct pilot_spec *spec,
                       struct qt_error *err)
{
    json_t *j = jload(text);
    int rc = pilot_spec_parse(j, spec, err);

    json_decref(j);
    return rc;
}

START_TEST(test_pilot_valid)
{
    struct pilot_spec s;
    struct qt_error err = { 0 };

    ck_assert_int_eq(parse_pilot("{}", &s, &err), 0);
    ck_assert_ptr_null(s.name);
    ck_assert_int_eq(s.resource, RESOURCE_LOCAL);
    ck_assert_int_eq(s.engine, ENGINE_QTAU);
    ck_assert_int_eq(s.cores, 0);
    pilot_spec_release(&s);

    ck_assert_int_eq(parse_pilot("{'name': 'p1', 'resource': 'local', "
                                 "'engine': 'qtau', 'cores': 4096}", &s, &err), 0);
    ck_assert_str_eq(s.name, "p1");
    ck_assert_int_eq(s.resource, RESOURCE_LOCAL);
    ck_assert_int_eq(s.cores, SPEC_MAX_CORES);
    pilot_spec_release(&s);

    ck_assert_int_eq(parse_pilot("{'resource': 'slurm', 'cores': 1, "
                                 "'number_of_nodes': 2, 'cores_per_node': 8, "
                                 "'gpus_per_node': 0, 'walltime': 90, "
                                 "'queue': 'debug', 'qos': 'normal', "
                                 "'project': 'acct', 'reservation': 'r1', "
                                 "'working_directory': '/scratch', "
                                 "'environment': {'OMP_NUM_THREADS': '1'}, "
                                 "'scheduler_script_commands': "
                                 "['#SBATCH --exclusive', '#SBATCH --mem=0']}",
                                 &s, &err), 0);
    ck_assert_int_eq(s.resource, RESOURCE_SLURM);
    ck_assert_int_eq(s.cores, 1);
    ck_assert_int_eq(s.number_of_nodes, 2);
    ck_assert_int_eq(s.cores_per_node, 8);
    ck_assert_int_eq(s.gpus_per_node, 0);
    ck_assert_int_eq(s.walltime, 90);
    ck_assert_str_eq(s.queue, "debug");
    ck_assert_str_eq(s.qos, "normal");
    ck_assert_str_eq(s.project, "acct");
    ck_assert_str_eq(s.reservation, "r1");
    ck_assert_str_eq(s.working_directory, "/scratch");
    ck_assert_uint_eq(strv_len(s.environment), 1);
    ck_assert_str_eq(s.environment[0], "OMP_NUM_THREADS=1");
    ck_assert_uint_eq(strv_len(s.scheduler_script_commands), 2);
    ck_assert_str_eq(s.scheduler_script_commands[1], "#SBATCH --mem=0");
    pilot_spec_release(&s);
    ck_assert_ptr_null(s.queue);

    /* upper bounds */
    ck_assert_int_eq(parse_pilot("{'resource': 'slurm', 'number_of_nodes': 100000, "
                                 "'cores_per_node': 4096, 'gpus_per_node': 1024, "
                                 "'walltime': 525600}", &s, &err), 0);
    ck_assert_int_eq(s.walltime, 525600);
    pilot_spec_release(&s);
}
END_TEST

/* DESIGN.md: optional SLURM fields count only when present, non-null,
 * non-empty and not "None"; and spec.c treats null as absent throughout. */
static const char *const pilot_absent_slurm[] = {
    "{'resource': 'slurm', 'queue': 'None', 'qos': '', 'project': null, "
    "'reservation': 'None', 'working_directory': 'None'}",
    "{'resource': 'slurm', 'queue': null, 'qos': null, 'working_directory': ''}",
    "{'resource': 'local', 'queue': null, 'walltime': null, 'number_of_nodes': null, "
    "'environment': null, 'scheduler_script_commands': null}",
    "{'resource': 'local', 'queue': 'None', 'qos': '', 'working_directory': 'None'}",
    "{'queue': null, 'project': 'None'}",
};

START_TEST(test_pilot_absent_slurm_fields)
{
    struct pilot_spec s;
    struct qt_error err = { 0 };

    ck_assert_msg(parse_pilot(pilot_absent_slurm[_i], &s, &err) == 0,
                  "%s rejected: %s (field %s)", pilot_absent_slurm[_i], err.message,
                  err.field);
    ck_assert_ptr_null(s.queue);
    ck_assert_ptr_null(s.qos);
    ck_assert_ptr_null(s.project);
    ck_assert_ptr_null(s.reservation);
    ck_assert_ptr_null(s.working_directory);
    ck_assert_ptr_null(s.environment);
    ck_assert_ptr_null(s.scheduler_script_commands);
    ck_assert_int_eq(s.walltime, 0);
    pilot_spec_release(&s);
}
END_TEST

static const struct {
    const char *json;
    const char *field;
    const char *msg;
} pilot_errors[] = {
    { "{'bogus': 1}", "bogus", "unknown field 'bogus'" },
    { "{'resource': 'local', 'command': ['ls']}", "command", "unknown field" },
    { "{'Name': 'p'}", "Name", "unknown field" },
    /* resource and engine enums: the accepted names are listed */
    { "{'resource': 'SLURM'}", "resource", "accepted: local, slurm" },
    { "{'resource': 'Local'}", "resource", "accepted: local, slurm" },
    { "{'resource': ''}", "resource", "accepted: local, slurm" },
    { "{'resource': 'pbs'}", "resource", "unknown resource 'pbs'" },
    { "{'resource': 5}", "resource", "must be a string" },
    { "{'resource': ['local']}", "resource", "must be a string" },
    { "{'engine': 'dask'}", "engine", "accepted: qtau" },
    { "{'engine': 'QTAU'}", "engine", "unknown engine 'QTAU'" },
    { "{'engine': 1}", "engine", "must be a string" },
    /* cores */
    { "{'cores': 0}", "cores", "between 1 and 4096" },
    { "{'cores': -1}", "cores", "between 1 and 4096" },
    { "{'cores': 4097}", "cores", "between 1 and 4096" },
    { "{'cores': 9223372036854775807}", "cores", "between" },
    { "{'cores': '4'}", "cores", "must be an integer" },
    { "{'cores': 1.5}", "cores", "must be an integer" },
    /* names */
    { "{'name': ''}", "name", "pilot name must be" },
    { "{'name': '123'}", "name", "pilot name must be" },
    { "{'name': 'ANY'}", "name", "pilot name must be" },
    { "{'name': 'a b'}", "name", "pilot name must be" },
    { "{'name': 'p\\u0000q'}", "name", "NUL" },
    { "{'name': 5}", "name", "must be a string" },
    /* SLURM shape */
    { "{'resource': 'slurm', 'number_of_nodes': 0}", "number_of_nodes", "between 1" },
    { "{'resource': 'slurm', 'number_of_nodes': 100001}", "number_of_nodes", NULL },
    { "{'resource': 'slurm', 'cores_per_node': 4097}", "cores_per_node", NULL },
    { "{'resource': 'slurm', 'cores_per_node': 0}", "cores_per_node", NULL },
    { "{'resource': 'slurm', 'gpus_per_node': -1}", "gpus_per_node", NULL },
    { "{'resource': 'slurm', 'gpus_per_node': 1025}", "gpus_per_node", NULL },
    { "{'resource': 'slurm', 'walltime': 0}", "walltime", NULL },
    { "{'resource': 'slurm', 'walltime': 525601}", "walltime", NULL },
    { "{'resource': 'slurm', 'walltime': 90.5}", "walltime", "must be an integer" },
    { "{'resource': 'slurm', 'walltime': '90'}", "walltime", "must be an integer" },
    { "{'resource': 'slurm', 'queue': 5}", "queue", "must be a string" },
    { "{'resource': 'slurm', 'qos': ['a']}", "qos", "must be a string" },
    { "{'resource': 'slurm', 'working_directory': 'rel'}", "working_directory",
      "absolute path" },
    { "{'resource': 'slurm', 'environment': {'1X': 'y'}}", "environment",
      "not a valid variable name" },
    { "{'resource': 'slurm', 'environment': ['A=B']}", "environment", NULL },
    { "{'resource': 'slurm', 'scheduler_script_commands': ['--exclusive']}",
      "scheduler_script_commands", "#SBATCH" },
    { "{'resource': 'slurm', 'scheduler_script_commands': ['#SBATCH a\\nb']}",
      "scheduler_script_commands", "#SBATCH" },
    { "{'resource': 'slurm', 'scheduler_script_commands': ['#SBATCH a\\r']}",
      "scheduler_script_commands", "#SBATCH" },
    { "{'resource': 'slurm', 'scheduler_script_commands': '#SBATCH -N1'}",
      "scheduler_script_commands", "array of strings" },
    /* SLURM fields given to a local pilot */
    { "{'queue': 'debug'}", "queue", "slurm pilots only" },
    { "{'resource': 'local', 'walltime': 10}", "walltime", "slurm pilots only" },
    { "{'resource': 'local', 'number_of_nodes': 2}", "number_of_nodes",
      "slurm pilots only" },
    { "{'resource': 'local', 'environment': {}}", "environment", "slurm pilots only" },
    { "{'resource': 'local', 'working_directory': '/w'}", "working_directory",
      "slurm pilots only" },
    /* not an object */
    { "[]", "", "JSON object" },
    { "'local'", "", "JSON object" },
};

START_TEST(test_pilot_errors)
{
    struct pilot_spec s;
    struct qt_error err = { 0 };
    char what[256];

    snprintf(what, sizeof(what), "pilot %s", pilot_errors[_i].json);
    ck_assert_msg(parse_pilot(pilot_errors[_i].json, &s, &err) == -1, "%s accepted",
                  what);
    assert_arg_error(&err, pilot_errors[_i].field, pilot_errors[_i].msg, what);
    ck_assert_ptr_null(s.name);
    ck_assert_ptr_null(s.queue);
    ck_assert_ptr_null(s.environment);
    ck_assert_ptr_null(s.scheduler_script_commands);
}
END_TEST

START_TEST(test_pilot_to_json)
{
    static const char *const descs[] = {
        "{}",
        "{'name': 'big', 'resource': 'slurm', 'number_of_nodes': 2, "
        "'cores_per_node': 8, 'gpus_per_node': 1, 'walltime': 90, 'queue': 'q', "
        "'qos': 'o', 'project': 'p', 'reservation': 'r', 'working_directory': '/w', "
        "'environment': {'A': '1'}, 'scheduler_script_commands': ['#SBATCH -x']}",
        "{'name': 'l', 'cores': 3}",
    };

    for (size_t i = 0; i < NELEM(descs); i++) {
        struct pilot_spec a, b;
        struct qt_error err = { 0 };
        json_t *ja, *jb;

        ck_assert_int_eq(parse_pilot(descs[i], &a, &err), 0);
        ja = pilot_spec_to_json(&a);
        ck_assert_msg(pilot_spec_parse(ja, &b, &err) == 0, "%s: %s", descs[i],
                      err.message);
        jb = pilot_spec_to_json(&b);
        ck_assert_msg(json_equal(ja, jb), "%s: to_json differs", descs[i]);
        ck_assert_str_eq(json_string_value(json_object_get(ja, "resource")),
                         qt_enum_name(&resource_enum, (int)a.resource));
        ck_assert_str_eq(json_string_value(json_object_get(ja, "engine")), "qtau");
        json_decref(ja);
        json_decref(jb);
        pilot_spec_release(&a);
        pilot_spec_release(&b);
    }
}
END_TEST

START_TEST(test_pilot_name_valid)
{
    static const struct {
        const char *name;
        bool valid;
    } names[] = {
        { "local", true },
        { "p1", true },
        { "1p", true },
        { "a.b_c-d", true },
        { "X", true },
        { "007a", true },
        { "any", true },        /* only "ANY" itself is reserved */
        { "ANYx", true },
        { "", false },
        { "0", false },         /* all digits: that is an id */
        { "123", false },
        { "ANY", false },
        { "a b", false },
        { "a/b", false },
        { "a:b", false },
        { "a,b", false },
        { "p\n", false },
        { "caf\xc3\xa9", false },
    };
    char *n64 = repeat('p', 64), *n65 = repeat('p', 65);

    for (size_t i = 0; i < NELEM(names); i++)
        ck_assert_msg(pilot_name_valid(names[i].name) == names[i].valid,
                      "pilot_name_valid('%s') should be %d", names[i].name,
                      names[i].valid);
    ck_assert(pilot_name_valid(n64));
    ck_assert(!pilot_name_valid(n65));
    free(n64);
    free(n65);
}
END_TEST

/* ---- conf --------------------------------------------------------------- */

static char conf_dir[] = "/tmp/qtaud-units-XXXXXX";

/* Runs once in the test runner: a directory for this tcase's config files. */
static void conf_dir_setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(conf_dir));
}

static void conf_dir_teardown(void)
{
    DIR *d = opendir(conf_dir);
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        char path[sizeof(conf_dir) + 300];

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", conf_dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(conf_dir);
}

/* Removes every QTAUD_* variable, so the caller's environment cannot leak
 * into a test. */
static void clear_qtaud_env(void)
{
    bool again = true;

    while (again) {
        again = false;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "QTAUD_", 6) == 0) {
                char name[256];
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);

                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                unsetenv(name);
                again = true;   /* environ changed under us: start over */
                break;
            }
        }
    }
}

/* Writes text to conf_dir/name and returns its path (static storage). */
static const char *write_conf(const char *name, const char *text)
{
    static char path[sizeof(conf_dir) + 64];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", conf_dir, name);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* config_load with "qtaud" and the given flags (NULL-terminated). */
static int load(struct qtaud_config *cfg, struct qt_error *err, ...)
    __attribute__((sentinel));

static int load(struct qtaud_config *cfg, struct qt_error *err, ...)
{
    char *argv[32] = { "qtaud" };
    int argc = 1;
    va_list ap;
    char *a;

    va_start(ap, err);
    while ((a = va_arg(ap, char *)) && argc < (int)NELEM(argv) - 1)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    memset(err, 0, sizeof(*err));
    return config_load(cfg, argc, argv, err);
}

START_TEST(test_conf_defaults)
{
    struct qtaud_config cfg;
    struct qt_error err;

    clear_qtaud_env();
    ck_assert_int_eq(load(&cfg, &err, NULL), 0);
    ck_assert_str_eq(cfg.listen_host, "127.0.0.1");
    ck_assert_int_eq(cfg.listen_port, 8750);
    ck_assert_str_eq(cfg.state_dir, "/var/lib/qtaud");
    ck_assert_str_eq(cfg.config_file, "");
    ck_assert_int_eq(cfg.local_cores, 0);
    ck_assert(!cfg.no_local_pilot);
    ck_assert_str_eq(cfg.log_level, "info");
    ck_assert(!cfg.allow_root);
    ck_assert_double_eq(cfg.shutdown_grace, 30);
    ck_assert_double_eq(cfg.kill_grace, 5);
    ck_assert_int_eq(cfg.http_threads, 4);
    ck_assert_int_eq(cfg.max_body, 64L * 1024 * 1024);
    ck_assert_int_eq(cfg.idle_timeout, 60);
    ck_assert_int_eq(cfg.max_connections, 1000);
    ck_assert_int_eq(cfg.max_connections_per_client, 256);
    ck_assert_int_eq(cfg.max_header_size, 32 * 1024);
    ck_assert_int_eq(cfg.max_requeues, 3);
    ck_assert_str_eq(cfg.agent_path, QTAU_AGENT_DEFAULT);
    ck_assert_str_eq(cfg.agent_url, "");
    ck_assert_double_eq(cfg.slurm_poll, 2);
    ck_assert_double_eq(cfg.heartbeat, 5);
    ck_assert(!cfg.help);
    ck_assert(!cfg.version);
}
END_TEST

START_TEST(test_conf_file)
{
    struct qtaud_config cfg;
    struct qt_error err;
    const char *path = write_conf("all.conf",
        "# every key a file may set\n"
        "\n"
        "listen = 0.0.0.0:9000\n"
        "  state-dir=/srv/qtaud  \n"
        "local-cores = 3\n"
        "no-local-pilot = yes\n"
        "log-level = debug\n"
        "allow-root = true\n"
        "shutdown-grace = 2.5\n"
        "kill-grace = 0\n"
        "http-threads = 8\n"
        "max-body = 1024\n"
        "idle-timeout = 5\n"
        "max-connections = 10\n"
        "max-connections-per-client = 0\n"
        "max-header-size = 8192\n"
        "max-requeues = 0\n"
        "agent-path = /opt/qtau/bin/qtau-agent\n"
        "agent-url = http://head:8750\n"
        "slurm-poll = 0.5\n"
        "heartbeat-interval = 600\n"
        "agent-timeout = 1800\n");

    clear_qtaud_env();
    ck_assert_msg(load(&cfg, &err, "--config", path, NULL) == 0, "%s", err.message);
    ck_assert_str_eq(cfg.config_file, path);
    ck_assert_str_eq(cfg.listen_host, "0.0.0.0");
    ck_assert_int_eq(cfg.listen_port, 9000);
    ck_assert_str_eq(cfg.state_dir, "/srv/qtaud");
    ck_assert_int_eq(cfg.local_cores, 3);
    ck_assert(cfg.no_local_pilot);
    ck_assert_str_eq(cfg.log_level, "debug");
    ck_assert(cfg.allow_root);
    ck_assert_double_eq(cfg.shutdown_grace, 2.5);
    ck_assert_double_eq(cfg.kill_grace, 0);
    ck_assert_int_eq(cfg.http_threads, 8);
    ck_assert_int_eq(cfg.max_body, 1024);
    ck_assert_int_eq(cfg.idle_timeout, 5);
    ck_assert_int_eq(cfg.max_connections, 10);
    ck_assert_int_eq(cfg.max_connections_per_client, 0);
    ck_assert_int_eq(cfg.max_header_size, 8192);
    ck_assert_int_eq(cfg.max_requeues, 0);
    ck_assert_str_eq(cfg.agent_path, "/opt/qtau/bin/qtau-agent");
    ck_assert_str_eq(cfg.agent_url, "http://head:8750");
    ck_assert_double_eq(cfg.slurm_poll, 0.5);
    ck_assert_double_eq(cfg.heartbeat, 600);
    ck_assert_double_eq(cfg.agent_timeout, 1800);

    /* the file may also be named by QTAUD_CONFIG, and --config wins over it */
    ck_assert_int_eq(setenv("QTAUD_CONFIG", path, 1), 0);
    ck_assert_int_eq(load(&cfg, &err, NULL), 0);
    ck_assert_int_eq(cfg.local_cores, 3);
    ck_assert_int_eq(load(&cfg, &err, "--config",
                          write_conf("other.conf", "local-cores = 9\n"), NULL), 0);
    ck_assert_int_eq(cfg.local_cores, 9);
    ck_assert_int_eq(cfg.listen_port, 8750);
    unsetenv("QTAUD_CONFIG");
}
END_TEST

START_TEST(test_conf_precedence)
{
    struct qtaud_config cfg;
    struct qt_error err;
    const char *path = write_conf("prec.conf",
                                  "local-cores = 3\nlog-level = debug\n"
                                  "listen = 10.0.0.1:1\nallow-root = yes\n");

    clear_qtaud_env();
    /* environment over file, for the keys it sets; the file keeps the rest */
    ck_assert_int_eq(setenv("QTAUD_LOCAL_CORES", "5", 1), 0);
    ck_assert_int_eq(setenv("QTAUD_LISTEN", "10.0.0.2:2", 1), 0);
    ck_assert_int_eq(setenv("QTAUD_ALLOW_ROOT", "no", 1), 0);
    ck_assert_int_eq(setenv("QTAUD_NO_LOCAL_PILOT", "1", 1), 0);
    ck_assert_int_eq(load(&cfg, &err, "--config", path, NULL), 0);
    ck_assert_int_eq(cfg.local_cores, 5);
    ck_assert_str_eq(cfg.listen_host, "10.0.0.2");
    ck_assert_int_eq(cfg.listen_port, 2);
    ck_assert(!cfg.allow_root);
    ck_assert(cfg.no_local_pilot);
    ck_assert_str_eq(cfg.log_level, "debug");

    /* flags over environment, in both --key VALUE and --key=VALUE forms */
    ck_assert_int_eq(load(&cfg, &err, "--config", path, "--local-cores", "7",
                          "--listen=10.0.0.3:3", "--allow-root",
                          "--no-local-pilot=false", "--log-level", "error", NULL), 0);
    ck_assert_int_eq(cfg.local_cores, 7);
    ck_assert_str_eq(cfg.listen_host, "10.0.0.3");
    ck_assert_int_eq(cfg.listen_port, 3);
    ck_assert(cfg.allow_root);
    ck_assert(!cfg.no_local_pilot);
    ck_assert_str_eq(cfg.log_level, "error");

    /* the last of repeated flags wins; --help and --version are flags */
    ck_assert_int_eq(load(&cfg, &err, "--local-cores=1", "--local-cores=2", "--help",
                          "--version", NULL), 0);
    ck_assert_int_eq(cfg.local_cores, 2);
    ck_assert(cfg.help);
    ck_assert(cfg.version);

    unsetenv("QTAUD_LOCAL_CORES");
    unsetenv("QTAUD_LISTEN");
    unsetenv("QTAUD_ALLOW_ROOT");
    unsetenv("QTAUD_NO_LOCAL_PILOT");
}
END_TEST

/* Each bad input, from the source named by how: 'f' a config file line,
 * 'e' QTAUD_<KEY>, 'a' a flag --key=value. */
static const struct {
    char how;
    const char *key;     /* file key, variable name or flag */
    const char *value;
    const char *field;
    const char *msg;
} conf_errors[] = {
    { 'f', "bogus", "1", "bogus", "unknown key 'bogus'" },
    { 'f', "Local-Cores", "1", "Local-Cores", "unknown key" },
    { 'f', "local_cores", "1", "local_cores", "unknown key" },
    { 'f', "config", "/x", "config", "unknown key" },
    { 'f', "help", "true", "help", "unknown key" },
    { 'f', "local-cores", "-1", "local-cores", "whole number from 0 to 4096" },
    { 'f', "local-cores", "abc", "local-cores", "got 'abc'" },
    { 'f', "local-cores", "4097", "local-cores", NULL },
    { 'f', "local-cores", "1.5", "local-cores", NULL },
    { 'f', "local-cores", "", "local-cores", NULL },
    { 'f', "local-cores", "99999999999999999999", "local-cores", NULL },
    { 'f', "http-threads", "0", "http-threads", NULL },
    { 'f', "max-body", "1023", "max-body", NULL },
    { 'f', "max-connections", "100001", "max-connections", NULL },
    { 'f', "max-connections-per-client", "-1", "max-connections-per-client", NULL },
    { 'f', "max-header-size", "4095", "max-header-size", NULL },
    { 'e', "QTAUD_MAX_HEADER_SIZE", "2000000", "max-header-size",
      "environment QTAUD_MAX_HEADER_SIZE" },
    { 'e', "QTAUD_MAX_CONNECTIONS_PER_CLIENT", "x", "max-connections-per-client", NULL },
    { 'f', "shutdown-grace", "-1", "shutdown-grace", NULL },
    { 'f', "shutdown-grace", "nan", "shutdown-grace", NULL },
    { 'f', "kill-grace", "inf", "kill-grace", NULL },
    { 'f', "kill-grace", "5s", "kill-grace", NULL },
    { 'f', "log-level", "verbose", "log-level", "got 'verbose'" },
    { 'f', "log-level", "INFO", "log-level", NULL },
    { 'f', "allow-root", "maybe", "allow-root", "true or false" },
    { 'f', "state-dir", "", "state-dir", NULL },
    { 'f', "listen", "8750", "listen", "ADDRESS:PORT" },
    { 'f', "max-requeues", "1001", "max-requeues", NULL },
    { 'f', "slurm-poll", "0", "slurm-poll", NULL },
    { 'f', "heartbeat-interval", "nan", "heartbeat-interval", NULL },
    { 'f', "heartbeat", "5", "heartbeat", "unknown key" },   /* the key, not the field */
    { 'f', "agent-timeout", "0.5", "agent-timeout", NULL },
    { 'e', "QTAUD_LOCAL_CORES", "abc", "local-cores", "environment QTAUD_LOCAL_CORES" },
    { 'e', "QTAUD_LOCAL_CORES", "-1", "local-cores", NULL },
    { 'e', "QTAUD_LOCAL_CORES", "", "local-cores", NULL },
    { 'e', "QTAUD_SHUTDOWN_GRACE", "nan", "shutdown-grace", NULL },
    { 'e', "QTAUD_LOG_LEVEL", "loud", "log-level", "environment QTAUD_LOG_LEVEL" },
    { 'e', "QTAUD_NO_LOCAL_PILOT", "2", "no-local-pilot", NULL },
    { 'e', "QTAUD_LISTEN", "nohost", "listen", NULL },
    { 'e', "QTAUD_CONFIG", "/nonexistent/qtaud.conf", "config", "cannot read" },
    { 'e', "QTAUD_HEARTBEAT_INTERVAL", "0", "heartbeat-interval",
      "environment QTAUD_HEARTBEAT_INTERVAL" },
    { 'a', "--bogus", NULL, "bogus", "unknown option '--bogus'" },
    { 'a', "--durability=fast", NULL, "durability", "normal or full" },
    /* fine alone, not with the default 5 s heartbeat */
    { 'a', "--agent-timeout=10", NULL, "agent-timeout", "at least 3 x heartbeat-interval" },
    { 'a', "--local_cores=3", NULL, "local_cores", "unknown option" },
    { 'a', "--", NULL, "", "unknown option" },
    { 'a', "--local-cores=abc", NULL, "local-cores", "command line" },
    { 'a', "--local-cores=-1", NULL, "local-cores", NULL },
    { 'a', "--local-cores", NULL, "local-cores", "needs a value" },
    { 'a', "--allow-root=maybe", NULL, "allow-root", NULL },
    { 'a', "--max-body=2000000000", NULL, "max-body", NULL },
    { 'a', "--config=/nonexistent/qtaud.conf", NULL, "config", "cannot read" },
    { 'a', "--config=", NULL, "config", NULL },
    { 'a', "positional", NULL, "", "unexpected argument 'positional'" },
    { 'a', "-v", NULL, "", "unexpected argument" },
};

START_TEST(test_conf_errors)
{
    struct qtaud_config cfg;
    struct qt_error err;
    char what[256];
    int rc;

    clear_qtaud_env();
    snprintf(what, sizeof(what), "%c %s%s%s", conf_errors[_i].how, conf_errors[_i].key,
             conf_errors[_i].value ? "=" : "",
             conf_errors[_i].value ? conf_errors[_i].value : "");
    if (conf_errors[_i].how == 'f') {
        char text[256], name[32];
        const char *path;

        snprintf(text, sizeof(text), "# line 1\n%s = %s\n", conf_errors[_i].key,
                 conf_errors[_i].value);
        snprintf(name, sizeof(name), "err%d.conf", _i);
        path = write_conf(name, text);
        rc = load(&cfg, &err, "--config", path, NULL);
        if (rc < 0) {
            /* the message says where: path:line */
            char where[sizeof(conf_dir) + 64];

            snprintf(where, sizeof(where), "%s:2", path);
            ck_assert_msg(strstr(err.message, where) != NULL,
                          "%s: message '%s' lacks '%s'", what, err.message, where);
        }
    } else if (conf_errors[_i].how == 'e') {
        ck_assert_int_eq(setenv(conf_errors[_i].key, conf_errors[_i].value, 1), 0);
        rc = load(&cfg, &err, NULL);
        unsetenv(conf_errors[_i].key);
    } else {
        rc = load(&cfg, &err, conf_errors[_i].key, NULL);
    }
    ck_assert_msg(rc == -1, "%s accepted", what);
    assert_arg_error(&err, conf_errors[_i].field, conf_errors[_i].msg, what);
}
END_TEST

START_TEST(test_conf_file_syntax)
{
    struct qtaud_config cfg;
    struct qt_error err;
    const char *path = write_conf("syntax.conf", "local-cores = 2\njust words\n");

    clear_qtaud_env();
    ck_assert_int_eq(load(&cfg, &err, "--config", path, NULL), -1);
    ck_assert_int_eq(err.status, 400);
    ck_assert_ptr_nonnull(strstr(err.message, "expected 'key = value'"));
    ck_assert_ptr_nonnull(strstr(err.message, ":2"));
    /* the first bad line stops the load */
    path = write_conf("two.conf", "bogus = 1\nlocal-cores = abc\n");
    ck_assert_int_eq(load(&cfg, &err, "--config", path, NULL), -1);
    ck_assert_str_eq(err.field, "bogus");
    /* a bad flag fails even when a good file precedes it */
    path = write_conf("good.conf", "local-cores = 2\n");
    ck_assert_int_eq(load(&cfg, &err, "--config", path, "--http-threads=0", NULL), -1);
    ck_assert_str_eq(err.field, "http-threads");
}
END_TEST

static const struct {
    const char *listen;
    const char *host;    /* NULL: rejected */
    int port;
} listen_cases[] = {
    { "127.0.0.1:8750", "127.0.0.1", 8750 },
    { "0.0.0.0:0", "0.0.0.0", 0 },               /* port 0 picks a free one */
    { "127.0.0.1:65535", "127.0.0.1", 65535 },
    /* names are not looked up: qtaud binds a numeric address */
    { "localhost:8750", NULL, 0 },
    { "h:1", NULL, 0 },
    { "127.0.0.1.5:1", NULL, 0 },
    { "[127.0.0.1]:1", NULL, 0 },
    { "[::1]:9000", "::1", 9000 },
    { "[::]:0", "::", 0 },
    { "8750", NULL, 0 },
    { "", NULL, 0 },
    { ":8750", NULL, 0 },
    { "[]:8750", NULL, 0 },
    { "127.0.0.1:", NULL, 0 },
    { "127.0.0.1:65536", NULL, 0 },
    { "127.0.0.1:-1", NULL, 0 },
    { "127.0.0.1:-0", NULL, 0 },
    { "127.0.0.1:+80", NULL, 0 },
    { "127.0.0.1: 80", NULL, 0 },
    { "127.0.0.1:80 ", NULL, 0 },
    { "127.0.0.1:abc", NULL, 0 },
    { "127.0.0.1:80x", NULL, 0 },
    { "127.0.0.1:0x50", NULL, 0 },
    { "127.0.0.1:99999999999999999999", NULL, 0 },
    /* 64 characters of host: one too many for listen_host */
    { "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh:1", NULL, 0 },
};

START_TEST(test_conf_listen)
{
    struct qtaud_config cfg;
    struct qt_error err;
    char flag[128];
    int rc;

    clear_qtaud_env();
    snprintf(flag, sizeof(flag), "--listen=%s", listen_cases[_i].listen);
    rc = load(&cfg, &err, flag, NULL);
    if (listen_cases[_i].host) {
        ck_assert_msg(rc == 0, "'%s' rejected: %s", listen_cases[_i].listen,
                      err.message);
        ck_assert_str_eq(cfg.listen_host, listen_cases[_i].host);
        ck_assert_int_eq(cfg.listen_port, listen_cases[_i].port);
    } else {
        ck_assert_msg(rc == -1, "'%s' accepted as %s port %d", listen_cases[_i].listen,
                      cfg.listen_host, cfg.listen_port);
        assert_arg_error(&err, "listen", "listen", listen_cases[_i].listen);
    }
}
END_TEST

/* A range in an error reads as written: 1073741824, not 1.07374e+09. */
START_TEST(test_conf_range_message)
{
    struct qtaud_config cfg;
    struct qt_error err;

    clear_qtaud_env();
    ck_assert_int_eq(load(&cfg, &err, "--max-body=-1", NULL), -1);
    ck_assert_msg(strstr(err.message, "from 1024 to 1073741824") != NULL, "%s", err.message);
    ck_assert_int_eq(load(&cfg, &err, "--slurm-poll=0", NULL), -1);
    ck_assert_msg(strstr(err.message, "from 0.1 to 600") != NULL, "%s", err.message);
}
END_TEST

START_TEST(test_conf_listen_max_host)
{
    struct qtaud_config cfg;
    struct qt_error err;
    /* the longest text an address has (INET6_ADDRSTRLEN - 1) fits */
    const char *host = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    char flag[128];

    ck_assert_uint_eq(strlen(host), 45);
    ck_assert_uint_lt(strlen(host), sizeof(cfg.listen_host));
    clear_qtaud_env();
    snprintf(flag, sizeof(flag), "--listen=[%s]:80", host);
    ck_assert_int_eq(load(&cfg, &err, flag, NULL), 0);
    ck_assert_str_eq(cfg.listen_host, host);
}
END_TEST

START_TEST(test_conf_usage)
{
    static const char *const flags[] = {
        "--listen", "--state-dir", "--config", "--local-cores", "--no-local-pilot",
        "--log-level", "--allow-root", "--help", "--version",
    };
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(f);
    config_usage(f);
    fclose(f);
    for (size_t i = 0; i < NELEM(flags); i++)
        ck_assert_msg(strstr(text, flags[i]) != NULL, "--help lacks %s", flags[i]);
    free(text);
}
END_TEST

/* ---- runner ------------------------------------------------------------- */


/* ---- jsoncheck: the limits every request body passes -------------------- */

static const struct jsoncheck_limits test_lim = { 4, 8, 6, 0 };

static const struct {
    const char *json;
    int ok;
    const char *field;      /* on refusal; "" for none */
} jsoncheck_cases[] = {
    { "{\"a\": [[1]]}", 1, "" },
    { "{\"a\": [[[1]]]}", 1, "" },                   /* depth 4: the limit */
    { "{\"a\": [[[[1]]]]}", 0, "a" },                /* 5 */
    { "[{\"a\": {\"b\": {\"c\": {}}}}]", 0, "[0].a.b.c" },
    { "{\"s\": \"12345678\"}", 1, "" },             /* 8 bytes: the limit */
    { "{\"s\": \"123456789\"}", 0, "s" },
    { "{\"s\": \"\\u00e9\\u00e9\\u00e9\\u00e9x\"}", 0, "s" },   /* 9 bytes UTF-8 */
    { "{\"o\": {\"k\": \"a\\u0000\"}}", 0, "o.k" },
    { "[\"ok\", {\"c\": [\"x\", \"\\u0000\"]}]", 0, "[1].c" },
    { "\"\\u0000\"", 0, "" },
    { "{\"abcdef\": 1}", 1, "" },                    /* 6-byte key: the limit */
    { "{\"abcdefg\": 1}", 0, "" },
    { "{\"o\": {\"abcdefg\": 1}}", 0, "o" },
    { "[[[[\"x\"]]]]", 1, "" },
    { "[[[[[]]]]]", 0, "[0]" },
};

START_TEST(test_jsoncheck_value)
{
    struct qt_error err = { 0 };
    json_t *v = json_loads(jsoncheck_cases[_i].json, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                           NULL);
    int rc;

    ck_assert_ptr_nonnull(v);
    rc = jsoncheck_value(v, &test_lim, &err);
    ck_assert_msg((rc == 0) == (jsoncheck_cases[_i].ok == 1), "%s: rc %d (%s)",
                  jsoncheck_cases[_i].json, rc, err.message);
    if (rc < 0) {
        ck_assert_int_eq(err.status, 400);
        ck_assert_str_eq(err.field, jsoncheck_cases[_i].field);
        ck_assert(err.message[0]);
    }
    json_decref(v);
}
END_TEST

/* A key holding a NUL cannot come from the parser (jansson refuses it),
 * but it can be built; the walk must still refuse it rather than let the
 * part before the NUL pass for a known field. */
START_TEST(test_jsoncheck_nul_key)
{
#if JANSSON_VERSION_HEX >= 0x020e00
    struct qt_error err = { 0 };
    json_t *o = json_object(), *inner = json_object();

    json_object_setn_new(inner, "A\0B", 3, json_string("x"));
    json_object_set_new(o, "env", inner);
    ck_assert_int_eq(jsoncheck_value(o, &(struct jsoncheck_limits){ 32, 64, 64, 0 }, &err),
                     -1);
    ck_assert_str_eq(err.field, "env");
    ck_assert_ptr_nonnull(strstr(err.message, "NUL"));
    json_object_setn_new(o, "name\0x", 6, json_integer(1));
    json_object_del(o, "env");
    ck_assert_int_eq(jsoncheck_value(o, &(struct jsoncheck_limits){ 32, 64, 64, 0 }, &err),
                     -1);
    ck_assert_str_eq(err.field, "name");
    json_decref(o);
#endif
}
END_TEST

/* The depth scan counts brackets outside strings only, and refuses before
 * jansson builds anything. */
/* The scan counts what jansson would build (commas and containers
 * outside strings) and refuses more than max_items with a 413. */
START_TEST(test_jsoncheck_item_bound)
{
    const struct jsoncheck_limits lim = { 32, 64, 64, 4 };
    static const char quoted[] = "[\",,,,,,\", \"[[{{\"]";
    struct qt_error err;

    ck_assert_int_eq(jsoncheck_scan("[1,2,3]", 7, &lim, &err), 0);          /* 3 */
    ck_assert_int_eq(jsoncheck_scan("[1,2,3,4]", 9, &lim, &err), 0);        /* 4 */
    ck_assert_int_eq(jsoncheck_scan("[1,2,3,4,5]", 11, &lim, &err), -1);    /* 5 */
    ck_assert_int_eq(err.status, 413);
    ck_assert_str_eq(err.code, "payload_too_large");
    ck_assert_int_eq(jsoncheck_scan("[[],{},[]]", 10, &lim, &err), -1);     /* 6 */
    ck_assert_int_eq(jsoncheck_scan(quoted, strlen(quoted), &lim, &err), 0);
    ck_assert_int_eq(jsoncheck_scan("[1,2,3,4,5]", 11,
                                    &(struct jsoncheck_limits){ 32, 64, 64, 0 }, &err), 0);
}
END_TEST

START_TEST(test_jsoncheck_depth_scan)
{
    struct qt_error err = { 0 };
    char deep[20001];
    static const char quoted[] = "[\"[[[[[[[[\\\"[[[[[[[[[[\"]";

    ck_assert_int_eq(jsoncheck_depth(quoted, strlen(quoted), 2, &err), 0);
    ck_assert_int_eq(jsoncheck_depth("[[]]", 4, 2, &err), 0);
    ck_assert_int_eq(jsoncheck_depth("[[[]]]", 6, 2, &err), -1);
    ck_assert_str_eq(err.code, "invalid_json");
    ck_assert_int_eq(jsoncheck_depth("]]]][[", 6, 2, &err), 0);  /* jansson's */
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\0';
    ck_assert_ptr_null(jsoncheck_load(deep, 20000,
                                      &(struct jsoncheck_limits){ 32, 64, 64, 0 }, &err));
    ck_assert_int_eq(err.status, 400);
    ck_assert_ptr_null(jsoncheck_load("", 0, &(struct jsoncheck_limits){ 32, 64, 64, 0 },
                                      &err));
    ck_assert_ptr_nonnull(strstr(err.message, "empty"));
}
END_TEST

static Suite *units_suite(void)
{
    Suite *s = suite_create("units");
    TCase *tc;

    tc = tcase_create("enums");
    tcase_add_loop_test(tc, test_enum_round_trip, 0, (int)NELEM(all_enums));
    tcase_add_loop_test(tc, test_enum_unique, 0, (int)NELEM(all_enums));
    tcase_add_test(tc, test_enum_expected_names);
    tcase_add_test(tc, test_enum_terminal);
    tcase_add_loop_test(tc, test_enum_unknown, 0, (int)NELEM(all_enums));
    suite_add_tcase(s, tc);

    tc = tcase_create("error");
    tcase_add_test(tc, test_error_helpers);
    tcase_add_test(tc, test_error_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("jsoncheck");
    tcase_add_loop_test(tc, test_jsoncheck_value, 0, (int)NELEM(jsoncheck_cases));
    tcase_add_test(tc, test_jsoncheck_nul_key);
    tcase_add_test(tc, test_jsoncheck_depth_scan);
    tcase_add_test(tc, test_jsoncheck_item_bound);
    suite_add_tcase(s, tc);

    tc = tcase_create("csv");
    tcase_add_test(tc, test_csv_round_trip);
    tcase_add_test(tc, test_csv_write_form);
    tcase_add_loop_test(tc, test_csv_read_cases, 0, (int)NELEM(csv_reads));
    tcase_add_loop_test(tc, test_csv_malformed, 0, (int)NELEM(csv_malformed));
    tcase_add_test(tc, test_csv_malformed_second);
    suite_add_tcase(s, tc);

    tc = tcase_create("timeutil");
    tcase_add_test(tc, test_time_format);
    tcase_add_test(tc, test_time_parse);
    tcase_add_loop_test(tc, test_time_parse_garbage, 0, (int)NELEM(time_garbage));
    tcase_add_test(tc, test_time_clocks);
    suite_add_tcase(s, tc);

    tc = tcase_create("buf");
    tcase_add_test(tc, test_buf_growth);
    tcase_add_test(tc, test_buf_addf);
    tcase_add_test(tc, test_buf_detach);
    suite_add_tcase(s, tc);

    tc = tcase_create("task_spec");
    tcase_add_test(tc, test_task_forms);
    tcase_add_test(tc, test_task_defaults);
    tcase_add_test(tc, test_task_all_fields);
    tcase_add_loop_test(tc, test_task_errors, 0, (int)NELEM(task_errors));
    tcase_add_test(tc, test_task_limits);
    tcase_add_loop_test(tc, test_task_to_json, 0, (int)NELEM(task_round_trips));
    suite_add_tcase(s, tc);

    tc = tcase_create("pilot_spec");
    tcase_add_test(tc, test_pilot_valid);
    tcase_add_loop_test(tc, test_pilot_absent_slurm_fields, 0,
                        (int)NELEM(pilot_absent_slurm));
    tcase_add_loop_test(tc, test_pilot_errors, 0, (int)NELEM(pilot_errors));
    tcase_add_test(tc, test_pilot_to_json);
    tcase_add_test(tc, test_pilot_name_valid);
    suite_add_tcase(s, tc);

    tc = tcase_create("conf");
    tcase_add_unchecked_fixture(tc, conf_dir_setup, conf_dir_teardown);
    tcase_add_test(tc, test_conf_defaults);
    tcase_add_test(tc, test_conf_file);
    tcase_add_test(tc, test_conf_precedence);
    tcase_add_loop_test(tc, test_conf_errors, 0, (int)NELEM(conf_errors));
    tcase_add_test(tc, test_conf_file_syntax);
    tcase_add_loop_test(tc, test_conf_listen, 0, (int)NELEM(listen_cases));
    tcase_add_test(tc, test_conf_listen_max_host);
    tcase_add_test(tc, test_conf_range_message);
    tcase_add_test(tc, test_conf_usage);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(units_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
