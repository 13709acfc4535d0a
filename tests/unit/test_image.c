/* test_image.c - PNG decoding (every colour type, depth, interlace, alpha
 * rule, hostile files) and MNIST-style preprocessing.
 *
 * PNGs are made in memory with img_png_encode, or byte by byte where the
 * test needs a file libpng would refuse to write (bad CRC, bombs). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "image/image.h"
#include "pipeline/pipeline.h"

/* ---- helpers -------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void bytes_put(bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void chunk(bytes *b, const char *type, const uint8_t *data, uint32_t n)
{
    uint8_t hdr[8];
    put32(hdr, n);
    memcpy(hdr + 4, type, 4);
    bytes_put(b, hdr, 8);
    if (n) bytes_put(b, data, n);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, n);
    uint8_t c[4];
    put32(c, (uint32_t)crc);
    bytes_put(b, c, 4);
}

static void sig_ihdr(bytes *b, uint32_t w, uint32_t h, int depth, int ctype)
{
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    bytes_put(b, sig, 8);
    uint8_t ihdr[13] = {0};
    put32(ihdr, w);
    put32(ihdr + 4, h);
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = (uint8_t)ctype;
    chunk(b, "IHDR", ihdr, 13);
}

/* w x h 8-bit gray, every pixel 0, deflated row by row so that the pixel
 * data never exists in memory: a decompression bomb. */
static bytes make_bomb(uint32_t w, uint32_t h)
{
    bytes b = {0};
    sig_ihdr(&b, w, h, 8, 0);
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit(&z, 9), Z_OK);
    uint8_t *row = calloc(1, (size_t)w + 1); /* filter byte 0 + zeros */
    uint8_t out[65536];
    assert_non_null(row);
    for (uint32_t y = 0; y < h; y++) {
        z.next_in = row;
        z.avail_in = w + 1;
        int flush = y + 1 == h ? Z_FINISH : Z_NO_FLUSH;
        do {
            z.next_out = out;
            z.avail_out = sizeof out;
            int r = deflate(&z, flush);
            assert_true(r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR);
            uint32_t got = (uint32_t)(sizeof out - z.avail_out);
            if (got) chunk(&b, "IDAT", out, got);
        } while (z.avail_out == 0);
    }
    deflateEnd(&z);
    free(row);
    chunk(&b, "IEND", NULL, 0);
    return b;
}

static void encode(const img_png_spec *s, uint8_t **png, size_t *len)
{
    char err[200];
    img_status st = img_png_encode(s, png, len, err, sizeof err);
    if (st != IMG_OK) fail_msg("encode: %s", err);
}

/* Decodes and expects success. */
static uint8_t *decode(const uint8_t *png, size_t len, uint32_t *w, uint32_t *h)
{
    char err[200];
    uint8_t *g = NULL;
    img_status st = img_png_decode(png, len, NULL, &g, w, h, err, sizeof err);
    if (st != IMG_OK) fail_msg("decode: %s (%s)", pipe_status_name(pipe_status_from_img(st)), err);
    return g;
}

static img_status decode_status(const uint8_t *png, size_t len, const img_limits *lim, char *err,
                                size_t errlen)
{
    uint8_t *g = (uint8_t *)1;
    uint32_t w = 7, h = 7;
    img_status st = img_png_decode(png, len, lim, &g, &w, &h, err, errlen);
    if (st != IMG_OK) {
        assert_null(g);
        assert_int_equal(w, 0);
        assert_int_equal(h, 0);
        assert_true(strlen(err) > 0);
    } else {
        free(g);
    }
    return st;
}

static uint8_t luma(unsigned r, unsigned g, unsigned b)
{
    return (uint8_t)((299 * r + 587 * g + 114 * b + 500) / 1000);
}

static uint8_t over_white(unsigned v, unsigned a)
{
    return (uint8_t)((v * a + 255 * (255 - a) + 127) / 255);
}

/* Peak resident set size of this process in KiB (Linux), to show that a
 * bomb was refused before anything image-sized was allocated and touched. */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1) break;
    fclose(f);
    return v;
}

/* ---- decoding: colour types and depths ------------------------------------ */

#define TW 19 /* odd sizes exercise partial bytes and Adam7 edges */
#define TH 13

/* A deterministic pattern in 0..max. */
static unsigned pat(uint32_t x, uint32_t y, unsigned max, unsigned salt)
{
    return (x * 7 + y * 13 + x * y * 3 + salt) % (max + 1);
}

static void check_gray_depth(int depth, int interlace)
{
    unsigned max = (1u << depth) - 1;
    uint16_t s[TW * TH];
    for (uint32_t y = 0; y < TH; y++)
        for (uint32_t x = 0; x < TW; x++) s[y * TW + x] = (uint16_t)pat(x, y, max, 0);
    img_png_spec spec = {.width = TW,
                         .height = TH,
                         .color_type = 0,
                         .bit_depth = depth,
                         .interlace = interlace,
                         .samples = s};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    assert_int_equal(w, TW);
    assert_int_equal(h, TH);
    for (int i = 0; i < TW * TH; i++) {
        /* depth<=8 replicates bits; 16 -> 8 rounds v*255/65535 */
        unsigned want = depth == 16 ? (s[i] * 255u + 32767u) / 65535u : s[i] * 255u / max;
        if (g[i] != want)
            fail_msg("gray%d interlace %d pixel %d: got %u want %u", depth, interlace, i, g[i],
                     want);
    }
    free(g);
    free(png);
}

static void test_gray_all_depths(void **state)
{
    (void)state;
    const int depths[] = {1, 2, 4, 8, 16};
    for (int i = 0; i < 5; i++) {
        check_gray_depth(depths[i], 0);
        check_gray_depth(depths[i], 1);
    }
}

static void test_gray16_exact_levels(void **state)
{
    (void)state;
    /* v*257 is the 16-bit twin of v: must come back as exactly v */
    uint16_t s[256];
    for (int i = 0; i < 256; i++) s[i] = (uint16_t)(i * 257);
    img_png_spec spec = {.width = 256, .height = 1, .color_type = 0, .bit_depth = 16, .samples = s};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    for (int i = 0; i < 256; i++) assert_int_equal(g[i], i);
    free(g);
    free(png);
}

