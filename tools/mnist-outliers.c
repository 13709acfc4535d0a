/* mnist-outliers - writes an IDX file of 28x28 images that are not digits,
 * for outlier exposure (mnist-train --outliers FILE).
 *
 * Every image is drawn from (seed, index) alone, so a run is reproducible
 * and any image can be regenerated on its own. Eight kinds take turns:
 *
 *   scribble   three to seven random curves with a round pen
 *   shapes     one to three filled ellipses, boxes or polygons, some textured
 *   stars      self-crossing polygon outlines (5 to 9 corners)
 *   clouds     smooth random fields, some thresholded into blobs
 *   hatching   parallel lines, grids and checkerboards at any angle
 *   specks     five to forty scattered dots
 *   pairs      two MNIST training digits side by side (a two-digit number)
 *   crossed    an MNIST training digit laid over itself turned a quarter
 *
 * plus, with --letters FILE, letters rendered from fonts (build/mnist-glyphs),
 * which then make a share of the images (--letters-share, default 1/9).
 *
 * Most are framed the way an uploaded PNG is (img_prep_mnist: crop to the
 * ink, fit 20x20, centre of mass at the centre); one in three fills the
 * whole 28x28 frame instead, as a raw tensor sent to the v2 endpoint may.
 * Nothing here comes from Fashion-MNIST, the set the score is judged on.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opt.h"
#include "nn/idx.h"
#include "nn/rng.h"
#include "tools/pen.h"

#define S 56 /* drawing canvas: twice the output size */
#define PI 3.14159265358979f

enum { K_SCRIBBLE, K_SHAPES, K_STARS, K_CLOUDS, K_HATCH, K_SPECKS, K_PAIRS, K_CROSSED, K_LETTER };

static float uni(nn_rng *r, float a, float b) { return a + (b - a) * nn_rng_uniform(r); }

static void put_max(float *c, int x, int y, float v) { pen_put_max(c, S, x, y, v); }

static void segment(float *c, float x0, float y0, float x1, float y1, float rad, float ink)
{
    pen_segment(c, S, x0, y0, x1, y1, rad, ink);
}

/* A cubic Bezier curve through four random points, as 16 segments. */
static void curve(float *c, nn_rng *r, float rad, float ink)
{
    float p[8];
    for (int i = 0; i < 8; i++) p[i] = uni(r, 4, S - 4);
    float px = p[0], py = p[1];
    for (int i = 1; i <= 16; i++) {
        float t = i / 16.0f, u = 1 - t;
        float x = u * u * u * p[0] + 3 * u * u * t * p[2] + 3 * u * t * t * p[4] + t * t * t * p[6];
        float y = u * u * u * p[1] + 3 * u * u * t * p[3] + 3 * u * t * t * p[5] + t * t * t * p[7];
        segment(c, px, py, x, y, rad, ink);
        px = x, py = y;
    }
}

/* Is (x,y) inside the polygon of n corners (even-odd rule)? */
static int inside(const float *vx, const float *vy, int n, float x, float y)
{
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++)
        if ((vy[i] > y) != (vy[j] > y) &&
            x < (vx[j] - vx[i]) * (y - vy[i]) / (vy[j] - vy[i]) + vx[i])
            in = !in;
    return in;
}

/* Smooth noise: a 7x7 grid of random values, bilinearly interpolated. */
static void cloud(float *c, nn_rng *r)
{
    float g[8][8];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) g[i][j] = nn_rng_uniform(r);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float fx = x * 7.0f / S, fy = y * 7.0f / S;
            int ix = (int)fx, iy = (int)fy;
            float ax = fx - ix, ay = fy - iy;
            c[y * S + x] = (1 - ay) * ((1 - ax) * g[iy][ix] + ax * g[iy][ix + 1]) +
                           ay * ((1 - ax) * g[iy + 1][ix] + ax * g[iy + 1][ix + 1]);
        }
}

static void shapes(float *c, nn_rng *r)
{
    int n = 1 + (int)nn_rng_below(r, 3), textured = nn_rng_below(r, 3) == 0;
    float tex[S * S];
    if (textured) cloud(tex, r);
    for (int s = 0; s < n; s++) {
        float ink = uni(r, 0.4f, 1.0f), cx = uni(r, 12, S - 12), cy = uni(r, 12, S - 12);
        float a = uni(r, 6, 24), b = uni(r, 6, 24), th = uni(r, 0, PI);
        float co = cosf(th), si = sinf(th), vx[6], vy[6];
        int kind = (int)nn_rng_below(r, 3), nv = 3 + (int)nn_rng_below(r, 4);
        for (int i = 0; i < nv; i++) { /* a convex-ish polygon around the centre */
            float an = 2 * PI * (i + uni(r, -0.3f, 0.3f)) / nv;
            vx[i] = cx + a * cosf(an), vy[i] = cy + b * sinf(an);
        }
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
                float u = (co * dx + si * dy) / a, v = (-si * dx + co * dy) / b;
                int in = kind == 0   ? u * u + v * v <= 1.0f
                         : kind == 1 ? fabsf(u) <= 1.0f && fabsf(v) <= 1.0f
                                     : inside(vx, vy, nv, x + 0.5f, y + 0.5f);
                if (in) put_max(c, x, y, ink * (textured ? 0.5f + 0.5f * tex[y * S + x] : 1.0f));
            }
    }
}

