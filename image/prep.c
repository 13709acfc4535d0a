/* prep.c - gray image of any size -> 28x28 MNIST-style input.
 *
 * What MNIST did (LeCun et al.): the digit's bounding box was scaled to fit
 * 20x20 keeping the aspect ratio, anti-aliased, then placed in 28x28 so that
 * its intensity centre of mass sits at the centre. Measured on the 10k test
 * set, that centre is (14.0, 14.0) in pixel-index coordinates (the pixel at
 * column x has coordinate x), every image within 0.5 px of it. We do the same:
 *
 *   1. polarity: the median of the border ring is the background; when it is
 *      on the light side of the image's range, the ink is dark and we invert;
 *   2. ink = how far a pixel is from the background, towards the ink side;
 *   3. bounding box of pixels above 10% of the strongest ink (faint noise and
 *      specks do not stretch the box);
 *   4. longer side to 20 px by area averaging (box filter with fractional
 *      coverage), ink renormalised so the strongest pixel is 1.0;
 *   5. integer shift putting the centre of mass at (14, 14); halves round
 *      towards zero so that MNIST's own images (off by at most 0.5) stay put.
 *
 * A 28x28 input whose ink box is already MNIST-sized (12..20 px) skips the
 * rescale and the renormalisation: it only gets the polarity and the shift,
 * so a real MNIST digit comes through bit for bit (value/255).
 *
 * img_prep_fit shares steps 1-4 but scales to 28 px and centres the box
 * rather than the mass: that is how Fashion-MNIST framed its products.
 */
#include "image/errf.h"
#include "image/image.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREP_SIDE 28
#define PREP_BOX 20
#define PREP_COM 14.0
#define PREP_MIN_CONTRAST 8  /* gray levels; below this: blank */
#define PREP_PASS_MIN_BOX 12 /* smaller 28x28 digits get rescaled */
/* fit: a 28x28 input whose ink box already spans this much is taken as
 * framed (Fashion-MNIST's objects touch the frame; faint edges can keep the
 * 10% box a pixel or two short of it) and is only centred. */
#define PREP_FIT_PASS_MIN_BOX 24

typedef struct {
    int light; /* background lighter than the ink */
    int bg;    /* background level 0..255 */
} polarity;

static inline int ink_of(const polarity *p, int v)
{
    int d = p->light ? p->bg - v : v - p->bg;
    return d > 0 ? d : 0;
}

static int hist_median(const uint64_t hist[256], uint64_t n)
{
    uint64_t acc = 0;
    for (int v = 0; v < 256; v++) {
        acc += hist[v];
        if (2 * acc >= n) return v;
    }
    return 255;
}

/* Round to nearest, halves towards zero. */
static int round_half_in(double d)
{
    double a = ceil(fabs(d) - 0.5 - 1e-9);
    return (int)(d < 0 ? -a : a);
}

/* Integer shift of a nw x nh patch whose centre of mass is (cx, cy), chosen
 * to bring that centre to PREP_COM, clamped so the patch stays inside. */
static int place(double c, int n)
{
    int off = round_half_in(PREP_COM - c);
    if (off < 0) off = 0;
    if (off > PREP_SIDE - n) off = PREP_SIDE - n;
    return off;
}

static void centre_of_mass(const float *img, int w, int h, double *cx, double *cy)
{
    double s = 0, sx = 0, sy = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double v = img[y * w + x];
            s += v;
            sx += v * x;
            sy += v * y;
        }
    *cx = s > 0 ? sx / s : (w - 1) / 2.0;
    *cy = s > 0 ? sy / s : (h - 1) / 2.0;
}

/* Weights of a 1-D area-averaging resample of n source samples onto m
 * destination samples: destination i covers source [i*n/m, (i+1)*n/m). */
static void box_span(uint32_t n, uint32_t m, uint32_t i, double *a, double *b)
{
    *a = (double)i * n / m;
    *b = (double)(i + 1) * n / m;
}

static float box_sum_row(const float *src, uint32_t stride, double a, double b)
{
    double s = 0;
    uint32_t k0 = (uint32_t)floor(a), k1 = (uint32_t)ceil(b);
    for (uint32_t k = k0; k < k1; k++) {
        double lo = k > a ? k : a, hi = k + 1.0 < b ? k + 1.0 : b;
        s += src[(size_t)k * stride] * (hi - lo);
    }
    return (float)(s / (b - a));
}

/* What the steps shared by every mode found: the polarity and the box of
 * clearly inked pixels [x0..x1] x [y0..y1]. */
typedef struct {
    polarity pol;
    uint32_t x0, y0, bw, bh, longest;
} ink_box;

/* Steps 1-3: polarity, blank detection, bounding box of the ink.
 * IMG_OK or IMG_ERR_BLANK (with a message); clears out first. */
