/* multipart.c - see multipart.h. Layout parsed (RFC 2046 5.1.1):
 *   [preamble] "--" B [LWSP] CRLF  headers CRLF CRLF  data
 *   CRLF "--" B [LWSP] CRLF  headers ...  CRLF "--" B "--" [epilogue]
 */
#include "server/multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int srv_multipart_boundary(const char *ct, char *out, size_t outlen)
{
    /* Find the "boundary" parameter after the media type. */
    const char *p = strchr(ct, ';');
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t') p++;
        if (strncasecmp(p, "boundary=", 9) == 0) {
            p += 9;
            size_t n;
            if (*p == '"') {
                p++;
                const char *q = strchr(p, '"');
                if (!q) return -1;
                n = (size_t)(q - p);
            } else {
                n = strcspn(p, "; \t");
            }
            if (n == 0 || n > 70 || n >= outlen) return -1;
            memcpy(out, p, n);
            out[n] = '\0';
            return 0;
        }
        p = strchr(p, ';');
    }
    return -1;
}

/* Value of parameter key (e.g. "name") in a Content-Disposition value,
 * matched only as a whole parameter so "filename" never matches "name". */
static int disposition_param(const char *v, size_t vlen, const char *key, const char **val,
                             size_t *val_len)
{
    size_t klen = strlen(key);
    const char *end = v + vlen, *p = v;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        if (!semi) return -1;
        p = semi + 1;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if ((size_t)(end - p) > klen && strncasecmp(p, key, klen) == 0 && p[klen] == '=') {
            p += klen + 1;
            if (p < end && *p == '"') {
                p++;
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (!q) return -1;
                *val = p;
                *val_len = (size_t)(q - p);
            } else {
                const char *q = p;
                while (q < end && *q != ';' && *q != ' ' && *q != '\t') q++;
                *val = p;
                *val_len = (size_t)(q - p);
            }
            return 0;
        }
    }
    return -1;
}

/* Parses the part headers in [h, hend) and says whether the part's field
 * name equals field. Returns 1 (match), 0 (other field), -1 (malformed). */
static int part_is_field(const char *h, const char *hend, const char *field)
{
    int found = 0, match = 0;
    while (h < hend) {
        const char *eol = memmem(h, (size_t)(hend - h), "\r\n", 2);
        const char *lend = eol ? eol : hend;
        const char *colon = memchr(h, ':', (size_t)(lend - h));
        if (!colon) return -1;
        if ((size_t)(colon - h) == 19 && strncasecmp(h, "Content-Disposition", 19) == 0) {
            const char *v = colon + 1, *name;
            size_t nlen;
            if (disposition_param(v, (size_t)(lend - v), "name", &name, &nlen) < 0) return -1;
            found = 1;
            match = nlen == strlen(field) && memcmp(name, field, nlen) == 0;
        }
        h = eol ? eol + 2 : hend;
    }
    return found ? match : -1;
}

int srv_multipart_parse(const uint8_t *body, size_t len, const char *boundary, const char *field,
                        srv_part *parts, int max_parts, int *nparts, char *err, size_t errlen)
{
    char delim[SRV_BOUNDARY_MAX + 8];
    size_t blen = strlen(boundary);
    *nparts = 0;
    if (blen == 0 || blen > SRV_BOUNDARY_MAX) {
        snprintf(err, errlen, "multipart boundary missing or too long");
        return SRV_MP_MALFORMED;
    }
    /* delim = CRLF "--" boundary; the first one may lack the CRLF. */
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, blen);
    size_t dlen = blen + 4;

    const char *b = (const char *)body, *end = b + len, *p;
    if (len >= dlen - 2 && memcmp(b, delim + 2, dlen - 2) == 0)
        p = b + dlen - 2;
    else {
        const char *d = memmem(b, len, delim, dlen);
        if (!d) {
            snprintf(err, errlen, "multipart body does not contain the boundary");
            return SRV_MP_MALFORMED;
        }
        p = d + dlen;
    }
    for (int index = 1;; index++) {
        /* p is just past a delimiter: "--" ends the body, else CRLF. */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return SRV_MP_OK;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            snprintf(err, errlen, "multipart part %d: malformed boundary line", index);
            return SRV_MP_MALFORMED;
        }
        p += 2;
        const char *hend;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p; /* no headers at all */
        } else {
            hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (!hend) {
                snprintf(err, errlen,
                         "multipart part %d: headers not "
                         "terminated",
                         index);
                return SRV_MP_MALFORMED;
            }
        }
        int m = part_is_field(p, hend, field);
        if (m < 0) {
            snprintf(err, errlen,
                     "multipart part %d: missing or malformed "
                     "Content-Disposition",
                     index);
            return SRV_MP_MALFORMED;
        }
        const char *data = hend + (hend == p ? 2 : 4);
        const char *d = memmem(data, (size_t)(end - data), delim, dlen);
        if (!d) {
            snprintf(err, errlen,
                     "multipart part %d: closing boundary missing "
                     "(truncated body?)",
                     index);
            return SRV_MP_MALFORMED;
        }
        if (m == 1) {
            if (*nparts >= max_parts) {
                snprintf(err, errlen, "more than %d '%s' parts", max_parts, field);
                return SRV_MP_TOO_MANY;
            }
            parts[*nparts].data = (const uint8_t *)data;
            parts[*nparts].len = (size_t)(d - data);
            (*nparts)++;
        }
        p = d + dlen;
    }
}
