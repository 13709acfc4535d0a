/* mkpng - writes the PNG fixtures the integration tests post to the server.
 *
 *   mkpng OUTDIR
 *       writes every fixture into OUTDIR plus OUTDIR/MANIFEST, one line per
 *       file: "<name> <expected pipe_status name> <digit or ->", e.g.
 *       "gray8.png ok 7", "bomb.png image_too_large -". Every file is decoded
 *       again here and its status compared with the manifest, so a fixture
 *       that does not test what it claims makes this tool fail.
 *
 *   mkpng --from-idx IMAGES_IDX INDEX OUT.png [--invert] [--scale N] [--bilinear]
 *       renders MNIST image INDEX as 8-bit gray PNG: --invert gives black on
 *       white, --scale N (1..64) enlarges by nearest neighbour, or by
 *       bilinear interpolation with --bilinear.
 *
 * Exit status: 0 done, 1 failure (I/O, bad IDX file, self-check), 2 usage.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "image/image.h"
#include "pipeline/pipeline.h"

static const char *g_dir;
static FILE *g_manifest;
static int g_failed;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mkpng OUTDIR\n"
            "           write all PNG fixtures and OUTDIR/MANIFEST\n"
            "       mkpng --from-idx IMAGES_IDX INDEX OUT.png [--invert] [--scale N] [--bilinear]\n"
            "           render one MNIST image (0-based INDEX) as a gray PNG\n"
            "exit status: 0 ok, 1 failure, 2 usage error\n");
}

/* ---- drawing ---------------------------------------------------------------- */

typedef struct {
    float x0, y0, x1, y1;
} seg;

typedef struct {
    seg s[96];
    int n;
} path;

static void line(path *p, float x0, float y0, float x1, float y1)
{
    if (p->n < (int)(sizeof p->s / sizeof *p->s)) p->s[p->n++] = (seg){x0, y0, x1, y1};
}

/* Elliptic arc, angles in degrees, y down (90 is the bottom). */
static void arc(path *p, float cx, float cy, float rx, float ry, float a0, float a1)
{
    const int steps = 16;
    float px = 0, py = 0;
    for (int i = 0; i <= steps; i++) {
        float a = (a0 + (a1 - a0) * i / steps) * 3.14159265f / 180.0f;
        float x = cx + rx * cosf(a), y = cy + ry * sinf(a);
        if (i) line(p, px, py, x, y);
        px = x;
        py = y;
    }
}

/* Handwriting-like digits in the unit square, roughly MNIST proportions. */
static path digit_path(int d)
{
    path p = {.n = 0};
    switch (d) {
    case 0: arc(&p, 0.5f, 0.5f, 0.21f, 0.31f, 0, 360); break;
    case 1: line(&p, 0.55f, 0.18f, 0.47f, 0.82f); break;
    case 2:
        arc(&p, 0.5f, 0.35f, 0.18f, 0.16f, 190, 390);
        line(&p, 0.5f + 0.18f * cosf(0.524f), 0.35f + 0.16f * sinf(0.524f), 0.3f, 0.8f);
        line(&p, 0.3f, 0.8f, 0.73f, 0.8f);
        break;
    case 3:
        arc(&p, 0.5f, 0.33f, 0.17f, 0.15f, 200, 450);
        arc(&p, 0.5f, 0.65f, 0.19f, 0.17f, 270, 520);
        break;
    case 4:
        line(&p, 0.62f, 0.15f, 0.62f, 0.85f);
        line(&p, 0.62f, 0.15f, 0.28f, 0.6f);
        line(&p, 0.28f, 0.6f, 0.76f, 0.6f);
        break;
    case 5:
        line(&p, 0.7f, 0.2f, 0.37f, 0.2f);
        line(&p, 0.37f, 0.2f, 0.35f, 0.5f);
        arc(&p, 0.5f, 0.64f, 0.19f, 0.17f, 225, 510);
        break;
    case 6:
        line(&p, 0.64f, 0.16f, 0.36f, 0.56f);
        arc(&p, 0.5f, 0.65f, 0.17f, 0.17f, 0, 360);
        break;
    case 7:
        line(&p, 0.28f, 0.2f, 0.72f, 0.2f);
        line(&p, 0.72f, 0.2f, 0.42f, 0.82f);
        break;
    case 8:
        arc(&p, 0.5f, 0.32f, 0.15f, 0.14f, 0, 360);
        arc(&p, 0.5f, 0.66f, 0.18f, 0.17f, 0, 360);
        break;
    default:
        arc(&p, 0.5f, 0.35f, 0.17f, 0.16f, 0, 360);
        line(&p, 0.67f, 0.35f, 0.6f, 0.84f);
        break;
    }
    return p;
}

