/* web.c - see web.h. */
#include "server/web.h"

#include "server/config.h"
#include "server/sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_web {
    size_t n;
    srv_web_asset a[];
};

/* The URLs are not fingerprinted, so a browser may keep a copy but must
 * ask again (a 304 costs one round trip and no body). */
const char *const srv_web_headers[SRV_WEB_NHEADERS][2] = {
    {"Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"Cache-Control", "no-cache"},
};

const char *srv_web_content_type(const char *name)
{
    static const struct {
        const char *ext, *ctype;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".svg", "image/svg+xml; charset=utf-8"},
                 {".png", "image/png"},
                 {".txt", "text/plain; charset=utf-8"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0) return types[i].ctype;
    return "application/octet-stream";
}

srv_web *srv_web_create(const srv_web_file *files, size_t n, char *err, size_t errlen)
{
    srv_web *w = malloc(sizeof *w + n * sizeof w->a[0]);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->n = n;
    int have_index = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = files[i].name;
        srv_web_asset *a = &w->a[i];
        /* Same alphabet as model names: nothing a URL would escape. */
        if (!srv_config_valid_name(name) || name[0] == '.') {
            snprintf(err, errlen,
                     "page file name '%s': use letters, digits, "
                     "'.', '_' and '-', not starting with '.'",
                     name);
            free(w);
            return NULL;
        }
        if (strcmp(name, "index.html") == 0) {
            have_index = 1;
            strcpy(a->path, "/");
        } else {
            snprintf(a->path, sizeof a->path, "/%s", name);
        }
        a->ctype = srv_web_content_type(name);
        a->data = files[i].data;
        a->len = files[i].len;
        char hex[65];
        srv_sha256_hex(a->data, a->len, hex);
        snprintf(a->etag, sizeof a->etag, "\"%.20s\"", hex);
    }
    if (!have_index) {
        snprintf(err, errlen, "the page has no index.html");
        free(w);
        return NULL;
    }
    return w;
}

void srv_web_free(srv_web *w) { free(w); }

const srv_web_asset *srv_web_find(const srv_web *w, const char *path)
{
    if (!w || !path) return NULL;
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->a[i].path, path) == 0) return &w->a[i];
    return NULL;
}

int srv_web_etag_match(const char *inm, const char *etag)
{
    if (!inm) return 0;
    size_t elen = strlen(etag);
    const char *p = inm;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) return 0;
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *q = end;
        while (q > p && (q[-1] == ' ' || q[-1] == '\t')) q--;
        if (q - p == 1 && *p == '*') return 1;
        if (q - p > 2 && p[0] == 'W' && p[1] == '/') p += 2;
        if ((size_t)(q - p) == elen && memcmp(p, etag, elen) == 0) return 1;
        p = end;
    }
}
