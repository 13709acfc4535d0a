/* fuzz_png.c - img_png_decode, then both preprocessings of what it decodes.
 *
 * Invariants: a decoded image is within the limits given (width, height
 * and pixel count) and non-empty; a failure names itself in err and
 * allocates nothing; img_prep_mnist and img_prep_fit either answer
 * IMG_ERR_BLANK or write 784 finite values in [0, 1] with the strongest
 * pixel 1 (both renormalise, unless the 28x28 pass-through applies). */
#include "fuzz.h"
#include "image/image.h"

#include <math.h>
#include <string.h>

static void check_prep(img_status st, const float *out, const char *err)
{
    FUZZ_CHECK(st == IMG_OK || st == IMG_ERR_BLANK);
    if (st != IMG_OK) {
        FUZZ_CHECK(fuzz_msg_ok(err, 256));
        return;
    }
    float mx = 0;
    for (int i = 0; i < 784; i++) {
        FUZZ_CHECK(isfinite(out[i]) && out[i] >= 0.0f && out[i] <= 1.0f);
        if (out[i] > mx) mx = out[i];
    }
    FUZZ_CHECK(mx > 0.0f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Smaller than the server's limits so big-but-legal images do not eat
     * the run; the limit checks are the same code either way. */
    img_limits lim;
    img_limits_default(&lim);
    lim.max_width = 2048;
    lim.max_height = 2048;
    lim.max_pixels = 1u << 20;
    uint8_t *gray = NULL;
    uint32_t w = 0, h = 0;
    char err[256];
    memset(err, 0, sizeof err);
    img_status st = img_png_decode(data, size, &lim, &gray, &w, &h, err, sizeof err);
    if (st != IMG_OK) {
        FUZZ_CHECK(gray == NULL);
        FUZZ_CHECK(st == IMG_ERR_NOT_PNG || st == IMG_ERR_CORRUPT || st == IMG_ERR_TOO_LARGE ||
                   st == IMG_ERR_NOMEM);
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        return 0;
    }
    FUZZ_CHECK(gray != NULL);
    FUZZ_CHECK(w >= 1 && h >= 1 && w <= lim.max_width && h <= lim.max_height);
    FUZZ_CHECK((uint64_t)w * h <= lim.max_pixels);
    /* Every byte of the image was written (MSan would say so; here reading
     * all of it at least lets ASan see the buffer is w*h long). */
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) sum += gray[i];
    (void)sum;
    float out[784];
    st = img_prep_mnist(gray, w, h, out, err, sizeof err);
    check_prep(st, out, err);
    img_status st2 = img_prep_fit(gray, w, h, out, err, sizeof err);
    check_prep(st2, out, err);
    /* Both share the blank test: they agree on whether there is ink. */
    FUZZ_CHECK((st == IMG_ERR_BLANK) == (st2 == IMG_ERR_BLANK));
    FUZZ_CHECK(img_prep_by_name("mnist", gray, w, h, out, err, sizeof err) == st);
    free(gray);
    return 0;
}