static float seg_dist(const seg *s, float px, float py)
{
    float dx = s->x1 - s->x0, dy = s->y1 - s->y0;
    float l2 = dx * dx + dy * dy;
    float t = l2 > 0 ? ((px - s->x0) * dx + (py - s->y0) * dy) / l2 : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float ex = s->x0 + t * dx - px, ey = s->y0 + t * dy - py;
    return sqrtf(ex * ex + ey * ey);
}

/* Anti-aliased stroke coverage 0..1 of digit d at w x h; the stroke is about
 * 9% of the image wide, like MNIST's pen relative to its field. */
static float *coverage(int d, uint32_t w, uint32_t h)
{
    path p = digit_path(d);
    float thick = 0.09f * (float)(w < h ? w : h);
    float *cov = malloc(sizeof(float) * w * h);
    if (!cov) {
        fprintf(stderr, "mkpng: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < p.n; i++) {
        p.s[i].x0 *= w;
        p.s[i].x1 *= w;
        p.s[i].y0 *= h;
        p.s[i].y1 *= h;
    }
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            float best = 1e30f;
            for (int i = 0; i < p.n; i++) {
                float dd = seg_dist(&p.s[i], x + 0.5f, y + 0.5f);
                if (dd < best) best = dd;
            }
            float c = thick / 2 + 0.5f - best;
            cov[y * w + x] = c < 0 ? 0 : c > 1 ? 1 : c;
        }
    return cov;
}

/* ---- output ------------------------------------------------------------------ */

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "mkpng: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = len ? fwrite(data, 1, len, f) : 0;
    int bad = n != len;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        fprintf(stderr, "mkpng: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Writes OUTDIR/name, decodes it again and checks the status (and for
 * images that should work, that preprocessing finds a digit). */
static void fixture(const char *name, const uint8_t *data, size_t len, img_status want, int digit)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    if (write_file(path, data, len) != 0) {
        g_failed = 1;
        return;
    }
    fprintf(g_manifest, "%s %s %c\n", name, pipe_status_name(pipe_status_from_img(want)),
            digit >= 0 ? '0' + digit : '-');

    char err[256] = "";
    uint8_t *gray = NULL;
    uint32_t w, h;
    img_status st = img_png_decode(data, len, NULL, &gray, &w, &h, err, sizeof err);
    if (st == IMG_OK && (want == IMG_OK || want == IMG_ERR_BLANK)) {
        float in[784];
        st = img_prep_mnist(gray, w, h, in, err, sizeof err);
    }
    free(gray);
    if (st != want) {
        fprintf(stderr, "mkpng: %s: expected %s, decoder says %s (%s)\n", name,
                pipe_status_name(pipe_status_from_img(want)),
                pipe_status_name(pipe_status_from_img(st)), err);
        g_failed = 1;
    }
}

typedef struct {
    uint32_t w, h;
    int ctype, depth, interlace;
    uint16_t *s;
    const uint8_t *pal;
    int npal;
    const uint8_t *trns;
    int ntrns;
} image;

