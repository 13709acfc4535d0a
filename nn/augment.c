#include "nn/augment.h"

#include <math.h>
#include <string.h>

#include "nn/rng.h"

void nn_affine_identity(nn_affine *a)
{
    a->rot_deg = 0.0f;
    a->scale = 1.0f;
    a->dx = 0.0f;
    a->dy = 0.0f;
    a->flip = 0;
}

/* Bilinear sample of bytes src at (x, y), zero outside, 0..255. */
static float sample(const uint8_t *src, int h, int w, float x, float y)
{
    int x0 = (int)floorf(x), y0 = (int)floorf(y);
    float fx = x - x0, fy = y - y0, v = 0.0f;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
            int xx = x0 + i, yy = y0 + j;
            if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
            v += (i ? fx : 1.0f - fx) * (j ? fy : 1.0f - fy) * src[yy * w + xx];
        }
    return v;
}

static int is_identity(const nn_affine *a)
{
    return a->rot_deg == 0.0f && a->scale == 1.0f && a->dx == 0.0f && a->dy == 0.0f;
}

static void mirror(float *img, int h, int w)
{
    for (int y = 0; y < h; y++)
        for (int x = 0, r = w - 1; x < r; x++, r--) {
            float t = img[y * w + x];
            img[y * w + x] = img[y * w + r];
            img[y * w + r] = t;
        }
}

void nn_warp(float *dst, const uint8_t *src, int h, int w, const nn_affine *a, const float *fx,
             const float *fy)
{
    float th = a->rot_deg * 3.14159265358979f / 180.0f;
    float c = cosf(th), s = sinf(th), inv = 1.0f / a->scale;
    float cx = 0.5f * (w - 1), cy = 0.5f * (h - 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float px = x - cx - a->dx, py = y - cy - a->dy;
            if (fx) {
                px += fx[y * w + x];
                py += fy[y * w + x];
            }
            float ux = (c * px - s * py) * inv + cx;
            float uy = (s * px + c * py) * inv + cy;
            dst[y * w + x] = sample(src, h, w, ux, uy) * (1.0f / 255.0f);
        }
    if (a->flip) mirror(dst, h, w);
}

void nn_affine_apply(float *dst, const uint8_t *src, int h, int w, const nn_affine *a)
{
    if (is_identity(a)) {
        for (int i = 0; i < h * w; i++) dst[i] = src[i] * (1.0f / 255.0f);
        if (a->flip) mirror(dst, h, w);
        return;
    }
    nn_warp(dst, src, h, w, a, NULL, NULL);
}

void nn_aug_sample(nn_affine *a, const nn_aug_cfg *cfg, int h, int w, uint64_t seed,
                   uint64_t counter)
{
    uint64_t k = counter * 8;
    float u0 = nn_hash_uniform(seed, k), u1 = nn_hash_uniform(seed, k + 1);
    float u2 = nn_hash_uniform(seed, k + 2), u3 = nn_hash_uniform(seed, k + 3);
    a->rot_deg = (2.0f * u0 - 1.0f) * cfg->max_rot;
    a->scale = 1.0f + (2.0f * u1 - 1.0f) * cfg->max_zoom;
    a->dx = (2.0f * u2 - 1.0f) * cfg->max_shift * (float)w;
    a->dy = (2.0f * u3 - 1.0f) * cfg->max_shift * (float)h;
    /* Slot k+4: the first four draws stay what they were before flips. */
    a->flip = cfg->flip_prob > 0.0f && nn_hash_uniform(seed, k + 4) < cfg->flip_prob;
}

int nn_aug_is_identity(const nn_aug_cfg *cfg)
{
    return cfg->max_rot == 0.0f && cfg->max_zoom == 0.0f && cfg->max_shift == 0.0f &&
           cfg->elastic_alpha == 0.0f && cfg->flip_prob == 0.0f && cfg->max_stroke == 0.0f &&
           cfg->max_blur == 0.0f;
}

/* Separable Gaussian blur of f [h*w] in place, tmp [h*w]; zero outside.
 * Each output sums only the taps that land inside, in the same order as a
 * bounds check per tap would, without the check in the inner loop. */
