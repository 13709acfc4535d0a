/* multipart.h - multipart/form-data (RFC 7578) over a body held in memory.
 *
 * The server collects the whole body (bounded by --body-limit) and then
 * finds the parts in place: part data points into the body, nothing is
 * copied.
 *
 *   char bnd[SRV_BOUNDARY_MAX];
 *   if (srv_multipart_boundary(content_type, bnd, sizeof bnd) == 0) {
 *       srv_part parts[64]; int n;
 *       int rc = srv_multipart_parse(body, len, bnd, "image", parts, 64, &n,
 *                                    err, sizeof err);
 *   }
 */
#ifndef SERVER_MULTIPART_H
#define SERVER_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define SRV_BOUNDARY_MAX 200

typedef struct {
    const uint8_t *data; /* points into the body */
    size_t len;
} srv_part;

enum {
    SRV_MP_OK = 0,
    SRV_MP_MALFORMED = -1, /* not valid multipart: err says where       */
    SRV_MP_TOO_MANY = -2   /* more than max_parts parts named field     */
};

/* Extracts the boundary parameter of a multipart Content-Type value
 * (quoted or not). Returns 0, or -1 when absent, empty or too long. */
int srv_multipart_boundary(const char *content_type, char *out, size_t outlen);

/* Finds every part whose Content-Disposition name is field, in order, and
 * stores up to max_parts of them. Other parts are skipped. *nparts receives
 * the count stored. Returns SRV_MP_OK, SRV_MP_MALFORMED or SRV_MP_TOO_MANY
 * (err filled for both failures). */
int srv_multipart_parse(const uint8_t *body, size_t len, const char *boundary, const char *field,
                        srv_part *parts, int max_parts, int *nparts, char *err, size_t errlen);

#endif
