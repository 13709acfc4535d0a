/* mnist-strokes - writes an IDX set of 28x28 0s and 1s drawn with a round
 * pen: clean strokes, the way a person draws them on the drawing page with
 * a mouse or a finger, and the shapes MNIST's scanned pencil strokes rarely
 * have (a perfectly straight bar, an even loop).
 *
 *   mnist-strokes --out PREFIX [--n N] [--seed S]
 *     writes PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte
 *
 * The out-of-distribution head (mnist-eval --ood-method head --head-in) is
 * taught with them that such strokes are digits, next to MNIST's own. Only
 * 0s and 1s: of the ten digits they are the two a pen draws as one plain
 * geometric figure, a bar and a loop, so a clean one is still the digit.
 *
 * Images alternate, 1 then 0; every one is drawn from (seed, index) alone,
 * so a run is reproducible and any image can be regenerated on its own:
 *
 *   1  a bar 60-90 px tall on a 112 px canvas, pen radius 1.8-9% of it,
 *      leaning -0.25..0.35 rad (positive: the top to the right), bowed by
 *      up to 8% of its height; one in three has a flag at the top (15-35%
 *      of the height, 0.5-1.1 rad off the bar), one in six a foot (a base
 *      30-60% of the height wide)
 *   0  an elliptical loop as tall, 0.45-1 times as wide as tall, turned
 *      -0.3..0.3 rad, started within 0.6 rad of the top and drawn round
 *      0.95-1.075 turns (a small gap or overlap where it closes)
 *
 * then prepared as an upload is (img_prep_mnist: crop to the ink, fit
 * 20x20, centre of mass at the centre). Nothing here comes from a data set;
 * the pen-drawn digits of scripts/pen-digits.mjs, which measure the head,
 * come from other strokes (tests/browser/digits.mjs). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opt.h"
#include "nn/idx.h"
#include "nn/rng.h"
#include "tools/pen.h"

#define S 112 /* drawing canvas */
#define PI 3.14159265f

static float uni(nn_rng *r, float a, float b) { return a + (b - a) * nn_rng_uniform(r); }

static void draw_one(float *c, nn_rng *r, float h, float rad)
{
    float a = uni(r, -0.25f, 0.35f), bend = uni(r, -0.08f, 0.08f) * h;
    float tx = S / 2 + 0.5f * h * sinf(a), ty = S / 2 - 0.5f * h * cosf(a);
    float bx = S / 2 - 0.5f * h * sinf(a), by = S / 2 + 0.5f * h * cosf(a);
    float px = tx, py = ty;
    for (int k = 1; k <= 16; k++) { /* the bar, bowed as a parabola */
        float t = k / 16.0f, b = 4 * t * (1 - t) * bend;
        float x = tx + (bx - tx) * t + b * cosf(a), y = ty + (by - ty) * t + b * sinf(a);
        pen_segment(c, S, px, py, x, y, rad, 1.0f);
        px = x, py = y;
    }
    if (nn_rng_below(r, 3) == 0) {
        float len = h * uni(r, 0.15f, 0.35f), fa = uni(r, 0.5f, 1.1f);
        pen_segment(c, S, tx, ty, tx - len * sinf(fa), ty + len * cosf(fa), rad, 1.0f);
    }
    if (nn_rng_below(r, 6) == 0) {
        float half = h * uni(r, 0.15f, 0.3f);
        pen_segment(c, S, bx - half, by, bx + half, by, rad, 1.0f);
    }
}

