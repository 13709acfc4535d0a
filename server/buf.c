/* buf.c - see buf.h. */
#include "server/buf.h"

#include <math.h>
#include <stdint.h>
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
    if (b->data && b->cap) b->data[0] = '\0';
}

void srv_buf_free(srv_buf *b)
{
    if (b->owned) free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->owned = 0;
}

int srv_buf_reserve(srv_buf *b, size_t extra)
{
    if (b->oom) return -1;
    if (extra > (size_t)-1 / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *p;
    if (b->owned) {
        p = realloc(b->data, cap);
    } else {
        p = malloc(cap);
        if (p && b->len) memcpy(p, b->data, b->len);
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
    if (srv_buf_reserve(b, n) < 0) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_append(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...)
{
    if (b->oom) return;
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
        if (srv_buf_reserve(b, (size_t)n) < 0) return;
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
        if (c >= 0x20 && c != '"' && c != '\\') continue;
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

/* Writes v in [1e-38, 1) with 9 significant digits (enough for any float)
 * into out; returns the length. printf("%.9g") costs about as much as a
 * small model's whole forward pass for ten numbers, hence this. */
static size_t fmt_unit(char *out, double v)
{
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int e = (int)floor(log10(v)); /* v = m * 10^e, 1 <= m < 10 */
    double m = v;
    for (int k = -e; k > 0; k -= 22) m *= p10[k > 22 ? 22 : k];
    uint64_t d = (uint64_t)llround(m * 1e8); /* 9 significant digits */
    if (d >= 1000000000u) {                  /* m rounded up to 10 */
        d /= 10;
        e++;
    }
    if (d < 100000000u) { /* log10 rounded down a power too far */
        d = (uint64_t)llround(m * 1e9);
        e--;
    }
    char dig[10];
    for (int i = 8; i >= 0; i--, d /= 10) dig[i] = (char)('0' + d % 10);
    int nd = 9;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    size_t o = 0;
    if (e >= 0) { /* rounded up to 1 */
        out[o++] = '1';
    } else if (e >= -5) { /* 0.000ddd: plain decimal */
        out[o++] = '0';
        out[o++] = '.';
        for (int i = -1; i > e; i--) out[o++] = '0';
        memcpy(out + o, dig, (size_t)nd);
        o += (size_t)nd;
    } else { /* d.ddde-XX */
        out[o++] = dig[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, dig + 1, (size_t)nd - 1);
            o += (size_t)nd - 1;
        }
        o += (size_t)sprintf(out + o, "e-%d", -e);
    }
    return o;
}

void srv_buf_json_float(srv_buf *b, double v)
{
    if (!isfinite(v)) v = 0;
    if (v > 1e-38 && v < 1) {
        char tmp[32];
        srv_buf_append(b, tmp, fmt_unit(tmp, v));
        return;
    }
    /* 9 significant digits round-trip any float; values here are floats. */
    srv_buf_printf(b, "%.9g", v);
}

char *srv_buf_detach(srv_buf *b, size_t *len)
{
    if (b->oom) return NULL;
    if (!b->owned && srv_buf_reserve(b, b->cap + 1) < 0) return NULL;
    if (!b->data && srv_buf_reserve(b, 0) < 0) return NULL;
    char *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    b->owned = 0;
    return p;
}