static void star(float *c, nn_rng *r)
{
    int n = 5 + (int)nn_rng_below(r, 5), step = 2 + (int)nn_rng_below(r, 2);
    float cx = S / 2.0f, cy = S / 2.0f, rad = uni(r, 1.5f, 4.0f), ink = uni(r, 0.6f, 1.0f);
    float vx[9], vy[9], th = uni(r, 0, 2 * PI);
    for (int i = 0; i < n; i++) {
        float an = th + 2 * PI * i / n, rr = uni(r, 14, 26);
        vx[i] = cx + rr * cosf(an), vy[i] = cy + rr * sinf(an);
    }
    /* Joining every step-th corner makes the outline cross itself. */
    for (int i = 0, j = 0; i < n; i++, j = (j + step) % n) {
        int k = (j + step) % n;
        segment(c, vx[j], vy[j], vx[k], vy[k], rad, ink);
    }
}

static void hatch(float *c, nn_rng *r)
{
    int kind = (int)nn_rng_below(r, 3);
    float th = uni(r, 0, PI), gap = uni(r, 4, 12), w = uni(r, 0.25f, 0.6f);
    float co = cosf(th), si = sinf(th);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float u = co * x + si * y, v = -si * x + co * y;
            float fu = u / gap - floorf(u / gap), fv = v / gap - floorf(v / gap);
            float val = kind == 0   ? fu < w
                        : kind == 1 ? (fu < w || fv < w)
                                    : ((fu < 0.5f) ^ (fv < 0.5f));
            c[y * S + x] = val;
        }
}

static void specks(float *c, nn_rng *r)
{
    int n = 5 + (int)nn_rng_below(r, 36);
    for (int i = 0; i < n; i++) {
        float x = uni(r, 3, S - 3), y = uni(r, 3, S - 3);
        segment(c, x, y, x, y, uni(r, 0.8f, 3.0f), uni(r, 0.5f, 1.0f));
    }
}

/* MNIST digit d (28x28) drawn into the canvas at 2x scale, offset (ox, oy)
 * in canvas pixels, turned a quarter when quarter != 0. */
static void digit(float *c, const uint8_t *d, int ox, int oy, int quarter, float sx)
{
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int u = (int)((x - ox) / sx), v = (y - oy) / 2;
            if (u < 0 || v < 0 || u >= 28 || v >= 28) continue;
            int q = quarter ? d[u * 28 + (27 - v)] : d[v * 28 + u];
            put_max(c, x, y, q / 255.0f);
        }
}

/* Canvas -> 28x28 bytes: framed like an upload, or 2x2 averaged so the
 * drawing fills the frame. Returns -1 when the framing finds no ink. */
static int finish(const float *c, int framed, uint8_t *out)
{
    if (framed) {
        uint8_t g[S * S];
        char err[128];
        return pen_frame(c, S, g, out, err, sizeof err);
    }
    int any = 0;
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            const float *p = c + 2 * y * S + 2 * x;
            float v = 0.25f * (p[0] + p[1] + p[S] + p[S + 1]);
            out[y * 28 + x] = (uint8_t)lrintf(255.0f * (v > 1 ? 1 : v));
            any |= out[y * 28 + x] > 32;
        }
    return any ? 0 : -1;
}

typedef struct {
    const nn_dataset *mnist, *letters;
    uint64_t seed;
    double letters_share;
} gen_t;