static img_status find_ink(const uint8_t *gray, uint32_t w, uint32_t h, float out[784], ink_box *ib,
                           char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    memset(out, 0, sizeof(float) * PREP_SIDE * PREP_SIDE);
    if (!gray || w == 0 || h == 0) {
        img_errf(err, errlen, "empty image (%ux%u)", (unsigned)w, (unsigned)h);
        return IMG_ERR_BLANK;
    }

    /* 1. range and border median */
    /* The darkest and lightest levels by a min/max scan (it vectorises):
     * a histogram of every pixel was a chain of increments of one counter
     * on a mostly blank image, 60% of this function's time. */
    uint64_t bhist[256] = {0}, nb = 0;
    const size_t npix = (size_t)w * h;
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < npix; i++) {
        mn = gray[i] < mn ? gray[i] : mn;
        mx = gray[i] > mx ? gray[i] : mx;
    }
    const int lo = mn, hi = mx;
    if (hi - lo < PREP_MIN_CONTRAST) {
        img_errf(err, errlen, "no ink: the image is a single tone (%d..%d)", lo, hi);
        return IMG_ERR_BLANK;
    }
    for (uint32_t x = 0; x < w; x++) {
        bhist[gray[x]]++;
        bhist[gray[(size_t)(h - 1) * w + x]]++;
        nb += 2;
    }
    for (uint32_t y = 1; y + 1 < h; y++) {
        bhist[gray[(size_t)y * w]]++;
        bhist[gray[(size_t)y * w + w - 1]]++;
        nb += 2;
    }
    polarity pol;
    pol.bg = hist_median(bhist, nb);
    pol.light = 2 * pol.bg > lo + hi;

    /* 2-3. strongest ink, then the box of clearly inked pixels */
    int maxink = pol.light ? pol.bg - lo : hi - pol.bg;
    if (maxink < PREP_MIN_CONTRAST) {
        img_errf(err, errlen, "no ink: nothing stands out from the background");
        return IMG_ERR_BLANK;
    }
    /* A row's first and last inked pixels bound its part of the box: a
     * table of the inked levels, and scans from both ends. */
    uint8_t inked[256];
    for (int v = 0; v < 256; v++) inked[v] = ink_of(&pol, v) * 10 > maxink;
    uint32_t x0 = w, x1 = 0, y0 = h, y1 = 0;
    for (uint32_t y = 0; y < h; y++) {
        const uint8_t *row = gray + (size_t)y * w;
        uint32_t a = 0, b = w;
        while (a < w && !inked[row[a]]) a++;
        if (a == w) continue;
        while (!inked[row[b - 1]]) b--;
        if (a < x0) x0 = a;
        if (b - 1 > x1) x1 = b - 1;
        if (y < y0) y0 = y;
        y1 = y;
    }
    /* maxink >= 8 guarantees at least one pixel passed */
    ib->pol = pol;
    ib->x0 = x0;
    ib->y0 = y0;
    ib->bw = x1 - x0 + 1;
    ib->bh = y1 - y0 + 1;
    ib->longest = ib->bw > ib->bh ? ib->bw : ib->bh;
    return IMG_OK;
}

/* ink/255 of every gray level. */
static void ink_table(const polarity *pol, float lut[256])
{
    for (int v = 0; v < 256; v++) lut[v] = (float)ink_of(pol, v) / 255.0f;
}

/* A 28x28 input kept pixel for pixel (ink/255 by ink_table), moved by
 * (dx, dy). */
static void copy_shifted(const uint8_t *gray, const float lut[256], int dx, int dy, float out[784])
{
    const int xa = dx > 0 ? dx : 0, xb = dx < 0 ? PREP_SIDE + dx : PREP_SIDE;
    memset(out, 0, sizeof(float) * PREP_SIDE * PREP_SIDE);
    for (int y = 0; y < PREP_SIDE; y++) {
        const int sy = y - dy;
        if (sy < 0 || sy >= PREP_SIDE) continue;
        const uint8_t *src = gray + sy * PREP_SIDE + (xa - dx);
        float *o = out + y * PREP_SIDE + xa;
        for (int i = 0; i < xb - xa; i++) o[i] = lut[src[i]];
    }
}

/* Step 4: area-averages the ink box to *nw x *nh with the longer side
 * `side` (<= PREP_SIDE), ink renormalised so the strongest pixel is 1.0. */
