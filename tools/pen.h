/* pen.h - a round pen on a square float canvas (0 paper .. 1 ink), and the
 * canvas framed as an upload is, shared by the programs that draw their own
 * images (mnist-outliers, mnist-strokes). Ink only ever darkens a pixel:
 * where strokes cross, the darker one wins. */
#ifndef TOOLS_PEN_H
#define TOOLS_PEN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

/* Pixel (x, y) of the size x size canvas c to at least v; outside, nothing. */
static inline void pen_put_max(float *c, int size, int x, int y, float v)
{
    if (x >= 0 && y >= 0 && x < size && y < size && c[y * size + x] < v) c[y * size + x] = v;
}

/* A round pen of radius rad along the segment (x0,y0)-(x1,y1), with a one
 * pixel anti-aliased rim, ink 0..1. */
static inline void pen_segment(float *c, int size, float x0, float y0, float x1, float y1,
                               float rad, float ink)
{
    float dx = x1 - x0, dy = y1 - y0, l2 = dx * dx + dy * dy;
    int xa = (int)floorf(fminf(x0, x1) - rad - 1), xb = (int)ceilf(fmaxf(x0, x1) + rad + 1);
    int ya = (int)floorf(fminf(y0, y1) - rad - 1), yb = (int)ceilf(fmaxf(y0, y1) + rad + 1);
    for (int y = ya; y <= yb; y++)
        for (int x = xa; x <= xb; x++) {
            float px = x + 0.5f - x0, py = y + 0.5f - y0;
            float t = l2 > 0 ? (px * dx + py * dy) / l2 : 0.0f;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            float ex = px - t * dx, ey = py - t * dy, d = sqrtf(ex * ex + ey * ey);
            float a = rad + 0.5f - d;
            if (a > 0) pen_put_max(c, size, x, y, ink * (a > 1 ? 1 : a));
        }
}

/* The canvas as 8-bit gray (ink above 1 counts as 1) into gray[size *
 * size], then prepared as an uploaded PNG is (img_prep_mnist: crop to the
 * ink, fit 20x20, centre of mass at the centre) into out[784] as bytes.
 * 0, or -1 with err (img_prep_mnist's message: no ink, for one). */
static inline int pen_frame(const float *c, int size, uint8_t *gray, uint8_t out[784], char *err,
                            size_t errlen)
{
    float f[784];
    for (int i = 0; i < size * size; i++) gray[i] = (uint8_t)lrintf(255.0f * (c[i] > 1 ? 1 : c[i]));
    if (img_prep_mnist(gray, (uint32_t)size, (uint32_t)size, f, err, errlen) != IMG_OK) return -1;
    for (int i = 0; i < 784; i++) out[i] = (uint8_t)lrintf(255.0f * f[i]);
    return 0;
}

#endif
