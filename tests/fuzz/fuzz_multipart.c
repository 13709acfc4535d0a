/* fuzz_multipart.c - srv_multipart_boundary and srv_multipart_parse.
 *
 * Input: the Content-Type value, a newline, then the body (as the server
 * gets them from a client). Invariants: a boundary is 1..70 bytes and
 * appears in the Content-Type; parts lie inside the body, in order,
 * without overlapping; no more parts than asked for are stored; the
 * count stored is the same whatever max_parts is, up to max_parts; a
 * failure has a message. */
#include "fuzz.h"
#include "server/multipart.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 512 ? size : 512);
    if (!nl) return 0;
    char *ct = fuzz_cstr(data, (size_t)(nl - data));
    const uint8_t *body0 = nl + 1;
    size_t len = size - (size_t)(body0 - data);
    /* A private copy, so ASan sees reads past the body's end. */
    uint8_t *body = malloc(len ? len : 1);
    if (!body) abort();
    memcpy(body, body0, len);
    char bnd[SRV_BOUNDARY_MAX + 1];
    if (srv_multipart_boundary(ct, bnd, sizeof bnd) == 0) {
        size_t bl = strlen(bnd);
        FUZZ_CHECK(bl >= 1 && bl <= 70);
        FUZZ_CHECK(strstr(ct, bnd) != NULL);
        enum { MAX = 8 };
        srv_part parts[MAX];
        int n = -1, n1 = -1;
        char err[256] = "";
        int rc = srv_multipart_parse(body, len, bnd, "image", parts, MAX, &n, err, sizeof err);
        FUZZ_CHECK(rc == SRV_MP_OK || rc == SRV_MP_MALFORMED || rc == SRV_MP_TOO_MANY);
        if (rc != SRV_MP_OK) FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        if (rc == SRV_MP_OK) {
            FUZZ_CHECK(n >= 0 && n <= MAX);
            const uint8_t *prev = body;
            for (int i = 0; i < n; i++) {
                FUZZ_CHECK(parts[i].data >= prev);
                FUZZ_CHECK(parts[i].len <= len);
                FUZZ_CHECK(parts[i].data + parts[i].len <= body + len);
                prev = parts[i].data + parts[i].len;
            }
            /* The same body asked for one part finds the same first one. */
            srv_part one;
            int rc1 = srv_multipart_parse(body, len, bnd, "image", &one, 1, &n1, err, sizeof err);
            /* The parser reads in order, so it meets the second part
             * before anything that made the first parse fail. */
            if (n <= 1)
                FUZZ_CHECK(rc1 == SRV_MP_OK && n1 == n);
            else
                FUZZ_CHECK(rc1 == SRV_MP_TOO_MANY && n1 == 1);
            if (n >= 1) FUZZ_CHECK(one.data == parts[0].data && one.len == parts[0].len);
        }
    }
    free(body);
    free(ct);
    return 0;
}
