/* log.h - log lines on stderr (text or JSON, one write(2) per line so lines
 * from different threads never interleave) and request ids.
 *
 *   srv_log_init(json);
 *   srv_log(SRV_INFO, "listening on http://%s:%d", host, port);
 *   srv_log_access(&entry);    // one line per request
 */
#ifndef SERVER_LOG_H
#define SERVER_LOG_H

#include <stddef.h>
#include <stdint.h>

#define SRV_REQID_MAX 128

typedef enum { SRV_DEBUG, SRV_INFO, SRV_WARN, SRV_ERROR } srv_level;

/* json != 0: each line is a JSON object {"ts","level","msg",...}. */
void srv_log_init(int json);

void srv_log(srv_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct {
    const char *method, *path; /* path: untrusted, sanitised on output */
    int status;                /* 0 when no response was sent          */
    uint64_t bytes;            /* response body bytes                   */
    uint64_t us;               /* first byte handled to completion      */
    const char *rid;           /* request id                            */
    const char *model;         /* may be NULL                           */
    int model_version;         /* the model's version (with model)      */
    const char *note;          /* may be NULL, e.g. "client_closed"     */
} srv_access;

void srv_log_access(const srv_access *a);

/* A client's X-Request-Id is echoed only when it is 1..128 printable
 * non-space ASCII characters (0x21..0x7e) without '"' or '\'. */
int srv_reqid_valid(const char *s);

/* A fresh id: 16 lowercase hex characters, unique within the process and
 * unlikely to repeat across restarts. out holds at least 17 bytes. */
void srv_reqid_generate(char *out);

/* Copies at most outlen-1 bytes of s, percent-encoding every byte outside
 * 0x21..0x7e and '%', '"', '\' so untrusted text cannot forge log lines. */
void srv_log_sanitize(const char *s, char *out, size_t outlen);

#endif
