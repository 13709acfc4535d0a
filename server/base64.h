/* base64.h - RFC 4648 base64 (standard alphabet) for images sent inside
 * JSON: POST /predict {"image": "..."} and v2 BYTES tensors.
 *
 *   uint8_t *out = malloc(srv_b64_decoded_max(len));
 *   size_t n;
 *   if (srv_b64_decode(text, len, out, &n) < 0) ... not base64 ...
 *
 * Decoding is strict: only A-Z a-z 0-9 + /, padding '=' only at the end
 * (it may be left out, as many encoders do), no whitespace, and the unused
 * low bits of the last character must be zero, so one byte string has one
 * encoding. Nothing allocates; callers size buffers with the _max helpers.
 */
#ifndef SERVER_BASE64_H
#define SERVER_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound on the bytes decoded from len characters. */
size_t srv_b64_decoded_max(size_t len);

/* Characters srv_b64_encode writes for len bytes (padding included, no
 * NUL), or 0 when that would overflow size_t. */
size_t srv_b64_encoded_len(size_t len);

/* Decodes len characters into out (at least srv_b64_decoded_max(len)
 * bytes); *outlen receives the byte count. Returns 0, or -1 when in is not
 * valid base64 (out then holds garbage). in and out must not overlap. */
int srv_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen);

/* Encodes len bytes into out (srv_b64_encoded_len(len) characters, no NUL
 * added). Returns the number of characters written. */
size_t srv_b64_encode(const uint8_t *in, size_t len, char *out);

#endif
