/*
 * csv.h - RFC 4180 fields: a field holding a comma, quote, CR or LF is
 * quoted and its quotes doubled; rows end in CRLF.  Also a reader, used by
 * the tests and tools to prove the round trip.
 */
#ifndef QT_CSV_H
#define QT_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* Appends one field (s may be NULL: empty), preceded by a comma unless
 * first. */
void csv_field(struct buf *b, const char *s, bool first);
void csv_end_row(struct buf *b);

/* Parses one record starting at *pos in data[0..len).  Fields are returned
 * as malloc'd strings in *fields (a malloc'd array of *nfields); *pos moves
 * past the record.  Returns 1 for a record, 0 at end of input, -1 for
 * malformed input (an unterminated quote, a quote inside an unquoted field,
 * or junk after a closing quote). */
int csv_read_record(const char *data, size_t len, size_t *pos,
                    char ***fields, size_t *nfields);
void csv_free_record(char **fields, size_t nfields);

#endif