static void draw_zero(float *c, nn_rng *r, float h, float rad)
{
    float aspect = uni(r, 0.45f, 1.0f), turn = uni(r, -0.3f, 0.3f);
    float a0 = uni(r, -0.6f, 0.6f) - PI / 2, sweep = uni(r, 1.9f, 2.15f) * PI;
    float rx = 0.5f * h * aspect, ry = 0.5f * h, px = 0, py = 0;
    for (int k = 0; k <= 64; k++) {
        float t = a0 + sweep * k / 64.0f, ex = rx * cosf(t), ey = ry * sinf(t);
        float x = S / 2 + ex * cosf(turn) - ey * sinf(turn);
        float y = S / 2 + ex * sinf(turn) + ey * cosf(turn);
        if (k) pen_segment(c, S, px, py, x, y, rad, 1.0f);
        px = x, py = y;
    }
}

/* Image index of the set into out[784], its digit into *label. 0, or -1
 * with err (the framing found no ink: not expected of these shapes). */
static int make_one(uint64_t seed, uint64_t index, uint8_t out[784], uint8_t *label, char *err,
                    size_t errlen)
{
    float c[S * S];
    uint8_t g[S * S];
    nn_rng r;
    nn_rng_seed(&r, nn_hash64(seed, index));
    memset(c, 0, sizeof c);
    *label = index % 2 == 0 ? 1 : 0;
    float h = uni(&r, 60, 90), rad = h * uni(&r, 0.018f, 0.09f);
    if (*label == 1)
        draw_one(c, &r, h, rad);
    else
        draw_zero(c, &r, h, rad);
    return pen_frame(c, S, g, out, err, errlen);
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    int n = 3000;
    unsigned long long seed = 1;
    const cli_opt opts[] = {
        {"out", CLI_STRING, &out, 0, 0, "PREFIX",
         "write PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte (required)", .def = NULL},
        {"n", CLI_INT, &n, 1, 10000000, "N", "images to write (1s and 0s in turn)", .def = "3000"},
        {"seed", CLI_U64, &seed, 0, 18446744073709551615.0, "N", "random seed", .def = "1"},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[4400];
    const char **operands = calloc((size_t)argc, sizeof *operands);
    int nops = 0;
    if (!operands) {
        fprintf(stderr, "mnist-strokes: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, operands, &nops, err, sizeof err);
    free(operands);
    switch (act) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-strokes [options] --out PREFIX\n"
                  "Writes an IDX set of 0s and 1s drawn with a round pen (bars and loops),\n"
                  "prepared as uploads are, for mnist-eval --ood-method head --head-in.",
                  opts, nopts);
        return 0;
    case CLI_VERSION: printf("mnist-strokes 1\n"); return 0;
    case CLI_ERROR: fprintf(stderr, "mnist-strokes: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (!out || nops) {
        fprintf(stderr, "mnist-strokes: %s\n", nops ? "unexpected operand" : "--out is required");
        return 2;
    }
    int rc = 1;
    uint8_t *img = malloc((size_t)n * 784), *lab = malloc((size_t)n);
    char path[4096], lpath[4096];
    if (!img || !lab) {
        fprintf(stderr, "mnist-strokes: out of memory\n");
        goto done;
    }
    if (snprintf(path, sizeof path, "%s-images-idx3-ubyte", out) >= (int)sizeof path ||
        snprintf(lpath, sizeof lpath, "%s-labels-idx1-ubyte", out) >= (int)sizeof lpath) {
        fprintf(stderr, "mnist-strokes: --out: name too long\n");
        rc = 2;
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (make_one(seed, (uint64_t)i, img + (size_t)i * 784, lab + i, err, sizeof err)) {
            fprintf(stderr, "mnist-strokes: image %d: %s\n", i, err);
            goto done;
        }
    if (nn_idx_write_images(path, img, n, 28, 28, err, sizeof err) ||
        nn_idx_write_labels(lpath, lab, n, err, sizeof err)) {
        fprintf(stderr, "mnist-strokes: %s\n", err);
        remove(path); /* no images without their labels */
        goto done;
    }
    printf("mnist-strokes: wrote %d images (1s and 0s in turn, seed %llu) to %s-*\n", n, seed, out);
    rc = 0;
done:
    free(img);
    free(lab);
    return rc;
}