static uint8_t *encode_or_die(const image *im, const char *text, int ztxt, size_t *len)
{
    img_png_spec spec = {
        .width = im->w,
        .height = im->h,
        .color_type = im->ctype,
        .bit_depth = im->depth,
        .interlace = im->interlace,
        .samples = im->s,
        .palette = im->pal,
        .palette_len = im->npal,
        .trns = im->trns,
        .trns_len = im->ntrns,
        .text_key = text ? "Comment" : NULL,
        .text = text,
        .text_compressed = ztxt,
    };
    uint8_t *png;
    char err[256];
    if (img_png_encode(&spec, &png, len, err, sizeof err) != IMG_OK) {
        fprintf(stderr, "mkpng: %s\n", err);
        exit(1);
    }
    return png;
}

static void emit(const char *name, const image *im, int digit)
{
    size_t len;
    uint8_t *png = encode_or_die(im, NULL, 0, &len);
    fixture(name, png, len, IMG_OK, digit);
    free(png);
}

static uint16_t *samples(size_t n)
{
    uint16_t *s = calloc(n, sizeof *s);
    if (!s) {
        fprintf(stderr, "mkpng: out of memory\n");
        exit(1);
    }
    return s;
}

/* 1 - c: dark ink on light paper, in 0..max. */
static uint16_t paper(float c, unsigned max) { return (uint16_t)lroundf((1.0f - c) * max); }

static uint16_t mix(unsigned ink, unsigned bg, float c)
{
    return (uint16_t)lroundf(bg + ((float)ink - (float)bg) * c);
}

/* The digit drawn in every colour type and depth (all "7"). */
static void colour_fixtures(void)
{
    const int D = 7;
    const uint32_t W = 112, H = 112;
    const size_t N = (size_t)W * H;
    float *c = coverage(D, W, H);
    image im = {.w = W, .h = H};
    im.s = samples(N * 4);

    im.ctype = 0;
    const int gdepth[] = {1, 2, 4, 8, 16};
    const char *gname[] = {"gray1.png", "gray2.png", "gray4.png", "gray8.png", "gray16.png"};
    for (int k = 0; k < 5; k++) {
        unsigned max = (1u << gdepth[k]) - 1;
        im.depth = gdepth[k];
        for (size_t i = 0; i < N; i++) im.s[i] = paper(c[i], max);
        emit(gname[k], &im, D);
    }

    /* gray+alpha: black ink, alpha = coverage, transparent paper */
    im.ctype = 4;
    for (int k = 0; k < 2; k++) {
        unsigned max = k ? 65535 : 255;
        im.depth = k ? 16 : 8;
        for (size_t i = 0; i < N; i++) {
            im.s[2 * i] = 0;
            im.s[2 * i + 1] = (uint16_t)lroundf(c[i] * max);
        }
        emit(k ? "gray_alpha16.png" : "gray_alpha8.png", &im, D);
    }

    /* rgb: navy ink on cream paper; interlaced.png is the same, Adam7 */
    im.ctype = 2;
    for (int k = 0; k < 3; k++) {
        unsigned mul = k == 1 ? 257 : 1;
        im.depth = k == 1 ? 16 : 8;
        im.interlace = k == 2;
        for (size_t i = 0; i < N; i++) {
            im.s[3 * i] = (uint16_t)(mix(20, 250, c[i]) * mul);
            im.s[3 * i + 1] = (uint16_t)(mix(30, 245, c[i]) * mul);
            im.s[3 * i + 2] = (uint16_t)(mix(120, 220, c[i]) * mul);
        }
        emit(k == 0 ? "rgb8.png" : k == 1 ? "rgb16.png" : "interlaced.png", &im, D);
    }
    im.interlace = 0;

    /* rgba8: opaque dark green ink over half-transparent white (composited);
     * rgba16: black ink whose alpha is the coverage (canvas style) */
    im.ctype = 6;
    im.depth = 8;
    for (size_t i = 0; i < N; i++) {
        im.s[4 * i] = mix(0, 255, c[i]);
        im.s[4 * i + 1] = mix(100, 255, c[i]);
        im.s[4 * i + 2] = mix(0, 255, c[i]);
        im.s[4 * i + 3] = mix(255, 128, c[i]);
    }
    emit("rgba8.png", &im, D);
    im.depth = 16;
    for (size_t i = 0; i < N; i++) {
        im.s[4 * i] = im.s[4 * i + 1] = im.s[4 * i + 2] = 0;
        im.s[4 * i + 3] = (uint16_t)lroundf(c[i] * 65535);
    }
    emit("rgba16.png", &im, D);

    /* palettes: 256 and 16 shades from violet ink to white */
    uint8_t pal[256 * 3], trns[256];
    im.ctype = 3;
    for (int k = 0; k < 2; k++) {
        int n = k ? 16 : 256;
        for (int i = 0; i < n; i++) {
            float t = (float)i / (n - 1);
            pal[3 * i] = (uint8_t)lroundf(60 + 195 * t);
            pal[3 * i + 1] = (uint8_t)lroundf(0 + 255 * t);
            pal[3 * i + 2] = (uint8_t)lroundf(90 + 165 * t);
        }
        im.depth = k ? 4 : 8;
        im.pal = pal;
        im.npal = n;
        for (size_t i = 0; i < N; i++) im.s[i] = paper(c[i], (unsigned)n - 1);
        emit(k ? "palette4.png" : "palette8.png", &im, D);
    }
    /* palette with tRNS: entry 0 transparent paper, 1..15 black ink with
     * growing alpha (how some editors save anti-aliased strokes) */
    for (int i = 0; i < 16; i++) {
        pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = 0;
        trns[i] = (uint8_t)(i * 17);
    }
    im.depth = 4;
    im.npal = 16;
    im.trns = trns;
    im.ntrns = 16;
    for (size_t i = 0; i < N; i++) im.s[i] = (uint16_t)lroundf(c[i] * 15);
    emit("palette_trns.png", &im, D);
    free(im.s);
    free(c);
}

