/* buf.h - a growable text buffer and the few JSON-writing helpers the
 * server's hot path needs (cJSON is used where speed does not matter).
 *
 *   srv_buf b; srv_buf_init(&b, stack, sizeof stack);  // starts in caller memory
 *   srv_buf_printf(&b, "{\"n\":%d}", 3);
 *   ... use b.data / b.len ...
 *   srv_buf_free(&b);    // frees only what the buffer itself allocated
 *
 * On allocation failure the buffer sets b.oom and ignores further writes;
 * callers check b.oom once at the end instead of after every append.
 */
#ifndef SERVER_BUF_H
#define SERVER_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *data; /* always NUL-terminated while !oom */
    size_t len, cap;
    int owned; /* data was malloc'ed by the buffer */
    int oom;
} srv_buf;

/* Starts with caller storage (may be NULL/0: the first write allocates). */
void srv_buf_init(srv_buf *b, char *storage, size_t cap);
void srv_buf_free(srv_buf *b);
/* Makes sure cap >= len + extra + 1. Returns 0, or -1 (and sets oom). */
int srv_buf_reserve(srv_buf *b, size_t extra);
void srv_buf_append(srv_buf *b, const char *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included; control characters
 * escaped, bytes >= 0x80 passed through (callers supply UTF-8). */
void srv_buf_json_str(srv_buf *b, const char *s);
/* Appends a float as a JSON number that parses back to the same float
 * (non-finite values are written as 0, JSON has no NaN). */
void srv_buf_json_float(srv_buf *b, double v);
/* Hands the data to the caller as a malloc'ed string (copying it out of
 * caller storage if needed) and resets the buffer. NULL on oom. */
char *srv_buf_detach(srv_buf *b, size_t *len);

#endif