static void blur(float *f, float *tmp, int h, int w, float sigma)
{
    float k[33];
    int r = (int)ceilf(3.0f * sigma);
    if (r > 16) r = 16;
    float sum = 0.0f;
    for (int i = -r; i <= r; i++) sum += (k[i + r] = expf(-0.5f * i * i / (sigma * sigma)));
    for (int i = 0; i <= 2 * r; i++) k[i] /= sum;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int lo = x - r < 0 ? -x : -r, hi = x + r >= w ? w - 1 - x : r;
            const float *row = f + y * w + x;
            float v = 0.0f;
            for (int i = lo; i <= hi; i++) v += k[i + r] * row[i];
            tmp[y * w + x] = v;
        }
    for (int y = 0; y < h; y++) {
        int lo = y - r < 0 ? -y : -r, hi = y + r >= h ? h - 1 - y : r;
        for (int x = 0; x < w; x++) f[y * w + x] = 0.0f;
        for (int i = lo; i <= hi; i++) {
            const float *src = tmp + (y + i) * w;
            float *dst = f + y * w, kk = k[i + r];
            for (int x = 0; x < w; x++) dst[x] += kk * src[x];
        }
    }
}

/* Elastic distortion (Simard et al. 2003): a smoothed random displacement
 * field scaled by alpha. It moves the points where the affine map is
 * sampled, so the image is resampled once: warping the affine output
 * again would blur every stroke a second time. */
static void elastic(float *dst, const uint8_t *src, int h, int w, const nn_affine *a,
                    const nn_aug_cfg *cfg, uint64_t seed, uint64_t counter, float *scratch)
{
    int n = h * w;
    float *fx = scratch, *fy = scratch + n, *tmp = scratch + 2 * n;
    uint64_t s2 = nn_hash64(seed ^ 0x5eed, counter);
    for (int i = 0; i < n; i++) {
        fx[i] = 2.0f * nn_hash_uniform(s2, 2 * (uint64_t)i) - 1.0f;
        fy[i] = 2.0f * nn_hash_uniform(s2, 2 * (uint64_t)i + 1) - 1.0f;
    }
    blur(fx, tmp, h, w, cfg->elastic_sigma);
    blur(fy, tmp, h, w, cfg->elastic_sigma);
    for (int i = 0; i < n; i++) {
        fx[i] *= cfg->elastic_alpha;
        fy[i] *= cfg->elastic_alpha;
    }
    nn_warp(dst, src, h, w, a, fx, fy);
}

/* Pen width: img += |t| (m - img), m the grey dilation (t > 0) or erosion
 * (t < 0) of img over the pixel and its four neighbours (zero outside).
 * m [h*w] scratch. */
static void stroke(float *img, float *m, int h, int w, float t)
{
    float a = t > 0.0f ? t : -t;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float v = img[y * w + x], u[4];
            u[0] = x > 0 ? img[y * w + x - 1] : 0.0f;
            u[1] = x < w - 1 ? img[y * w + x + 1] : 0.0f;
            u[2] = y > 0 ? img[(y - 1) * w + x] : 0.0f;
            u[3] = y < h - 1 ? img[(y + 1) * w + x] : 0.0f;
            float e = v;
            for (int i = 0; i < 4; i++)
                e = t > 0.0f ? (u[i] > e ? u[i] : e) : (u[i] < e ? u[i] : e);
            m[y * w + x] = e;
        }
    for (int i = 0; i < h * w; i++) img[i] += a * (m[i] - img[i]);
}

void nn_augment(float *dst, const uint8_t *src, int h, int w, const nn_aug_cfg *cfg, uint64_t seed,
                uint64_t counter, float *scratch)
{
    nn_affine a;
    nn_aug_sample(&a, cfg, h, w, seed, counter);
    if (cfg->elastic_alpha <= 0.0f)
        nn_affine_apply(dst, src, h, w, &a);
    else
        elastic(dst, src, h, w, &a, cfg, seed, counter, scratch);
    if (cfg->max_stroke > 0.0f) {
        /* Slot 5 of the image's draws (nn_aug_sample uses 0-4). */
        float t = (2.0f * nn_hash_uniform(seed, counter * 8 + 5) - 1.0f) * cfg->max_stroke;
        stroke(dst, scratch, h, w, t);
    }
    if (cfg->max_blur > 0.0f) {
        /* Slot 6: softer strokes than the scans have. */
        float sigma = nn_hash_uniform(seed, counter * 8 + 6) * cfg->max_blur;
        if (sigma > 0.05f) blur(dst, scratch, h, w, sigma);
    }
}
