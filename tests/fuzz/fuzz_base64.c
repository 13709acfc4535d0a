/* fuzz_base64.c - srv_b64_decode and srv_b64_encode.
 *
 * Invariants: decoding writes at most srv_b64_decoded_max(len) bytes; what
 * decodes re-encodes to the input (padding aside: it may be left out) and
 * decodes again to the same bytes (one encoding per byte string); any
 * bytes encode to srv_b64_encoded_len characters that decode back. */
#include "fuzz.h"
#include "server/base64.h"

#include <string.h>

static size_t unpadded(const char *s, size_t n)
{
    while (n && s[n - 1] == '=') n--;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t max = srv_b64_decoded_max(size);
    uint8_t *out = malloc(max ? max : 1);
    size_t n = (size_t)-1;
    if (!out) abort();
    if (srv_b64_decode(in, size, out, &n) == 0) {
        FUZZ_CHECK(n <= max);
        size_t el = srv_b64_encoded_len(n);
        char *enc = malloc(el ? el : 1);
        if (!enc) abort();
        FUZZ_CHECK(srv_b64_encode(out, n, enc) == el);
        FUZZ_CHECK(unpadded(enc, el) == unpadded(in, size));
        FUZZ_CHECK(memcmp(enc, in, unpadded(in, size)) == 0);
        free(enc);
    }
    free(out);
    /* The other direction, for any bytes. */
    size_t el = srv_b64_encoded_len(size);
    char *enc = malloc(el ? el : 1);
    uint8_t *dec = malloc(size ? size : 1);
    if (!enc || !dec) abort();
    FUZZ_CHECK(srv_b64_encode(data, size, enc) == el);
    FUZZ_CHECK(el % 4 == 0);
    FUZZ_CHECK(srv_b64_decoded_max(el) >= size);
    size_t m = 0;
    FUZZ_CHECK(srv_b64_decode(enc, el, dec, &m) == 0);
    FUZZ_CHECK(m == size && memcmp(dec, data, size) == 0);
    free(enc);
    free(dec);
    return 0;
}
