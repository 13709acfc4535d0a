/* buf.c - see buf.h. */
#include "buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_buf_init(srv_buf *b, char *storage, size_t cap)
{
    b->data = storage;
    b->cap = storage ? cap : 0;
    b->len = 0;
    b->owned = 0;
    b->oom = 0;
    if (b->data && b->cap)
        b->data[0] = '\0';
}

void srv_buf_free(srv_buf *b)
{
    if (b->owned)
        free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->owned = 0;
}

int srv_buf_reserve(srv_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (extra > (size_t)-1 / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p;
    if (b->owned) {
        p = realloc(b->data, cap);
    } else {
        p = malloc(cap);
        if (p && b->len)
            memcpy(p, b->data, b->len);
    }
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    b->owned = 1;
    b->data[b->len] = '\0';
    return 0;
}

void srv_buf_append(srv_buf *b, const char *s, size_t n)
{
    if (srv_buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_append(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    va_list ap;
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n >= room) {
        /* Did not fit: grow and format again. */
        if (srv_buf_reserve(b, (size_t)n) < 0)
            return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void srv_buf_json_str(srv_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    srv_buf_append(b, "\"", 1);
    const char *run = s;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        srv_buf_append(b, run, (size_t)(p - run));
        char esc[7] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        srv_buf_append(b, esc, n);
        run = p + 1;
    }
    srv_buf_puts(b, run);
    srv_buf_append(b, "\"", 1);
}

void srv_buf_json_float(srv_buf *b, double v)
{
    if (!isfinite(v))
        v = 0;
    /* 9 significant digits round-trip any float; values here are floats. */
    srv_buf_printf(b, "%.9g", v);
}

char *srv_buf_detach(srv_buf *b, size_t *len)
{
    if (b->oom)
        return NULL;
    if (!b->owned && srv_buf_reserve(b, b->cap + 1) < 0)
        return NULL;
    if (!b->data && srv_buf_reserve(b, 0) < 0)
        return NULL;
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    b->owned = 0;
    return p;
}
