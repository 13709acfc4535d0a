/* sha256.h - SHA-256 (FIPS 180-4), used to fingerprint weights files in
 * GET /v1/models so a client can tell exactly which file answered.
 *
 *   srv_sha256_ctx c; srv_sha256_init(&c);
 *   srv_sha256_update(&c, data, len);   // any number of times
 *   srv_sha256_final(&c, digest);       // 32 bytes
 *
 * Not constant-time and not meant for secrets: it hashes public files.
 */
#ifndef SERVER_SHA256_H
#define SERVER_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t nbytes; /* total message length so far */
    uint8_t block[64];
    size_t fill; /* bytes waiting in block */
} srv_sha256_ctx;

void srv_sha256_init(srv_sha256_ctx *c);
void srv_sha256_update(srv_sha256_ctx *c, const void *data, size_t len);
void srv_sha256_final(srv_sha256_ctx *c, uint8_t digest[32]);

/* One-shot helper: lowercase hex digest (64 chars + NUL) of a buffer. */
void srv_sha256_hex(const void *data, size_t len, char hex[65]);

/* Hex digest of a whole file. Returns 0, or -1 with err filled when the file
 * cannot be opened or read. */
int srv_sha256_file(const char *path, char hex[65], char *err, size_t errlen);

#endif