/* Web-canvas exports: 280x280 RGBA, stroke colour with alpha = coverage on
 * a fully transparent (0,0,0,0) background. */
static void canvas_fixtures(void)
{
    const uint32_t W = 280, H = 280;
    const size_t N = (size_t)W * H;
    float *c = coverage(7, W, H);
    image im = {.w = W, .h = H, .ctype = 6, .depth = 8};
    im.s = samples(N * 4);
    for (int k = 0; k < 2; k++) {
        uint16_t ink = k ? 255 : 0;
        for (size_t i = 0; i < N; i++) {
            uint16_t a = (uint16_t)lroundf(c[i] * 255);
            im.s[4 * i] = im.s[4 * i + 1] = im.s[4 * i + 2] = a ? ink : 0;
            im.s[4 * i + 3] = a;
        }
        emit(k ? "canvas_white_on_transparent.png" : "canvas_black_on_transparent.png", &im, 7);
    }
    free(im.s);
    free(c);
}

static void big_digit_fixtures(void)
{
    const uint32_t W = 480, H = 480;
    image im = {.w = W, .h = H, .ctype = 0, .depth = 8};
    im.s = samples((size_t)W * H);
    for (int d = 0; d < 10; d++) {
        float *c = coverage(d, W, H);
        for (size_t i = 0; i < (size_t)W * H; i++) im.s[i] = paper(c[i], 255);
        char name[64];
        snprintf(name, sizeof name, "big_black_on_white_%d.png", d);
        emit(name, &im, d);
        free(c);
    }
    free(im.s);
}

/* ---- hostile files ------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            fprintf(stderr, "mkpng: out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void chunk(bytes *b, const char *type, const uint8_t *data, uint32_t n)
{
    uint8_t hdr[8], crc[4];
    be32(hdr, n);
    memcpy(hdr + 4, type, 4);
    put(b, hdr, 8);
    if (n) put(b, data, n);
    uLong c = crc32(0L, (const Bytef *)type, 4);
    if (n) c = crc32(c, data, n);
    be32(crc, (uint32_t)c);
    put(b, crc, 4);
}

static void sig_ihdr(bytes *b, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    uint8_t ihdr[13] = {0};
    put(b, sig, 8);
    be32(ihdr, w);
    be32(ihdr + 4, h);
    ihdr[8] = 8; /* 8-bit gray */
    chunk(b, "IHDR", ihdr, 13);
}