static void check_rgb(int depth, int interlace)
{
    unsigned max = (1u << depth) - 1;
    uint16_t s[TW * TH * 3];
    uint8_t want[TW * TH];
    for (uint32_t y = 0; y < TH; y++)
        for (uint32_t x = 0; x < TW; x++) {
            unsigned c[3];
            for (int k = 0; k < 3; k++) {
                c[k] = pat(x, y, 255, 50u * k);
                s[(y * TW + x) * 3 + k] = (uint16_t)(depth == 16 ? c[k] * 257 : c[k]);
            }
            if (x == 0) /* a gray column: exactly its value */
                for (int k = 0; k < 3; k++) {
                    c[k] = c[0];
                    s[(y * TW + x) * 3 + k] = (uint16_t)(depth == 16 ? c[0] * 257 : c[0]);
                }
            want[y * TW + x] = luma(c[0], c[1], c[2]);
        }
    (void)max;
    img_png_spec spec = {.width = TW,
                         .height = TH,
                         .color_type = 2,
                         .bit_depth = depth,
                         .interlace = interlace,
                         .samples = s};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    for (int i = 0; i < TW * TH; i++)
        if (g[i] != want[i]) fail_msg("rgb%d pixel %d: got %u want %u", depth, i, g[i], want[i]);
    for (uint32_t y = 0; y < TH; y++)
        assert_int_equal(g[y * TW], s[y * TW * 3] / (depth == 16 ? 257 : 1));
    free(g);
    free(png);
}

static void test_rgb(void **state)
{
    (void)state;
    check_rgb(8, 0);
    check_rgb(16, 0);
    check_rgb(8, 1);
    check_rgb(16, 1);
}

/* Coloured pixels with varying alpha: not a one-colour canvas, so alpha is
 * composited over white. */
static void check_alpha_composite(int ctype, int depth, int interlace)
{
    int ch = ctype == 4 ? 2 : 4;
    uint16_t s[TW * TH * 4];
    uint8_t want[TW * TH];
    unsigned mul = depth == 16 ? 257 : 1;
    for (uint32_t y = 0; y < TH; y++)
        for (uint32_t x = 0; x < TW; x++) {
            uint16_t *p = s + (y * TW + x) * ch;
            unsigned a = pat(x, y, 255, 11), v;
            if (ctype == 4) {
                v = pat(x, y, 255, 99);
                p[0] = (uint16_t)(v * mul);
            } else {
                unsigned r = pat(x, y, 255, 1), g = pat(x, y, 255, 77), b = pat(x, y, 255, 150);
                p[0] = (uint16_t)(r * mul);
                p[1] = (uint16_t)(g * mul);
                p[2] = (uint16_t)(b * mul);
                v = luma(r, g, b);
            }
            p[ch - 1] = (uint16_t)(a * mul);
            want[y * TW + x] = over_white(v, a);
        }
    img_png_spec spec = {.width = TW,
                         .height = TH,
                         .color_type = ctype,
                         .bit_depth = depth,
                         .interlace = interlace,
                         .samples = s};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    for (int i = 0; i < TW * TH; i++)
        if (abs((int)g[i] - (int)want[i]) > 1) /* luma then composite: +-1 */
            fail_msg("type %d depth %d pixel %d: got %u want %u", ctype, depth, i, g[i], want[i]);
    free(g);
    free(png);
}

static void test_alpha_composite(void **state)
{
    (void)state;
    check_alpha_composite(4, 8, 0);
    check_alpha_composite(4, 16, 0);
    check_alpha_composite(6, 8, 0);
    check_alpha_composite(6, 16, 0);
    check_alpha_composite(6, 8, 1);
}

static void test_opaque_alpha_is_plain(void **state)
{
    (void)state;
    /* alpha channel present but all 255: identical to the colour */
    uint16_t s[TW * TH * 2];
    for (int i = 0; i < TW * TH; i++) {
        s[2 * i] = (uint16_t)((i * 37) % 256);
        s[2 * i + 1] = 255;
    }
    img_png_spec spec = {.width = TW, .height = TH, .color_type = 4, .bit_depth = 8, .samples = s};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    for (int i = 0; i < TW * TH; i++) assert_int_equal(g[i], (i * 37) % 256);
    free(g);
    free(png);
}

static void check_palette(int depth, int with_trns, int interlace)
{
    int n = 1 << depth;
    uint8_t pal[256 * 3], trns[256];
    for (int i = 0; i < n; i++) {
        pal[3 * i] = (uint8_t)(i * 53 + 7);
        pal[3 * i + 1] = (uint8_t)(i * 101 + 3);
        pal[3 * i + 2] = (uint8_t)(i * 29 + 200);
        trns[i] = (uint8_t)(255 - i * 37);
    }
    trns[0] = 0;
    uint16_t s[TW * TH];
    for (uint32_t y = 0; y < TH; y++)
        for (uint32_t x = 0; x < TW; x++) s[y * TW + x] = (uint16_t)pat(x, y, (unsigned)n - 1, 5);
    img_png_spec spec = {.width = TW,
                         .height = TH,
                         .color_type = 3,
                         .bit_depth = depth,
                         .interlace = interlace,
                         .samples = s,
                         .palette = pal,
                         .palette_len = n,
                         .trns = with_trns ? trns : NULL,
                         .trns_len = with_trns ? n : 0};
    uint8_t *png;
    size_t len;
    encode(&spec, &png, &len);
    uint32_t w, h;
    uint8_t *g = decode(png, len, &w, &h);
    for (int i = 0; i < TW * TH; i++) {
        int k = s[i];
        uint8_t v = luma(pal[3 * k], pal[3 * k + 1], pal[3 * k + 2]);
        uint8_t want = with_trns ? over_white(v, trns[k]) : v;
        /* 1-bit with tRNS: one visible colour, alpha varies -> the
         * canvas rule applies and alpha is the ink */
        if (with_trns && depth == 1) want = (uint8_t)(255 - trns[k]);
        if (abs((int)g[i] - (int)want) > (with_trns ? 1 : 0))
            fail_msg("palette%d trns %d pixel %d: got %u want %u", depth, with_trns, i, g[i], want);
    }
    free(g);
    free(png);
}

static void test_palette(void **state)
{
    (void)state;
    const int depths[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++) {
        check_palette(depths[i], 0, 0);
        check_palette(depths[i], 1, 0);
        check_palette(depths[i], 0, 1);
    }
    check_palette(8, 1, 1);
}

