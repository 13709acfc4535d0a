/* log.c - see log.h. */
#include "server/log.h"
#include "server/buf.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_json;
/* Request ids: a per-process random base plus a counter, mixed. Set once in
 * srv_log_init before any thread starts. */
static uint64_t reqid_base;
static atomic_uint_fast64_t reqid_counter;
static const char *level_name[] = {"debug", "info", "warn", "error"};

static uint64_t mix64(uint64_t z);

void srv_log_init(int json)
{
    struct timespec t;
    log_json = json;
    clock_gettime(CLOCK_REALTIME, &t);
    reqid_base = mix64(((uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec) ^
                       ((uint64_t)getpid() << 40));
}

static void timestamp(char out[32])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

static void emit(srv_buf *b)
{
    srv_buf_append(b, "\n", 1);
    if (b->oom) return;
    const char *p = b->data;
    size_t left = b->len;
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, p, left);
        if (n <= 0) return; /* nowhere to report a failing stderr */
        p += n;
        left -= (size_t)n;
    }
}

void srv_log(srv_level lvl, const char *fmt, ...)
{
    char msg[1024], ts[32], store[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    timestamp(ts);
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    if (log_json) {
        srv_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_name[lvl]);
        srv_buf_json_str(&b, msg);
        srv_buf_puts(&b, "}");
    } else {
        srv_buf_printf(&b, "%s %s %s", ts, level_name[lvl], msg);
    }
    emit(&b);
    srv_buf_free(&b);
}

void srv_log_sanitize(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 1 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if (c > 0x20 && c < 0x7f && c != '%' && c != '"' && c != '\\') {
            out[o++] = (char)c;
        } else {
            if (o + 4 > outlen) break;
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

void srv_log_access(const srv_access *a)
{
    char ts[32], path[256], store[768];
    timestamp(ts);
    srv_log_sanitize(a->path ? a->path : "", path, sizeof path);
    srv_buf b;
    srv_buf_init(&b, store, sizeof store);
    /* method, rid and model are validated or ours; path is sanitised. */
    if (log_json) {
        srv_buf_printf(&b,
                       "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"access\","
                       "\"method\":\"%s\",\"path\":\"%s\",\"status\":%d,"
                       "\"bytes\":%llu,\"us\":%llu,\"request_id\":\"%s\"",
                       ts, a->method, path, a->status, (unsigned long long)a->bytes,
                       (unsigned long long)a->us, a->rid);
        if (a->model)
            srv_buf_printf(&b, ",\"model\":\"%s\",\"model_version\":%d", a->model,
                           a->model_version);
        if (a->note) srv_buf_printf(&b, ",\"note\":\"%s\"", a->note);
        srv_buf_puts(&b, "}");
    } else {
        srv_buf_printf(&b,
                       "%s info access method=%s path=%s status=%d bytes=%llu "
                       "us=%llu rid=%s",
                       ts, a->method, path, a->status, (unsigned long long)a->bytes,
                       (unsigned long long)a->us, a->rid);
        if (a->model) srv_buf_printf(&b, " model=%s model_version=%d", a->model, a->model_version);
        if (a->note) srv_buf_printf(&b, " note=%s", a->note);
    }
    emit(&b);
    srv_buf_free(&b);
}

int srv_reqid_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\' || n >= SRV_REQID_MAX) return 0;
    }
    return n > 0;
}

static uint64_t mix64(uint64_t z)
{
    /* splitmix64 finaliser: a bijection, so distinct inputs never collide. */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void srv_reqid_generate(char *out)
{
    uint64_t n = atomic_fetch_add_explicit(&reqid_counter, 1, memory_order_relaxed);
    snprintf(out, 17, "%016llx", (unsigned long long)mix64(reqid_base + n));
}