/* Streams `total` bytes produced by fill() through deflate into out. */
static void deflate_stream(bytes *out, size_t total, void (*fill)(uint8_t *, size_t, size_t))
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit(&z, 9) != Z_OK) {
        fprintf(stderr, "mkpng: deflateInit failed\n");
        exit(1);
    }
    static uint8_t in[1 << 16], o[1 << 16];
    size_t done = 0;
    do {
        size_t n = total - done < sizeof in ? total - done : sizeof in;
        fill(in, n, done);
        done += n;
        z.next_in = in;
        z.avail_in = (uInt)n;
        int flush = done == total ? Z_FINISH : Z_NO_FLUSH;
        do {
            z.next_out = o;
            z.avail_out = sizeof o;
            deflate(&z, flush);
            put(out, o, sizeof o - z.avail_out);
        } while (z.avail_out == 0);
    } while (done < total);
    deflateEnd(&z);
}

static void fill_zero(uint8_t *p, size_t n, size_t at)
{
    (void)at;
    memset(p, 0, n); /* filter bytes and pixels alike */
}

static void fill_z(uint8_t *p, size_t n, size_t at)
{
    (void)at;
    memset(p, 'z', n);
}

/* w x h all-black gray image whose pixels never exist in memory here. */
static void bomb(const char *name, uint32_t w, uint32_t h)
{
    bytes b = {0}, z = {0};
    sig_ihdr(&b, w, h);
    deflate_stream(&z, ((size_t)w + 1) * h, fill_zero);
    for (size_t off = 0; off < z.len; off += 1u << 20) {
        size_t n = z.len - off < (1u << 20) ? z.len - off : 1u << 20;
        chunk(&b, "IDAT", z.p + off, (uint32_t)n);
    }
    chunk(&b, "IEND", NULL, 0);
    fixture(name, b.p, b.len, IMG_ERR_TOO_LARGE, -1);
    free(b.p);
    free(z.p);
}

static size_t find_chunk(const uint8_t *png, size_t len, const char *type)
{
    for (size_t off = 8; off + 12 <= len; off += 12 + (size_t)rd32(png + off))
        if (memcmp(png + off + 4, type, 4) == 0) return off;
    return 0;
}