static void test_gray_trns(void **state)
{
    (void)state;
    /* gray with a tRNS colour key: written by hand (the encoder API keeps
     * tRNS for palettes only). 4x1: 0 (transparent key), 0 .. */
    bytes b = {0};
    sig_ihdr(&b, 4, 1, 8, 0);
    uint8_t trns[2] = {0, 200}; /* gray 200 is transparent */
    chunk(&b, "tRNS", trns, 2);
    uint8_t raw[5] = {0, 200, 0, 100, 255};
    uint8_t z[64];
    uLongf zl = sizeof z;
    assert_int_equal(compress(z, &zl, raw, sizeof raw), Z_OK);
    chunk(&b, "IDAT", z, (uint32_t)zl);
    chunk(&b, "IEND", NULL, 0);
    uint32_t w, h;
    uint8_t *g = decode(b.p, b.len, &w, &h);
    /* 200 transparent -> white; the rest opaque; colours differ, so composite */
    assert_int_equal(g[0], 255);
    assert_int_equal(g[1], 0);
    assert_int_equal(g[2], 100);
    assert_int_equal(g[3], 255);
    free(g);
    free(b.p);
}

/* ---- alpha as ink ----------------------------------------------------------- */

/* Anti-aliased thick polyline rendering into a coverage map 0..1. */
typedef struct {
    float x0, y0, x1, y1;
} seg;

static float seg_dist(const seg *s, float px, float py)
{
    float dx = s->x1 - s->x0, dy = s->y1 - s->y0;
    float l2 = dx * dx + dy * dy;
    float t = l2 > 0 ? ((px - s->x0) * dx + (py - s->y0) * dy) / l2 : 0;
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    float ex = s->x0 + t * dx - px, ey = s->y0 + t * dy - py;
    return sqrtf(ex * ex + ey * ey);
}

/* Segments in unit coordinates (0..1) scaled to w x h; cov[i] in 0..1. */
static void render(float *cov, uint32_t w, uint32_t h, const seg *segs, int n, float thick)
{
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            float best = 1e9f;
            for (int i = 0; i < n; i++) {
                seg s = {segs[i].x0 * w, segs[i].y0 * h, segs[i].x1 * w, segs[i].y1 * h};
                float d = seg_dist(&s, x + 0.5f, y + 0.5f);
                if (d < best) best = d;
            }
            float c = thick / 2 + 0.5f - best;
            cov[y * w + x] = c < 0 ? 0 : c > 1 ? 1 : c;
        }
}

static const seg SEVEN[] = {
    {0.25f, 0.2f, 0.75f, 0.2f},
    {0.75f, 0.2f, 0.45f, 0.85f},
    {0.4f, 0.52f, 0.7f, 0.52f},
};

/* RGBA canvas export: stroke colour (r,g,b) with alpha = coverage; fully
 * transparent pixels carry colour bg_rgb (canvas exports vary: 0,0,0 or the
 * stroke colour). */
static uint8_t *canvas_png(unsigned r, unsigned g, unsigned b, unsigned bg_rgb, uint32_t w,
                           uint32_t h, size_t *len)
{
    float *cov = malloc(sizeof(float) * w * h);
    uint16_t *s = malloc(sizeof(uint16_t) * 4 * w * h);
    assert_non_null(cov);
    assert_non_null(s);
    render(cov, w, h, SEVEN, 3, w / 8.0f);
    for (uint32_t i = 0; i < w * h; i++) {
        unsigned a = (unsigned)lroundf(cov[i] * 255);
        s[4 * i] = (uint16_t)(a ? r : bg_rgb);
        s[4 * i + 1] = (uint16_t)(a ? g : bg_rgb);
        s[4 * i + 2] = (uint16_t)(a ? b : bg_rgb);
        s[4 * i + 3] = (uint16_t)a;
    }
    img_png_spec spec = {.width = w, .height = h, .color_type = 6, .bit_depth = 8, .samples = s};
    uint8_t *png;
    encode(&spec, &png, len);
    free(cov);
    free(s);
    return png;
}

static void test_canvas_alpha_is_ink(void **state)
{
    (void)state;
    const uint32_t W = 96, H = 96;
    size_t len;
    uint32_t w, h;
    uint8_t *ref = NULL;
    /* black, white (dark-mode canvas), blue strokes; transparent pixels
     * black or white: all must give the same dark-on-white picture */
    const unsigned cols[][4] = {
        {0, 0, 0, 0}, {255, 255, 255, 0}, {255, 255, 255, 255}, {30, 60, 220, 0}, {0, 0, 0, 255},
    };
    for (int c = 0; c < 5; c++) {
        uint8_t *png = canvas_png(cols[c][0], cols[c][1], cols[c][2], cols[c][3], W, H, &len);
        uint8_t *g = decode(png, len, &w, &h);
        free(png);
        assert_int_equal(g[0], 255); /* background white */
        int dark = 0;
        for (uint32_t i = 0; i < W * H; i++) dark += g[i] == 0;
        assert_true(dark > 200); /* strokes black */
        if (!ref) {
            ref = g;
        } else {
            assert_memory_equal(ref, g, W * H);
            free(g);
        }
    }
    free(ref);
}