static img_status scale_box(const uint8_t *gray, uint32_t w, const ink_box *ib, uint32_t side,
                            float small[784], uint32_t *pnw, uint32_t *pnh, char *err,
                            size_t errlen)
{
    uint32_t bw = ib->bw, bh = ib->bh;
    double scale = (double)side / ib->longest;
    uint32_t nw = (uint32_t)lround(bw * scale), nh = (uint32_t)lround(bh * scale);
    if (nw < 1) nw = 1;
    if (nh < 1) nh = 1;
    if (nw > side) nw = side;
    if (nh > side) nh = side;

    /* Horizontal pass into tmp (bh rows x nw), vertical pass into small. */
    float *tmp = malloc(sizeof(float) * (size_t)bh * nw);
    float *line = malloc(sizeof(float) * (bw > bh ? bw : bh));
    if (!tmp || !line) {
        free(tmp);
        free(line);
        img_errf(err, errlen, "out of memory scaling a %ux%u box", (unsigned)bw, (unsigned)bh);
        return IMG_ERR_NOMEM;
    }
    for (uint32_t y = 0; y < bh; y++) {
        const uint8_t *row = gray + (size_t)(ib->y0 + y) * w + ib->x0;
        for (uint32_t x = 0; x < bw; x++) line[x] = (float)ink_of(&ib->pol, row[x]);
        for (uint32_t i = 0; i < nw; i++) {
            double a, b;
            box_span(bw, nw, i, &a, &b);
            tmp[(size_t)y * nw + i] = box_sum_row(line, 1, a, b);
        }
    }
    float peak = 0;
    for (uint32_t x = 0; x < nw; x++)
        for (uint32_t j = 0; j < nh; j++) {
            double a, b;
            box_span(bh, nh, j, &a, &b);
            float v = box_sum_row(tmp + x, nw, a, b);
            small[j * nw + x] = v;
            if (v > peak) peak = v;
        }
    free(tmp);
    free(line);
    if (!(peak > 0)) {
        img_errf(err, errlen, "no ink left after scaling");
        return IMG_ERR_BLANK;
    }
    for (uint32_t i = 0; i < nw * nh; i++) small[i] /= peak;
    *pnw = nw;
    *pnh = nh;
    return IMG_OK;
}

static void paste(const float *small, uint32_t nw, uint32_t nh, int ox, int oy, float out[784])
{
    for (uint32_t y = 0; y < nh; y++)
        for (uint32_t x = 0; x < nw; x++)
            out[(oy + (int)y) * PREP_SIDE + ox + (int)x] = small[y * nw + x];
}

img_status img_prep_mnist(const uint8_t *gray, uint32_t w, uint32_t h, float out[784], char *err,
                          size_t errlen)
{
    ink_box ib;
    img_status st = find_ink(gray, w, h, out, &ib, err, errlen);
    if (st != IMG_OK) return st;

    if (w == PREP_SIDE && h == PREP_SIDE && ib.longest >= PREP_PASS_MIN_BOX &&
        ib.longest <= PREP_BOX) {
        /* Already MNIST-shaped: keep every pixel, only centre. */
        float lut[256];
        ink_table(&ib.pol, lut);
        copy_shifted(gray, lut, 0, 0, out);
        double cx, cy;
        centre_of_mass(out, PREP_SIDE, PREP_SIDE, &cx, &cy);
        copy_shifted(gray, lut, round_half_in(PREP_COM - cx), round_half_in(PREP_COM - cy), out);
        return IMG_OK;
    }

    float small[PREP_SIDE * PREP_SIDE];
    uint32_t nw, nh;
    st = scale_box(gray, w, &ib, PREP_BOX, small, &nw, &nh, err, errlen);
    if (st != IMG_OK) return st;

    /* 5. place with the centre of mass at the centre */
    double cx, cy;
    centre_of_mass(small, (int)nw, (int)nh, &cx, &cy);
    paste(small, nw, nh, place(cx, (int)nw), place(cy, (int)nh), out);
    return IMG_OK;
}

/* Shift bringing a box starting at o, n long, to the centre of the frame;
 * a half-pixel ambiguity keeps the box where it is (round_half_in), so an
 * image that is already centred by box (Fashion-MNIST) stays put. */
static int centre_shift(uint32_t o, uint32_t n)
{
    return round_half_in((PREP_SIDE - (double)n) / 2.0 - (double)o);
}

img_status img_prep_fit(const uint8_t *gray, uint32_t w, uint32_t h, float out[784], char *err,
                        size_t errlen)
{
    ink_box ib;
    img_status st = find_ink(gray, w, h, out, &ib, err, errlen);
    if (st != IMG_OK) return st;

    if (w == PREP_SIDE && h == PREP_SIDE && ib.longest >= PREP_FIT_PASS_MIN_BOX) {
        /* Already framed like Fashion-MNIST: keep every pixel (faint edges
         * outside the 10% box included), only centre the box. */
        float lut[256];
        ink_table(&ib.pol, lut);
        copy_shifted(gray, lut, centre_shift(ib.x0, ib.bw), centre_shift(ib.y0, ib.bh), out);
        return IMG_OK;
    }

    float small[PREP_SIDE * PREP_SIDE];
    uint32_t nw, nh;
    st = scale_box(gray, w, &ib, PREP_SIDE, small, &nw, &nh, err, errlen);
    if (st != IMG_OK) return st;
    paste(small, nw, nh, centre_shift(0, nw), centre_shift(0, nh), out);
    return IMG_OK;
}

img_status img_prep_by_name(const char *mode, const uint8_t *gray, uint32_t w, uint32_t h,
                            float out[784], char *err, size_t errlen)
{
    if (mode && !strcmp(mode, "mnist")) return img_prep_mnist(gray, w, h, out, err, errlen);
    if (mode && !strcmp(mode, "fit")) return img_prep_fit(gray, w, h, out, err, errlen);
    memset(out, 0, sizeof(float) * PREP_SIDE * PREP_SIDE);
    img_errf(err, errlen, "unknown preprocessing \"%s\" (expected \"mnist\" or \"fit\")",
             mode ? mode : "(null)");
    return IMG_ERR_ARG;
}
