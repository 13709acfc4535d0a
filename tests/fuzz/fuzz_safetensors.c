/* fuzz_safetensors.c - nn_st_parse, the safetensors container.
 *
 * Invariants on success (what safetensors.h promises): every tensor's
 * bytes lie in the data block, nbytes = nelem * element size, nelem is
 * the product of the shape, tensors are sorted by offset, do not overlap
 * and cover the data block with no gaps; names and metadata are
 * NUL-terminated strings nn_st_find/nn_st_meta find again. */
#include "fuzz.h"
#include "nn/safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    char err[256] = "";
    nn_st_file *f = nn_st_parse(buf, size, err, sizeof err); /* owns buf */
    if (!f) {
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        return 0;
    }
    FUZZ_CHECK(f->len == size);
    FUZZ_CHECK(f->data >= f->buf && f->data <= f->buf + f->len);
    FUZZ_CHECK(f->data_len == (uint64_t)(f->buf + f->len - f->data));
    const uint8_t *next = f->data;
    for (int i = 0; i < f->ntensors; i++) {
        const nn_st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->name != NULL);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= NN_ST_MAX_DIMS);
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->shape[d] >= 0);
            n *= (uint64_t)t->shape[d];
        }
        FUZZ_CHECK(n == t->nelem);
        FUZZ_CHECK(t->nbytes == t->nelem * (t->dtype == NN_ST_F32 ? 4u : 8u));
        FUZZ_CHECK(t->data == next);
        FUZZ_CHECK(t->nbytes <= (uint64_t)(f->data + f->data_len - t->data));
        next = t->data + t->nbytes;
        FUZZ_CHECK(nn_st_find(f, t->name) != NULL);
    }
    FUZZ_CHECK(next == f->data + f->data_len);
    for (int i = 0; i < f->nmeta; i++) {
        FUZZ_CHECK(f->meta_keys[i] && f->meta_vals[i]);
        FUZZ_CHECK(nn_st_meta(f, f->meta_keys[i]) != NULL);
    }
    nn_st_free(f);
    return 0;
}