static void test_canvas_white_strokes_through_prep(void **state)
{
    (void)state;
    size_t len;
    uint32_t w, h;
    char err[200];
    float a[784], b[784];
    uint8_t *p1 = canvas_png(255, 255, 255, 0, 200, 200, &len);
    uint8_t *g1 = decode(p1, len, &w, &h);
    assert_int_equal(img_prep_mnist(g1, w, h, a, err, sizeof err), IMG_OK);
    uint8_t *p2 = canvas_png(0, 0, 0, 0, 200, 200, &len);
    uint8_t *g2 = decode(p2, len, &w, &h);
    assert_int_equal(img_prep_mnist(g2, w, h, b, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(a[i], b[i], 1e-6);
    float mx = 0;
    for (int i = 0; i < 784; i++) mx = a[i] > mx ? a[i] : mx;
    assert_float_equal(mx, 1.0, 1e-6);
    assert_float_equal(a[0], 0.0, 1e-6);
    free(p1);
    free(g1);
    free(p2);
    free(g2);
}

/* ---- hostile input ----------------------------------------------------------- */

static uint8_t *small_png(size_t *len, int interlace, const char *text)
{
    uint16_t s[TW * TH * 3];
    for (int i = 0; i < TW * TH * 3; i++) s[i] = (uint16_t)((i * 31) % 256);
    img_png_spec spec = {.width = TW,
                         .height = TH,
                         .color_type = 2,
                         .bit_depth = 8,
                         .interlace = interlace,
                         .samples = s,
                         .text_key = text ? "Comment" : NULL,
                         .text = text};
    uint8_t *png;
    encode(&spec, &png, len);
    return png;
}

static void test_not_png_and_empty(void **state)
{
    (void)state;
    char err[200];
    const uint8_t text[] = "GIF89a this is not a PNG at all, no sir";
    assert_int_equal(decode_status(text, sizeof text, NULL, err, sizeof err), IMG_ERR_NOT_PNG);
    assert_int_equal(decode_status(text, 0, NULL, err, sizeof err), IMG_ERR_NOT_PNG);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(decode_status(NULL, 0, NULL, err, sizeof err), IMG_ERR_NOT_PNG);
    const uint8_t sig7[] = {137, 80, 78, 71, 13, 10, 26};
    assert_int_equal(decode_status(sig7, sizeof sig7, NULL, err, sizeof err), IMG_ERR_NOT_PNG);
    /* a bare signature is a PNG that ends immediately */
    const uint8_t sig8[] = {137, 80, 78, 71, 13, 10, 26, 10};
    assert_int_equal(decode_status(sig8, sizeof sig8, NULL, err, sizeof err), IMG_ERR_CORRUPT);
    /* NULL err buffer is allowed */
    uint8_t *g;
    uint32_t w, h;
    assert_int_equal(img_png_decode(text, sizeof text, NULL, &g, &w, &h, NULL, 0), IMG_ERR_NOT_PNG);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    char err[200];
    for (int variant = 0; variant < 3; variant++) {
        size_t len;
        uint8_t *png = small_png(&len, variant == 1, variant == 2 ? "a trailing comment" : NULL);
        for (size_t cut = 0; cut < len; cut++) {
            /* a fresh exact-size copy so ASan/valgrind see any over-read */
            uint8_t *copy = malloc(cut ? cut : 1);
            assert_non_null(copy);
            memcpy(copy, png, cut);
            img_status st = decode_status(copy, cut, NULL, err, sizeof err);
            img_status want = cut < 8 ? IMG_ERR_NOT_PNG : IMG_ERR_CORRUPT;
            if (st != want)
                fail_msg("variant %d cut at %zu of %zu: got %s (%s)", variant, cut, len,
                         pipe_status_name(pipe_status_from_img(st)), err);
            free(copy);
        }
        assert_int_equal(decode_status(png, len, NULL, err, sizeof err), IMG_OK);
        free(png);
    }
}

/* Offset of the first chunk of the given type, or 0. */
static size_t find_chunk(const uint8_t *png, size_t len, const char *type)
{
    size_t off = 8;
    while (off + 12 <= len) {
        uint32_t n = get32(png + off);
        if (memcmp(png + off + 4, type, 4) == 0) return off;
        off += 12 + (size_t)n;
    }
    return 0;
}

static void fix_crc(uint8_t *png, size_t off)
{
    uint32_t n = get32(png + off);
    put32(png + off + 8 + n, (uint32_t)crc32(0L, png + off + 4, 4 + n));
}

static void test_bad_crc(void **state)
{
    (void)state;
    char err[200];
    size_t len;
    /* critical chunks: error */
    const char *crit[] = {"IHDR", "IDAT", "IEND"};
    for (int i = 0; i < 3; i++) {
        uint8_t *png = small_png(&len, 0, NULL);
        size_t off = find_chunk(png, len, crit[i]);
        assert_true(off > 0);
        png[off + 8 + get32(png + off)] ^= 0x55; /* first CRC byte */
        assert_int_equal(decode_status(png, len, NULL, err, sizeof err), IMG_ERR_CORRUPT);
        assert_non_null(strstr(err, "CRC"));
        free(png);
    }
    /* ancillary chunk: libpng drops it with a warning, the image is fine */
    uint8_t *png = small_png(&len, 0, "hello");
    size_t off = find_chunk(png, len, "tEXt");
    assert_true(off > 0);
    png[off + 8] ^= 0x20;
    assert_int_equal(decode_status(png, len, NULL, err, sizeof err), IMG_OK);
    free(png);
}

static void test_bad_zlib(void **state)
{
    (void)state;
    char err[200];
    size_t len;
    for (int how = 0; how < 3; how++) {
        uint8_t *png = small_png(&len, 0, NULL);
        size_t off = find_chunk(png, len, "IDAT");
        uint32_t n = get32(png + off);
        uint8_t *d = png + off + 8;
        if (how == 0) {
            d[0] = 0x00; /* bad zlib header */
            d[1] = 0x00;
        } else if (how == 1) {
            for (uint32_t i = 2; i < n; i++) /* garbage deflate data */
                d[i] = (uint8_t)(i * 151 + 17);
        } else {
            d[n - 1] ^= 0xff; /* adler32 mismatch */
            d[n - 2] ^= 0xff;
        }
        fix_crc(png, off);
        img_status st = decode_status(png, len, NULL, err, sizeof err);
        if (st != IMG_ERR_CORRUPT)
            fail_msg("zlib damage %d: got %s (%s)", how, pipe_status_name(pipe_status_from_img(st)),
                     err);
        free(png);
    }
}

static void test_too_large_header(void **state)
{
    (void)state;
    char err[200];
    bytes b = {0};
    sig_ihdr(&b, 100000, 100000, 8, 0);
    uint8_t z[16] = {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
    chunk(&b, "IDAT", z, 8);
    chunk(&b, "IEND", NULL, 0);
    assert_int_equal(decode_status(b.p, b.len, NULL, err, sizeof err), IMG_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "100000x100000"));
    /* the IHDR alone (truncated after it) is judged on size first */
    assert_int_equal(decode_status(b.p, 33, NULL, err, sizeof err), IMG_ERR_TOO_LARGE);
    free(b.p);

    /* custom limits: width, height and pixel count separately */
    size_t len;
    uint8_t *png = small_png(&len, 0, NULL); /* 19 x 13 */
    img_limits lim;
    img_limits_default(&lim);
    lim.max_width = 18;
    assert_int_equal(decode_status(png, len, &lim, err, sizeof err), IMG_ERR_TOO_LARGE);
    img_limits_default(&lim);
    lim.max_height = 12;
    assert_int_equal(decode_status(png, len, &lim, err, sizeof err), IMG_ERR_TOO_LARGE);
    img_limits_default(&lim);
    lim.max_pixels = 19 * 13 - 1;
    assert_int_equal(decode_status(png, len, &lim, err, sizeof err), IMG_ERR_TOO_LARGE);
    lim.max_pixels = 19 * 13;
    assert_int_equal(decode_status(png, len, &lim, err, sizeof err), IMG_OK);
    free(png);
}

static void test_decompression_bomb(void **state)
{
    (void)state;
    char err[200];
    /* 20000 x 20000 zeros: 400 MB of pixels in a few hundred KB */
    bytes b = make_bomb(20000, 20000);
    assert_true(b.len < 1024 * 1024);
    long before = peak_rss_kib();
    assert_int_equal(decode_status(b.p, b.len, NULL, err, sizeof err), IMG_ERR_TOO_LARGE);
    /* width/height allowed, so only the pixel count can stop it */
    img_limits lim;
    img_limits_default(&lim);
    lim.max_width = lim.max_height = 100000;
    assert_int_equal(decode_status(b.p, b.len, &lim, err, sizeof err), IMG_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "pixels"));
    long after = peak_rss_kib();
    /* decoding would have touched 400 MB; refusing costs nothing */
    assert_true(before > 0 && after - before < 64 * 1024);
    free(b.p);

    /* within width and height limits, over the pixel limit */
    b = make_bomb(8000, 8000);
    assert_int_equal(decode_status(b.p, b.len, NULL, err, sizeof err), IMG_ERR_TOO_LARGE);
    free(b.p);
}

static void test_huge_text_chunks(void **state)
{
    (void)state;
    char err[200];
    size_t len;
    /* a 3 MiB tEXt is over the 1 MiB chunk limit */
    size_t n = 3u << 20;
    char *text = malloc(n + 1);
    assert_non_null(text);
    memset(text, 'x', n);
    text[n] = '\0';
    uint8_t *png = small_png(&len, 0, text);
    assert_true(len > n);
    assert_int_equal(decode_status(png, len, NULL, err, sizeof err), IMG_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "tEXt chunk"));
    /* a raised chunk limit lets libpng skip it without keeping it */
    img_limits lim;
    img_limits_default(&lim);
    lim.max_chunk_bytes = 4u << 20;
    long before = peak_rss_kib();
    assert_int_equal(decode_status(png, len, &lim, err, sizeof err), IMG_OK);
    assert_true(peak_rss_kib() - before < 2 * 1024);
    free(png);

    /* a small zTXt that inflates to 64 MiB: skipped, never inflated. Built
     * by streaming so the 64 MiB never exist here either (the peak RSS
     * check below would otherwise be blind). */
    free(text);
    bytes zt = {0};
    bytes_put(&zt, "Comment\0\0", 9); /* keyword, NUL, method 0 */
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit(&z, 9), Z_OK);
    uint8_t in[65536], zout[65536];
    memset(in, 'z', sizeof in);
    for (int i = 0; i < 1024; i++) {
        z.next_in = in;
        z.avail_in = sizeof in;
        int flush = i == 1023 ? Z_FINISH : Z_NO_FLUSH;
        do {
            z.next_out = zout;
            z.avail_out = sizeof zout;
            deflate(&z, flush);
            bytes_put(&zt, zout, sizeof zout - z.avail_out);
        } while (z.avail_out == 0);
    }
    deflateEnd(&z);
    bytes b = {0};
    sig_ihdr(&b, 4, 4, 8, 0);
    chunk(&b, "zTXt", zt.p, (uint32_t)zt.len);
    uint8_t raw4[20] = {0, 0, 255, 0, 255, 0, 255, 0, 255, 0, 0, 0, 255, 0, 255, 0, 255, 0, 255, 0};
    uint8_t z4[64];
    uLongf z4l = sizeof z4;
    assert_int_equal(compress(z4, &z4l, raw4, sizeof raw4), Z_OK);
    chunk(&b, "IDAT", z4, (uint32_t)z4l);
    chunk(&b, "IEND", NULL, 0);
    free(zt.p);
    assert_true(b.len < (1u << 20));
    before = peak_rss_kib();
    uint32_t w, h;
    uint8_t *g = decode(b.p, b.len, &w, &h);
    long after = peak_rss_kib();
    assert_int_equal(w, 4);
    assert_int_equal(g[1], 255);
    assert_true(after - before < 16 * 1024);
    free(g);
    free(b.p);

    /* thousands of small text chunks: skipped, no growth */
    b = (bytes){0};
    sig_ihdr(&b, 1, 1, 8, 0);
    for (int i = 0; i < 5000; i++) chunk(&b, "tEXt", (const uint8_t *)"k\0value", 7);
    for (int i = 0; i < 5000; i++) chunk(&b, "prVt", (const uint8_t *)"data", 4);
    uint8_t raw[2] = {0, 77};
    z4l = sizeof z4;
    assert_int_equal(compress(z4, &z4l, raw, 2), Z_OK);
    chunk(&b, "IDAT", z4, (uint32_t)z4l);
    chunk(&b, "IEND", NULL, 0);
    g = decode(b.p, b.len, &w, &h);
    assert_int_equal(g[0], 77);
    free(g);
    free(b.p);
}

