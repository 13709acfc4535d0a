/* web.h - the drawing page: the files in web/, embedded into the server at
 * build time, served at GET / and GET /NAME with the headers a page needs.
 *
 *   // build/gen/web_files.c (scripts/embed-web.sh) defines srv_web_files[]
 *   srv_web *w = srv_web_create(srv_web_files, srv_web_nfiles, err, n);
 *   const srv_web_asset *a = srv_web_find(w, "/");      // web/index.html
 *   if (srv_web_etag_match(if_none_match_header, a->etag)) -> 304
 *   else 200 with a->ctype, a->data/a->len, ETag a->etag and every
 *        srv_web_headers[i] (security and caching)
 *   srv_web_free(w);
 *
 * The files are few and small; a linear search is all lookup needs. ETags
 * are computed once at start-up from the content (SHA-256), so they change
 * exactly when a rebuilt server carries a different file.
 */
#ifndef SERVER_WEB_H
#define SERVER_WEB_H

#include <stddef.h>

/* One embedded file: its base name (e.g. "app.js") and bytes. */
typedef struct {
    const char *name;
    const char *data;
    size_t len;
} srv_web_file;

/* build/gen/web_files.c: every file of web/, sorted by name. */
extern const srv_web_file srv_web_files[];
extern const size_t srv_web_nfiles;

typedef struct {
    char path[72];     /* URL path: "/" for index.html, else "/NAME" */
    const char *ctype; /* with charset for text types                */
    const char *data;  /* the embedded bytes, not owned              */
    size_t len;
    char etag[24]; /* strong: '"' + 20 hex digits of SHA-256 + '"' */
} srv_web_asset;

typedef struct srv_web srv_web;

/* Builds the asset table for n files (which must outlive it). A name must
 * be 1..63 characters of [A-Za-z0-9._-] and index.html must be present.
 * NULL with a one-line err otherwise, or when out of memory. */
srv_web *srv_web_create(const srv_web_file *files, size_t n, char *err, size_t errlen);
void srv_web_free(srv_web *w);

/* The asset for a URL path ("/" is index.html), or NULL. */
const srv_web_asset *srv_web_find(const srv_web *w, const char *path);

/* Content type for a file name by its extension; text types say utf-8,
 * unknown ones are application/octet-stream. */
const char *srv_web_content_type(const char *name);

/* 1 when an If-None-Match header value (NULL: absent) matches etag under
 * the weak comparison RFC 9110 asks for: "*", or any entity tag in the
 * comma-separated list equal to etag once a "W/" prefix is ignored. */
int srv_web_etag_match(const char *if_none_match, const char *etag);

/* Headers every page response carries besides Content-Type and ETag
 * (also on 304): Content-Security-Policy (scripts and styles only from
 * this server, no inline code; fetch only to this server; images from
 * here or data:/blob: URLs, which the page makes itself), nosniff,
 * Referrer-Policy and Cache-Control. */
#define SRV_WEB_NHEADERS 4
extern const char *const srv_web_headers[SRV_WEB_NHEADERS][2];

#endif