static void hostile_fixtures(void)
{
    const uint32_t W = 112, H = 112;
    float *c = coverage(7, W, H);
    image im = {.w = W, .h = H, .ctype = 0, .depth = 8};
    im.s = samples((size_t)W * H);
    for (size_t i = 0; i < (size_t)W * H; i++) im.s[i] = paper(c[i], 255);
    free(c);
    size_t plen, len;
    uint8_t *png = encode_or_die(&im, NULL, 0, &plen);
    len = plen;

    fixture("truncated.png", png, len / 2, IMG_ERR_CORRUPT, -1);

    size_t idat = find_chunk(png, len, "IDAT");
    uint32_t n = rd32(png + idat);
    uint8_t *bad = malloc(len);
    if (!bad || !idat) {
        fprintf(stderr, "mkpng: cannot prepare the damaged copies\n");
        exit(1);
    }
    memcpy(bad, png, len);
    bad[idat + 8 + n] ^= 0xA5; /* IDAT CRC */
    fixture("bad_crc.png", bad, len, IMG_ERR_CORRUPT, -1);

    memcpy(bad, png, len);
    for (uint32_t i = 2; i < n; i++) /* deflate garbage */
        bad[idat + 8 + i] = (uint8_t)(i * 151 + 17);
    be32(bad + idat + 8 + n, (uint32_t)crc32(0L, bad + idat + 4, 4 + n));
    fixture("bad_zlib.png", bad, len, IMG_ERR_CORRUPT, -1);
    free(bad);

    bytes b = {0};
    sig_ihdr(&b, 100000, 100000);
    static const uint8_t tiny_z[8] = {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
    chunk(&b, "IDAT", tiny_z, sizeof tiny_z);
    chunk(&b, "IEND", NULL, 0);
    fixture("huge_dims.png", b.p, b.len, IMG_ERR_TOO_LARGE, -1);
    free(b.p);

    bomb("bomb.png", 30000, 30000);      /* over the width limit */
    bomb("bomb_pixels.png", 8000, 8000); /* dims allowed, pixel count not */

    /* 3 MiB tEXt: over the server's 2 MiB body limit and the decoder's
     * 1 MiB chunk limit */
    size_t tn = 3u << 20;
    char *text = malloc(tn + 1);
    if (!text) {
        fprintf(stderr, "mkpng: out of memory\n");
        exit(1);
    }
    memset(text, 'x', tn);
    text[tn] = '\0';
    uint8_t *p2 = encode_or_die(&im, text, 0, &len);
    fixture("huge_text.png", p2, len, IMG_ERR_TOO_LARGE, -1);
    free(p2);

    /* ~1.5 MiB zTXt (pseudo-random text, barely compressible): under the
     * body limit, over the chunk limit */
    tn = 2u << 20;
    uint32_t r = 12345;
    for (size_t i = 0; i < tn; i++) {
        r = r * 1103515245u + 12345u;
        text[i] = (char)('0' + (r >> 16) % 64);
    }
    text[tn] = '\0';
    p2 = encode_or_die(&im, text, 1, &len);
    fixture("text_1mb.png", p2, len, IMG_ERR_TOO_LARGE, -1);
    free(p2);
    free(text);

    /* 64 KiB zTXt inflating to 64 MiB: the decoder skips text chunks
     * unread, so the image itself decodes */
    bytes zt = {0};
    put(&zt, "Comment\0\0", 9);
    deflate_stream(&zt, (size_t)64 << 20, fill_z);
    size_t iend = find_chunk(png, plen, "IEND");
    b = (bytes){0};
    put(&b, png, 33); /* signature + IHDR */
    chunk(&b, "zTXt", zt.p, (uint32_t)zt.len);
    put(&b, png + 33, iend + 12 - 33); /* IDAT..IEND */
    fixture("ztxt_bomb.png", b.p, b.len, IMG_OK, 7);
    free(b.p);
    free(zt.p);

    static const char notpng[] = "GIF89a\x01\x00\x01\x00 this is not a PNG\n";
    fixture("not_png.bin", (const uint8_t *)notpng, sizeof notpng - 1, IMG_ERR_NOT_PNG, -1);
    fixture("empty.bin", (const uint8_t *)"", 0, IMG_ERR_NOT_PNG, -1);

    /* a valid PNG without any ink */
    for (size_t i = 0; i < (size_t)W * H; i++) im.s[i] = 255;
    uint8_t *blank = encode_or_die(&im, NULL, 0, &len);
    fixture("blank.png", blank, len, IMG_ERR_BLANK, -1);
    free(blank);
    free(png);
    free(im.s);
}

static int write_all(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkpng: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    g_dir = dir;
    g_manifest = fopen(path, "w");
    if (!g_manifest) {
        fprintf(stderr, "mkpng: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(g_manifest, "# file expected-status digit (written by mkpng)\n");
    colour_fixtures();
    canvas_fixtures();
    big_digit_fixtures();
    hostile_fixtures();
    if (fclose(g_manifest) != 0) {
        fprintf(stderr, "mkpng: cannot write %s\n", path);
        return 1;
    }
    return g_failed ? 1 : 0;
}

/* ---- --from-idx ------------------------------------------------------------------- */

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int from_idx(int argc, char **argv)
{
    if (argc < 5) {
        usage(stderr);
        return 2;
    }
    const char *idx = argv[2], *out = argv[4];
    long index, scale = 1;
    int invert = 0, bilinear = 0;
    if (parse_int(argv[3], 0, 0x7fffffff, &index) != 0) {
        fprintf(stderr, "mkpng: INDEX must be a non-negative integer, got '%s'\n", argv[3]);
        return 2;
    }
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--invert") == 0) {
            invert = 1;
        } else if (strcmp(argv[i], "--bilinear") == 0) {
            bilinear = 1;
        } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
            if (parse_int(argv[++i], 1, 64, &scale) != 0) {
                fprintf(stderr, "mkpng: --scale takes 1..64, got '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "mkpng: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    FILE *f = fopen(idx, "rb");
    if (!f) {
        fprintf(stderr, "mkpng: cannot open %s: %s\n", idx, strerror(errno));
        return 1;
    }
    uint8_t hdr[16];
    if (fread(hdr, 1, 16, f) != 16 || rd32(hdr) != 0x00000803) {
        fprintf(stderr, "mkpng: %s is not an IDX image file (magic 0x00000803)\n", idx);
        fclose(f);
        return 1;
    }
    uint32_t count = rd32(hdr + 4), rows = rd32(hdr + 8), cols = rd32(hdr + 12);
    if (rows == 0 || cols == 0 || rows > 1024 || cols > 1024) {
        fprintf(stderr, "mkpng: %s: implausible image size %ux%u\n", idx, rows, cols);
        fclose(f);
        return 1;
    }
    if ((uint64_t)index >= count) {
        fprintf(stderr, "mkpng: index %ld out of range, %s holds %u images\n", index, idx, count);
        fclose(f);
        return 1;
    }
    size_t isz = (size_t)rows * cols;
    uint8_t *img = malloc(isz);
    if (!img || fseek(f, 16 + (long)(isz * (size_t)index), SEEK_SET) != 0 ||
        fread(img, 1, isz, f) != isz) {
        fprintf(stderr, "mkpng: cannot read image %ld from %s (file too short?)\n", index, idx);
        free(img);
        fclose(f);
        return 1;
    }
    fclose(f);

    uint32_t W = cols * (uint32_t)scale, H = rows * (uint32_t)scale;
    uint16_t *s = samples((size_t)W * H);
    for (uint32_t y = 0; y < H; y++)
        for (uint32_t x = 0; x < W; x++) {
            float v;
            if (bilinear && scale > 1) {
                /* sample at the pixel centre in source coordinates */
                float fx = (x + 0.5f) / scale - 0.5f, fy = (y + 0.5f) / scale - 0.5f;
                fx = fx < 0 ? 0 : fx > cols - 1 ? cols - 1 : fx;
                fy = fy < 0 ? 0 : fy > rows - 1 ? rows - 1 : fy;
                uint32_t x0 = (uint32_t)fx, y0 = (uint32_t)fy;
                uint32_t x1 = x0 + 1 < cols ? x0 + 1 : x0, y1 = y0 + 1 < rows ? y0 + 1 : y0;
                float ax = fx - x0, ay = fy - y0;
                v = (img[y0 * cols + x0] * (1 - ax) + img[y0 * cols + x1] * ax) * (1 - ay) +
                    (img[y1 * cols + x0] * (1 - ax) + img[y1 * cols + x1] * ax) * ay;
            } else {
                v = img[(y / scale) * cols + x / scale];
            }
            uint16_t g = (uint16_t)lroundf(v);
            s[(size_t)y * W + x] = invert ? (uint16_t)(255 - g) : g;
        }
    free(img);
    image im = {.w = W, .h = H, .ctype = 0, .depth = 8, .s = s};
    size_t len;
    uint8_t *png = encode_or_die(&im, NULL, 0, &len);
    free(s);
    int rc = write_file(out, png, len) == 0 ? 0 : 1;
    free(png);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--from-idx") == 0) return from_idx(argc, argv);
    if (argc != 2 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    return write_all(argv[1]);
}