/* ---- preprocessing ---------------------------------------------------------- */

static void stats(const float *o, double *cx, double *cy, int *bw, int *bh, float *mx)
{
    double s = 0, sx = 0, sy = 0;
    int x0 = 28, x1 = -1, y0 = 28, y1 = -1;
    *mx = 0;
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            float v = o[y * 28 + x];
            s += v;
            sx += v * x;
            sy += v * y;
            if (v > *mx) *mx = v;
            if (v > 0.1f) {
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                if (y > y1) y1 = y;
            }
        }
    *cx = sx / s;
    *cy = sy / s;
    *bw = x1 - x0 + 1;
    *bh = y1 - y0 + 1;
}

/* Renders segments at w x h: ink value `ink` on background `bg`. */
static uint8_t *draw(uint32_t w, uint32_t h, const seg *segs, int n, float thick, unsigned ink,
                     unsigned bg)
{
    float *cov = malloc(sizeof(float) * w * h);
    uint8_t *g = malloc((size_t)w * h);
    assert_non_null(cov);
    assert_non_null(g);
    render(cov, w, h, segs, n, thick);
    for (uint32_t i = 0; i < w * h; i++)
        g[i] = (uint8_t)lroundf(bg + (float)((int)ink - (int)bg) * cov[i]);
    free(cov);
    return g;
}

