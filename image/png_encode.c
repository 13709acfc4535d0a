/* png_encode.c - unpacked samples -> PNG in memory, any colour type and bit
 * depth. Used by tests and fixture tools, so it favours clarity and full
 * coverage of the format over speed. */
#include "image/image.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    png_structp png;
    png_infop info;
    uint8_t *buf; /* growing output */
    size_t len, cap;
    uint8_t *packed; /* whole image, packed as PNG rows */
    png_bytep *rowp;
    char msg[160];
    int nomem;
} enc_state;

static void enc_error(png_structp png, png_const_charp msg)
{
    enc_state *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void enc_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void enc_write(png_structp png, png_bytep data, size_t n)
{
    enc_state *e = png_get_io_ptr(png);
    if (n > e->cap - e->len) {
        size_t cap = e->cap ? e->cap : 4096;
        while (cap - e->len < n) {
            if (cap > SIZE_MAX / 2) {
                e->nomem = 1;
                png_error(png, "PNG output too large");
            }
            cap *= 2;
        }
        uint8_t *nb = realloc(e->buf, cap);
        if (!nb) {
            e->nomem = 1;
            png_error(png, "out of memory growing the PNG output");
        }
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, data, n);
    e->len += n;
}

static void enc_flush(png_structp png) { (void)png; }

static void enc_errf(char *err, size_t errlen, const char *msg, const char *detail)
{
    if (err && errlen) snprintf(err, errlen, "%s%s", msg, detail ? detail : "");
}

static int channels_of(int ctype)
{
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    }
    return 0;
}

static int depth_ok(int ctype, int depth)
{
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
        return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case PNG_COLOR_TYPE_PALETTE: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_GRAY_ALPHA:
    case PNG_COLOR_TYPE_RGB_ALPHA: return depth == 8 || depth == 16;
    }
    return 0;
}

static int encode_protected(enc_state *e, const img_png_spec *s, int ch, size_t rowbytes)
{
    if (setjmp(png_jmpbuf(e->png))) return -1;
    png_set_write_fn(e->png, e, enc_write, enc_flush);
    png_set_IHDR(e->png, e->info, s->width, s->height, s->bit_depth, s->color_type,
                 s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        for (int i = 0; i < s->palette_len; i++) {
            pal[i].red = s->palette[3 * i];
            pal[i].green = s->palette[3 * i + 1];
            pal[i].blue = s->palette[3 * i + 2];
        }
        png_set_PLTE(e->png, e->info, pal, s->palette_len);
        if (s->trns && s->trns_len > 0) png_set_tRNS(e->png, e->info, s->trns, s->trns_len, NULL);
    }
    if (s->text_key && s->text) {
        png_text t;
        memset(&t, 0, sizeof t);
        t.compression = s->text_compressed ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE;
        t.key = (png_charp)s->text_key;
        t.text = (png_charp)s->text;
        t.text_length = strlen(s->text);
        png_set_text(e->png, e->info, &t, 1);
    }

    /* Pack samples MSB first (depth < 8) or big-endian (depth 16). */
    for (uint32_t y = 0; y < s->height; y++) {
        uint8_t *row = e->packed + rowbytes * y;
        memset(row, 0, rowbytes);
        const uint16_t *src = s->samples + (size_t)y * s->width * ch;
        size_t nsamp = (size_t)s->width * ch;
        for (size_t i = 0; i < nsamp; i++) {
            unsigned v = src[i] & ((1u << s->bit_depth) - 1u);
            if (s->bit_depth == 16) {
                row[2 * i] = (uint8_t)(v >> 8);
                row[2 * i + 1] = (uint8_t)v;
            } else if (s->bit_depth == 8) {
                row[i] = (uint8_t)v;
            } else {
                size_t bit = i * s->bit_depth;
                row[bit / 8] |= (uint8_t)(v << (8 - s->bit_depth - bit % 8));
            }
        }
        e->rowp[y] = row;
    }
    png_set_rows(e->png, e->info, e->rowp);
    png_write_png(e->png, e->info, PNG_TRANSFORM_IDENTITY, NULL);
    return 0;
}

img_status img_png_encode(const img_png_spec *s, uint8_t **png, size_t *len, char *err,
                          size_t errlen)
{
    *png = NULL;
    *len = 0;
    int ch = channels_of(s->color_type);
    if (!ch || !depth_ok(s->color_type, s->bit_depth) || s->width == 0 || s->height == 0 ||
        !s->samples ||
        (s->color_type == PNG_COLOR_TYPE_PALETTE &&
         (!s->palette || s->palette_len < 1 || s->palette_len > 256 ||
          s->trns_len > s->palette_len))) {
        char what[96];
        snprintf(what, sizeof what, "type %d, depth %d, %ux%u", s->color_type, s->bit_depth,
                 (unsigned)s->width, (unsigned)s->height);
        enc_errf(err, errlen, "invalid PNG spec: ", what);
        return IMG_ERR_CORRUPT;
    }
    size_t rowbytes = ((size_t)s->width * ch * s->bit_depth + 7) / 8;

    enc_state e;
    memset(&e, 0, sizeof e);
    e.packed = malloc(rowbytes * s->height);
    e.rowp = malloc(sizeof *e.rowp * s->height);
    e.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e, enc_error, enc_warning);
    if (e.png) e.info = png_create_info_struct(e.png);
    img_status st = IMG_OK;
    if (!e.packed || !e.rowp || !e.png || !e.info) {
        enc_errf(err, errlen, "out of memory encoding a PNG", NULL);
        st = IMG_ERR_NOMEM;
    } else if (encode_protected(&e, s, ch, rowbytes) != 0) {
        enc_errf(err, errlen, "cannot encode PNG: ", e.msg);
        st = e.nomem ? IMG_ERR_NOMEM : IMG_ERR_CORRUPT;
    }
    png_destroy_write_struct(e.png ? &e.png : NULL, e.info ? &e.info : NULL);
    free(e.packed);
    free(e.rowp);
    if (st != IMG_OK) {
        free(e.buf);
        return st;
    }
    *png = e.buf;
    *len = e.len;
    return IMG_OK;
}
