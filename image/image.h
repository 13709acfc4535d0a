/* image.h - PNG decoding to 8-bit gray and MNIST-style preprocessing.
 *
 * No HTTP and no neural-net code here: the server, mnist-predict and the
 * tests call these two steps, then hand the 28x28 floats to nn/.
 *
 *   bytes --img_png_decode--> gray 8-bit w x h (alpha composited)
 *         --img_prep_mnist--> 28x28 floats 0..1, ink bright on dark,
 *                              digit fitted to 20x20, centre of mass centred
 *         --img_prep_fit-->   28x28 floats 0..1, object's longer side 28 px,
 *                              bounding box centred (Fashion-MNIST framing)
 *
 * Which of the two a model wants is its weights metadata's "preprocess"
 * ("mnist" or "fit"); callers pass that string to img_prep_by_name, so the
 * choice lives in one place without image/ knowing about nn/.
 *
 * Errors: functions return an img_status (the serving pipeline maps it to
 * the project's one code set, pipe_status); on failure a one-line message is
 * written into err (errlen bytes, always NUL-terminated). Nothing here
 * prints, exits or aborts on untrusted input.
 */
#ifndef IMAGE_IMAGE_H
#define IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    IMG_OK = 0,
    IMG_ERR_NOT_PNG,   /* signature missing: not a PNG at all        -> 400 */
    IMG_ERR_CORRUPT,   /* a PNG libpng rejects (CRC, zlib, chunks)   -> 400 */
    IMG_ERR_TOO_LARGE, /* width/height/pixels/chunks over the limits -> 413 */
    IMG_ERR_BLANK,     /* decoded, but no ink at all                 -> 422 */
    IMG_ERR_NOMEM,     /* allocation failed                          -> 500 */
    IMG_ERR_ARG        /* caller's mistake (unknown prep mode)       -> 500 */
} img_status;

typedef struct {
    uint32_t max_width;       /* default 8192                                 */
    uint32_t max_height;      /* default 8192                                 */
    uint64_t max_pixels;      /* width*height, default 16777216 (4096^2)      */
    uint32_t max_chunk_cache; /* ancillary chunks kept, default 128           */
    uint64_t max_chunk_bytes; /* largest chunk libpng will allocate, 1 MiB    */
} img_limits;

/* Fills lim with the defaults above. */
void img_limits_default(img_limits *lim);

/* Decodes a PNG held in memory (len bytes) into 8-bit gray.
 * Any colour type and bit depth, palette, tRNS, 16-bit, interlaced.
 * Alpha is composited over a white background when the colour channels
 * carry the drawing (e.g. black strokes with alpha); when every pixel has
 * the same colour and only alpha varies (canvas exports), alpha itself is
 * the ink. Width, height and pixel count are checked against lim before any
 * image buffer is allocated.
 * On IMG_OK, *out is a malloc'ed w*h buffer (row-major) the caller frees.
 *
 * Details: gray = Rec. 601 luma of RGB (gray input is kept exactly); 16-bit
 * samples are rounded to 8; gAMA/iCCP are ignored. "Same colour" means the
 * luma of pixels with alpha >= 64 spans at most 32 levels; alpha ink is then
 * written as 255 - alpha (dark on white, like black strokes over paper).
 * Any non-IDAT chunk longer than max_chunk_bytes -> IMG_ERR_TOO_LARGE;
 * text, ICC and unknown chunks are skipped unread, so a small zTXt that
 * inflates to gigabytes costs nothing. Bad CRC in a critical chunk, bad
 * zlib data and truncation anywhere up to IEND -> IMG_ERR_CORRUPT; a bad
 * CRC in an ancillary chunk only drops that chunk. lim may be NULL
 * (defaults); err may be NULL. Thread-safe: no global state. */
img_status img_png_decode(const uint8_t *buf, size_t len, const img_limits *lim, uint8_t **out,
                          uint32_t *w, uint32_t *h, char *err, size_t errlen);

/* MNIST-style preprocessing of a gray image into out[28*28] in 0..1:
 * polarity (the digit becomes light on dark), crop to the ink's bounding
 * box, scale the longer side to 20 px keeping aspect ratio with area
 * averaging, place in 28x28, shift the centre of mass to the centre.
 * A true 28x28 MNIST image comes through essentially unchanged.
 * Returns IMG_ERR_BLANK when there is no ink.
 *
 * Details (see prep.c): background = median of the border ring; ink = the
 * distance from it towards the ink side; box = pixels above 10% of the
 * strongest ink; area-averaged to 20 px, then scaled so the strongest
 * pixel is 1.0; integer shift putting the centre of mass at (14, 14) in
 * pixel-index coordinates (where MNIST's own digits sit, within 0.5 px).
 * A 28x28 input whose ink box is 12..20 px is only centred, not rescaled
 * or renormalised: all 10000 MNIST test digits come out as value/255
 * exactly, and so do their inverted (black on white) versions. Blank means
 * under 8 gray levels of contrast. */
img_status img_prep_mnist(const uint8_t *gray, uint32_t w, uint32_t h, float out[784], char *err,
                          size_t errlen);

/* Fashion-MNIST-style preprocessing into out[28*28] in 0..1: the same
 * polarity and blank detection as img_prep_mnist, crop to the ink's
 * bounding box, scale the longer side to 28 px keeping aspect ratio (same
 * area averaging, strongest pixel renormalised to 1.0), centre the box in
 * 28x28. No centre-of-mass shift: Fashion-MNIST centred its products by
 * bounding box and let them fill the frame.
 * A 28x28 input whose ink box is already 24..28 px is only centred by box
 * (halves keep it in place), not rescaled: real Fashion-MNIST images come
 * through as value/255. Returns IMG_ERR_BLANK when there is no ink. */
img_status img_prep_fit(const uint8_t *gray, uint32_t w, uint32_t h, float out[784], char *err,
                        size_t errlen);

/* Dispatches on a model's preprocessing name: "mnist" -> img_prep_mnist,
 * "fit" -> img_prep_fit. Any other mode (or NULL) -> IMG_ERR_ARG with a
 * message and out zeroed; loaders validate the name first, so at serving
 * time this is a programming error, not a client one. */
img_status img_prep_by_name(const char *mode, const uint8_t *gray, uint32_t w, uint32_t h,
                            float out[784], char *err, size_t errlen);

/* ---- encoding (tests, fixture tools, debugging dumps) -------------------- */

/* What img_png_encode writes. Samples are given unpacked, one uint16_t per
 * channel per pixel (row-major, channels interleaved), each in
 * 0..(2^bit_depth - 1); for palette images a sample is the palette index.
 * color_type uses the PNG numbers: 0 gray, 2 rgb, 3 palette, 4 gray+alpha,
 * 6 rgba; bit_depth must be one PNG allows for that colour type. */
typedef struct {
    uint32_t width, height;
    int color_type;
    int bit_depth;
    int interlace; /* 0 none, 1 Adam7 */
    const uint16_t *samples;
    const uint8_t *palette; /* palette_len RGB triples (type 3)        */
    int palette_len;
    const uint8_t *trns; /* palette alpha, trns_len entries         */
    int trns_len;
    const char *text_key; /* optional text chunk (NULL: none)        */
    const char *text;
    int text_compressed; /* 1: zTXt, 0: tEXt                        */
} img_png_spec;

/* Encodes spec into a malloc'ed PNG (*png, *len), which the caller frees.
 * Returns IMG_ERR_CORRUPT (with a message) for an invalid spec. */
img_status img_png_encode(const img_png_spec *spec, uint8_t **png, size_t *len, char *err,
                          size_t errlen);

#endif