static void test_prep_large_black_on_white(void **state)
{
    (void)state;
    char err[200];
    float o[784];
    uint8_t *g = draw(480, 480, SEVEN, 3, 40, 0, 255);
    assert_int_equal(img_prep_mnist(g, 480, 480, o, err, sizeof err), IMG_OK);
    double cx, cy;
    int bw, bh;
    float mx;
    stats(o, &cx, &cy, &bw, &bh, &mx);
    assert_float_equal(o[0], 0.0, 1e-6); /* background dark */
    assert_float_equal(o[783], 0.0, 1e-6);
    assert_float_equal(mx, 1.0, 1e-6); /* strokes bright */
    assert_true(fabs(cx - 14.0) <= 0.5);
    assert_true(fabs(cy - 14.0) <= 0.5);
    int longest = bw > bh ? bw : bh;
    assert_true(longest >= 19 && longest <= 21);

    /* same digit white on black and light-on-gray give the same input */
    float o2[784];
    uint8_t *g2 = draw(480, 480, SEVEN, 3, 40, 255, 0);
    assert_int_equal(img_prep_mnist(g2, 480, 480, o2, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(o[i], o2[i], 1e-5);
    free(g2);
    g2 = draw(480, 480, SEVEN, 3, 40, 60, 200); /* pencil on grey paper */
    assert_int_equal(img_prep_mnist(g2, 480, 480, o2, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(o[i], o2[i], 0.02);
    free(g2);
    free(g);
}

static void test_prep_aspect_ratio(void **state)
{
    (void)state;
    char err[200];
    float o[784];
    double cx, cy;
    int bw, bh;
    float mx;
    /* a tall thin "1": 24 x 300 px box -> about 1.6 x 20 */
    const seg one[] = {{0.5f, 0.2f, 0.5f, 0.8f}};
    uint8_t *g = draw(480, 480, one, 1, 24, 0, 255);
    assert_int_equal(img_prep_mnist(g, 480, 480, o, err, sizeof err), IMG_OK);
    stats(o, &cx, &cy, &bw, &bh, &mx);
    assert_true(bh >= 19 && bh <= 20);
    assert_true(bw >= 1 && bw <= 3);
    assert_true(fabs(cx - 14.0) <= 0.5 && fabs(cy - 14.0) <= 0.5);
    free(g);
    /* a wide "-" shape 2:1 in a non-square image: 20 x ~10 */
    const seg bar[] = {{0.2f, 0.5f, 0.8f, 0.5f}};
    g = draw(400, 300, bar, 1, 120, 0, 255); /* box 360 x 120 */
    assert_int_equal(img_prep_mnist(g, 400, 300, o, err, sizeof err), IMG_OK);
    stats(o, &cx, &cy, &bw, &bh, &mx);
    assert_true(bw >= 19 && bw <= 20);
    assert_true(bh >= 6 && bh <= 8); /* 120/360*20 = 6.7 */
    free(g);
}

static void test_prep_ignores_faint_specks(void **state)
{
    (void)state;
    char err[200];
    float a[784], b[784];
    uint8_t *g = draw(300, 300, SEVEN, 3, 24, 0, 255);
    assert_int_equal(img_prep_mnist(g, 300, 300, a, err, sizeof err), IMG_OK);
    /* faint speck far from the digit (5% of full ink): no effect on the box */
    for (int y = 2; y < 6; y++)
        for (int x = 290; x < 294; x++) g[y * 300 + x] = 243;
    assert_int_equal(img_prep_mnist(g, 300, 300, b, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(a[i], b[i], 0.02);
    free(g);
}

static void test_prep_blank(void **state)
{
    (void)state;
    char err[200];
    float o[784];
    uint8_t g[64 * 64];
    const int levels[] = {0, 255, 128};
    for (int i = 0; i < 3; i++) {
        memset(g, levels[i], sizeof g);
        assert_int_equal(img_prep_mnist(g, 64, 64, o, err, sizeof err), IMG_ERR_BLANK);
        assert_true(strlen(err) > 0);
    }
    for (int i = 0; i < 64 * 64; i++) /* sensor noise, no digit */
        g[i] = (uint8_t)(250 + (i * 7919) % 5);
    assert_int_equal(img_prep_mnist(g, 64, 64, o, err, sizeof err), IMG_ERR_BLANK);
    assert_int_equal(img_prep_mnist(g, 0, 0, o, err, sizeof err), IMG_ERR_BLANK);
    /* a single dark pixel on white is ink, though */
    memset(g, 255, sizeof g);
    g[30 * 64 + 30] = 0;
    assert_int_equal(img_prep_mnist(g, 64, 64, o, err, sizeof err), IMG_OK);
}

static void quantize(const float *o, uint8_t *g)
{
    for (int i = 0; i < 784; i++) g[i] = (uint8_t)lroundf(o[i] * 255);
}

static void test_prep_idempotent_on_synthetic_mnist(void **state)
{
    (void)state;
    char err[200];
    float a[784], b[784];
    uint8_t q[784];
    const seg shapes[][3] = {
        {{0.25f, 0.2f, 0.75f, 0.2f}, {0.75f, 0.2f, 0.45f, 0.85f}, {0.4f, 0.52f, 0.7f, 0.52f}},
        {{0.5f, 0.15f, 0.5f, 0.85f}, {0.5f, 0.15f, 0.38f, 0.3f}, {0.4f, 0.85f, 0.6f, 0.85f}},
        {{0.3f, 0.3f, 0.7f, 0.2f}, {0.7f, 0.2f, 0.3f, 0.8f}, {0.3f, 0.8f, 0.75f, 0.8f}},
    };
    for (int k = 0; k < 3; k++) {
        uint8_t *g = draw(280, 280, shapes[k], 3, 22, 0, 255);
        assert_int_equal(img_prep_mnist(g, 280, 280, a, err, sizeof err), IMG_OK);
        free(g);
        /* a is MNIST-like: 8-bit, 20 px box, centred; it must pass through */
        quantize(a, q);
        assert_int_equal(img_prep_mnist(q, 28, 28, b, err, sizeof err), IMG_OK);
        for (int i = 0; i < 784; i++) assert_float_equal(b[i], q[i] / 255.0f, 1e-6);
        /* and black-on-white at 28x28 as well */
        for (int i = 0; i < 784; i++) q[i] = (uint8_t)(255 - q[i]);
        assert_int_equal(img_prep_mnist(q, 28, 28, b, err, sizeof err), IMG_OK);
        for (int i = 0; i < 784; i++) assert_float_equal(b[i], (255 - q[i]) / 255.0f, 1e-6);
    }
}

/* First n test images from the MNIST IDX file, or NULL with a message. */
static uint8_t *load_mnist(int n)
{
    const char *dir = getenv("MNIST_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir ? dir : "data/mnist");
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: run `make data` first (or set MNIST_DIR)", path);
    uint8_t hdr[16];
    if (fread(hdr, 1, 16, f) != 16 || get32(hdr) != 0x803 || get32(hdr + 8) != 28 ||
        get32(hdr + 12) != 28 || get32(hdr + 4) < (uint32_t)n) {
        fclose(f);
        fail_msg("%s is not an MNIST image file", path);
    }
    uint8_t *img = malloc((size_t)784 * n);
    assert_non_null(img);
    size_t got = fread(img, 784, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(img);
        fail_msg("%s: short read", path);
    }
    return img;
}

static void test_prep_real_mnist_passes_through(void **state)
{
    (void)state;
    char err[200];
    const int N = 100;
    uint8_t *img = load_mnist(N);
    float o[784];
    int exact = 0, exact_inv = 0;
    double total = 0;
    for (int k = 0; k < N; k++) {
        const uint8_t *g = img + 784 * k;
        assert_int_equal(img_prep_mnist(g, 28, 28, o, err, sizeof err), IMG_OK);
        double d = 0;
        int same = 1;
        for (int i = 0; i < 784; i++) {
            d += fabs(o[i] - g[i] / 255.0);
            same &= o[i] == g[i] / 255.0f;
        }
        exact += same;
        total += d / 784;
        /* inverted (black on white) gives the same input */
        uint8_t inv[784];
        for (int i = 0; i < 784; i++) inv[i] = (uint8_t)(255 - g[i]);
        assert_int_equal(img_prep_mnist(inv, 28, 28, o, err, sizeof err), IMG_OK);
        same = 1;
        for (int i = 0; i < 784; i++) same &= o[i] == g[i] / 255.0f;
        exact_inv += same;
    }
    print_message("MNIST pass-through: %d/%d exact, %d/%d inverted exact, mean |diff| %.5f\n",
                  exact, N, exact_inv, N, total / N);
    assert_true(total / N < 0.01);
    assert_true(exact >= 95);
    assert_true(exact_inv >= 95);
    free(img);
}

static void test_prep_upscaled_mnist_close(void **state)
{
    (void)state;
    /* MNIST digit x8 (nearest), black on white, through the full path: the
     * result should still look like the original */
    char err[200];
    const int N = 20, S = 8;
    uint8_t *img = load_mnist(N);
    uint8_t *big = malloc(28 * S * 28 * S);
    assert_non_null(big);
    float o[784];
    double worst = 0;
    for (int k = 0; k < N; k++) {
        const uint8_t *g = img + 784 * k;
        for (int y = 0; y < 28 * S; y++)
            for (int x = 0; x < 28 * S; x++)
                big[y * 28 * S + x] = (uint8_t)(255 - g[(y / S) * 28 + x / S]);
        assert_int_equal(img_prep_mnist(big, 28 * S, 28 * S, o, err, sizeof err), IMG_OK);
        double d = 0;
        for (int i = 0; i < 784; i++) d += fabs(o[i] - g[i] / 255.0);
        d /= 784;
        if (d > worst) worst = d;
    }
    print_message("upscaled MNIST: worst mean |diff| %.4f\n", worst);
    assert_true(worst < 0.05);
    free(big);
    free(img);
}

/* ---- Fashion-MNIST framing (img_prep_fit) ------------------------------------ */

/* A 28x28 product in Fashion-MNIST's framing: a "shirt" whose body spans
 * all 28 rows and columns 2..25 (box centred), textured, peak 255. */
static void fashion_like(uint8_t g[784])
{
    memset(g, 0, 784);
    for (int y = 0; y < 28; y++)
        for (int x = 2; x <= 25; x++) {
            int sleeve = y < 12; /* full width up top */
            int body = x >= 7 && x <= 20;
            if (sleeve || body) g[y * 28 + x] = (uint8_t)(150 + (x * 7 + y * 13) % 106);
        }
    g[5 * 28 + 10] = 255;
}

static double mean_abs_diff(const float *o, const uint8_t *g)
{
    double d = 0;
    for (int i = 0; i < 784; i++) d += fabs(o[i] - g[i] / 255.0);
    return d / 784;
}

static void test_fit_fashion_like_passes_through(void **state)
{
    (void)state;
    char err[200];
    uint8_t g[784];
    float o[784], o2[784];
    fashion_like(g);
    assert_int_equal(img_prep_fit(g, 28, 28, o, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(o[i], g[i] / 255.0f, 1e-6);
    /* the dispatcher picks the same function ... */
    assert_int_equal(img_prep_by_name("fit", g, 28, 28, o2, err, sizeof err), IMG_OK);
    assert_memory_equal(o, o2, sizeof o);
    /* ... and "mnist" really is different: shrunk to a 20 px box */
    assert_int_equal(img_prep_by_name("mnist", g, 28, 28, o2, err, sizeof err), IMG_OK);
    double cx, cy;
    int bw, bh;
    float mx;
    stats(o2, &cx, &cy, &bw, &bh, &mx);
    assert_true(bh <= 21);
    /* an unknown mode is refused with a message, not guessed */
    err[0] = 0;
    assert_int_equal(img_prep_by_name("digits", g, 28, 28, o2, err, sizeof err), IMG_ERR_ARG);
    assert_non_null(strstr(err, "digits"));
    assert_int_equal(img_prep_by_name(NULL, g, 28, 28, o2, err, sizeof err), IMG_ERR_ARG);
}

static void test_fit_off_centre_gets_centred(void **state)
{
    (void)state;
    char err[200];
    /* a 28x28 input whose 24-wide box sits at columns 0..23: moved by 2 */
    uint8_t g[784], s[784];
    float o[784];
    fashion_like(g);
    memset(s, 0, sizeof s);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x + 2 < 28; x++) s[y * 28 + x] = g[y * 28 + x + 2];
    assert_int_equal(img_prep_fit(s, 28, 28, o, err, sizeof err), IMG_OK);
    for (int i = 0; i < 784; i++) assert_float_equal(o[i], g[i] / 255.0f, 1e-6);
}

static void test_fit_upscaled_inverted_close(void **state)
{
    (void)state;
    char err[200];
    uint8_t g[784], big[56 * 56];
    float o[784];
    fashion_like(g);
    /* 2x nearest, dark product on white paper */
    for (int y = 0; y < 56; y++)
        for (int x = 0; x < 56; x++) big[y * 56 + x] = (uint8_t)(255 - g[(y / 2) * 28 + x / 2]);
    assert_int_equal(img_prep_fit(big, 56, 56, o, err, sizeof err), IMG_OK);
    double d = mean_abs_diff(o, g);
    print_message("fit, 2x inverted: mean |diff| %.5f\n", d);
    assert_true(d < 0.01);
    /* the digit path would have shrunk it: clearly different */
    assert_int_equal(img_prep_mnist(big, 56, 56, o, err, sizeof err), IMG_OK);
    assert_true(mean_abs_diff(o, g) > 0.05);
}

static void test_fit_aspect_ratio(void **state)
{
    (void)state;
    char err[200];
    float o[784];
    double cx, cy;
    int bw, bh;
    float mx;
    /* tall thin object: box 24 x ~312 px -> about 2 x 28, centred */
    const seg one[] = {{0.3f, 0.2f, 0.3f, 0.8f}};
    uint8_t *g = draw(480, 480, one, 1, 24, 0, 255);
    assert_int_equal(img_prep_fit(g, 480, 480, o, err, sizeof err), IMG_OK);
    stats(o, &cx, &cy, &bw, &bh, &mx);
    assert_true(bh >= 27 && bh <= 28);
    assert_true(bw >= 1 && bw <= 3);
    assert_float_equal(mx, 1.0, 1e-6);
    /* centred by box even though it was drawn left of centre */
    assert_true(fabs(cx - 13.5) <= 1.0 && fabs(cy - 13.5) <= 0.6);
    free(g);
    /* wide 3:1 bar in a non-square image: 28 x ~9, box centred vertically */
    const seg bar[] = {{0.2f, 0.3f, 0.8f, 0.3f}};
    g = draw(400, 300, bar, 1, 80, 0, 255); /* box ~320 x 80 */
    assert_int_equal(img_prep_fit(g, 400, 300, o, err, sizeof err), IMG_OK);
    stats(o, &cx, &cy, &bw, &bh, &mx);
    assert_true(bw >= 27 && bw <= 28);
    assert_true(bh >= 6 && bh <= 9); /* 80/320*28 = 7 */
    assert_true(fabs(cy - 13.5) <= 0.6);
    free(g);
}

static void test_fit_blank(void **state)
{
    (void)state;
    char err[200];
    float o[784];
    uint8_t g[64 * 64];
    memset(g, 255, sizeof g);
    err[0] = 0;
    assert_int_equal(img_prep_fit(g, 64, 64, o, err, sizeof err), IMG_ERR_BLANK);
    assert_true(strlen(err) > 0);
    g[100] = 250; /* below the contrast floor */
    assert_int_equal(img_prep_fit(g, 64, 64, o, err, sizeof err), IMG_ERR_BLANK);
    assert_int_equal(img_prep_fit(NULL, 0, 0, o, err, sizeof err), IMG_ERR_BLANK);
    for (int i = 0; i < 784; i++) assert_float_equal(o[i], 0.0, 0);
    assert_int_equal(img_prep_by_name("fit", g, 64, 64, o, err, sizeof err), IMG_ERR_BLANK);
}

/* The first 50 Fashion-MNIST test images (the Debian package
 * dataset-fashion-mnist, a test dependency): they must pass through, as
 * they are and inverted. Missing data fails: scripts/deps.sh installs it. */
static void test_fit_real_fashion_passes_through(void **state)
{
    (void)state;
    const char *path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    const int N = 50;
    gzFile f = gzopen(path, "rb");
    if (!f) fail_msg("cannot open %s: install dataset-fashion-mnist (make deps-test)", path);
    uint8_t hdr[16];
    static uint8_t img[50 * 784];
    int ok = gzread(f, hdr, 16) == 16 && get32(hdr) == 0x803 && get32(hdr + 8) == 28 &&
             get32(hdr + 12) == 28 && gzread(f, img, sizeof img) == (int)sizeof img;
    gzclose(f);
    if (!ok) fail_msg("%s: not a 28x28 IDX image file with %d images", path, N);
    char err[200];
    float o[784];
    double total = 0, total_inv = 0, worst = 0;
    for (int k = 0; k < N; k++) {
        const uint8_t *g = img + 784 * k;
        assert_int_equal(img_prep_fit(g, 28, 28, o, err, sizeof err), IMG_OK);
        double d = mean_abs_diff(o, g);
        total += d;
        if (d > worst) worst = d;
        uint8_t inv[784];
        for (int i = 0; i < 784; i++) inv[i] = (uint8_t)(255 - g[i]);
        assert_int_equal(img_prep_fit(inv, 28, 28, o, err, sizeof err), IMG_OK);
        total_inv += mean_abs_diff(o, g);
    }
    print_message("Fashion-MNIST through fit: mean |diff| %.5f (worst %.5f), inverted %.5f\n",
                  total / N, worst, total_inv / N);
    assert_true(total / N < 0.02);
    assert_true(total_inv / N < 0.02);
}

static void test_limits_default(void **state)
{
    (void)state;
    img_limits lim;
    img_limits_default(&lim);
    assert_int_equal(lim.max_width, 8192);
    assert_int_equal(lim.max_pixels, 16777216);
    assert_int_equal(lim.max_chunk_bytes, 1 << 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_gray_all_depths),
        cmocka_unit_test(test_gray16_exact_levels),
        cmocka_unit_test(test_rgb),
        cmocka_unit_test(test_alpha_composite),
        cmocka_unit_test(test_opaque_alpha_is_plain),
        cmocka_unit_test(test_palette),
        cmocka_unit_test(test_gray_trns),
        cmocka_unit_test(test_canvas_alpha_is_ink),
        cmocka_unit_test(test_canvas_white_strokes_through_prep),
        cmocka_unit_test(test_not_png_and_empty),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_crc),
        cmocka_unit_test(test_bad_zlib),
        cmocka_unit_test(test_too_large_header),
        cmocka_unit_test(test_decompression_bomb),
        cmocka_unit_test(test_huge_text_chunks),
        cmocka_unit_test(test_prep_large_black_on_white),
        cmocka_unit_test(test_prep_aspect_ratio),
        cmocka_unit_test(test_prep_ignores_faint_specks),
        cmocka_unit_test(test_prep_blank),
        cmocka_unit_test(test_prep_idempotent_on_synthetic_mnist),
        cmocka_unit_test(test_prep_real_mnist_passes_through),
        cmocka_unit_test(test_prep_upscaled_mnist_close),
        cmocka_unit_test(test_fit_fashion_like_passes_through),
        cmocka_unit_test(test_fit_off_centre_gets_centred),
        cmocka_unit_test(test_fit_upscaled_inverted_close),
        cmocka_unit_test(test_fit_aspect_ratio),
        cmocka_unit_test(test_fit_blank),
        cmocka_unit_test(test_fit_real_fashion_passes_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