static void make_one(const gen_t *g, uint64_t index, uint8_t *out)
{
    int letter = g->letters && nn_hash_uniform(g->seed ^ 0x1e77e5, index) < g->letters_share;
    for (uint64_t attempt = 0;; attempt++) {
        nn_rng r;
        nn_rng_seed(&r, nn_hash64(g->seed, index * 64 + attempt));
        int kind = letter ? K_LETTER : (int)(index % 8);
        if (kind == K_LETTER) {
            memcpy(out,
                   g->letters->images + 784 * (size_t)nn_rng_below(&r, (uint32_t)g->letters->n),
                   784);
            return;
        }
        float c[S * S];
        memset(c, 0, sizeof c);
        int framed = nn_rng_below(&r, 3) != 0;
        const uint8_t *m = g->mnist->images;
        uint32_t nm = (uint32_t)g->mnist->n;
        switch (kind) {
        case K_SCRIBBLE: {
            int n = 3 + (int)nn_rng_below(&r, 5);
            float rad = uni(&r, 1.2f, 4.5f);
            for (int i = 0; i < n; i++) curve(c, &r, rad, uni(&r, 0.6f, 1.0f));
            break;
        }
        case K_SHAPES: shapes(c, &r); break;
        case K_STARS: star(c, &r); break;
        case K_CLOUDS: {
            cloud(c, &r);
            float t = uni(&r, 0.3f, 0.8f);
            if (nn_rng_below(&r, 2))
                for (int i = 0; i < S * S; i++) c[i] = c[i] > t ? 1.0f : 0.0f;
            break;
        }
        case K_HATCH: hatch(c, &r); break;
        case K_SPECKS: specks(c, &r); break;
        case K_PAIRS: {
            const uint8_t *a = m + 784 * (size_t)nn_rng_below(&r, nm),
                          *b = m + 784 * (size_t)nn_rng_below(&r, nm);
            digit(c, a, -8, 0, 0, 1.0f); /* each digit squeezed to half the width */
            digit(c, b, 20, 0, 0, 1.0f);
            framed = 1;
            break;
        }
        case K_CROSSED: {
            const uint8_t *a = m + 784 * (size_t)nn_rng_below(&r, nm);
            digit(c, a, 0, 0, 0, 2.0f);
            digit(c, a, 0, 0, 1, 2.0f);
            break;
        }
        }
        if (finish(c, framed, out) == 0) return;
    }
}

int main(int argc, char **argv)
{
    const char *out = NULL, *data = "data/mnist", *letters_path = NULL;
    int n = 60000;
    double share = 1.0 / 9;
    unsigned long long seed = 1;
    const cli_opt opts[] = {
        {"out", CLI_STRING, &out, 0, 0, "FILE", "IDX images file to write (required)", .def = NULL},
        {"n", CLI_INT, &n, 1, 10000000, "N", "images to write", .def = "60000"},
        {"seed", CLI_U64, &seed, 0, 18446744073709551615.0, "N", "random seed", .def = "1"},
        {"data", CLI_STRING, &data, 0, 0, "DIR", "MNIST IDX files (training digits for pairs)",
         .def = "data/mnist"},
        {"letters", CLI_STRING, &letters_path, 0, 0, "FILE", "IDX images of letters to mix in",
         .def = "none"},
        {"letters-share", CLI_DOUBLE, &share, 0, 1, "F", "share of the images that are letters",
         .def = "1/9"},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **operands = calloc((size_t)argc, sizeof *operands);
    int nops = 0;
    if (!operands) {
        fprintf(stderr, "mnist-outliers: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, operands, &nops, err, sizeof err);
    free(operands);
    switch (act) {
    case CLI_HELP:
        cli_usage(stdout, "usage: mnist-outliers [options] --out FILE\n", opts, nopts);
        return 0;
    case CLI_VERSION: printf("mnist-outliers 1\n"); return 0;
    case CLI_ERROR: fprintf(stderr, "mnist-outliers: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (!out || nops) {
        fprintf(stderr, "mnist-outliers: %s\n", nops ? "unexpected operand" : "--out is required");
        return 2;
    }
    gen_t g = {NULL, NULL, seed, share};
    nn_dataset *mnist = nn_dataset_load_dir(data, 0, 10, err, sizeof err), *letters = NULL;
    if (!mnist) {
        fprintf(stderr, "mnist-outliers: %s (run `make data`)\n", err);
        return 1;
    }
    if (letters_path) {
        letters = nn_dataset_load(letters_path, NULL, 256, err, sizeof err);
        if (!letters || letters->rows != 28 || letters->cols != 28 || letters->n < 1) {
            fprintf(stderr, "mnist-outliers: --letters: %s\n",
                    letters ? "not a set of 28x28 images" : err);
            nn_dataset_free(letters);
            nn_dataset_free(mnist);
            return 2;
        }
    }
    g.mnist = mnist;
    g.letters = letters;
    int rc = 1;
    uint8_t *img = malloc((size_t)n * 784);
    if (!img) {
        fprintf(stderr, "mnist-outliers: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n; i++) make_one(&g, (uint64_t)i, img + (size_t)i * 784);
    if (nn_idx_write_images(out, img, n, 28, 28, err, sizeof err)) {
        fprintf(stderr, "mnist-outliers: %s\n", err);
        goto done;
    }
    fprintf(stderr, "mnist-outliers: wrote %d images to %s\n", n, out);
    rc = 0;
done:
    free(img);
    nn_dataset_free(mnist);
    nn_dataset_free(letters);
    return rc;
}
