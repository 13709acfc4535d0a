/* augment.h - deterministic geometric transforms of gray images, for
 * on-the-fly training augmentation and for robustness evaluation.
 *
 * A transform maps output pixel p to input pixel
 *   c + R(-rot) (p - c - shift) / scale
 * (c the image centre), sampled bilinearly with zero outside. The identity
 * transform (rot 0, scale 1, shift 0) copies the image exactly.
 * Random transforms are a pure function of (seed, counter), so a training
 * run is reproducible whatever the thread count.
 */
#ifndef NN_AUGMENT_H
#define NN_AUGMENT_H

#include <stdint.h>

typedef struct {
    float rot_deg; /* counter-clockwise degrees                          */
    float scale;   /* > 1 enlarges                                        */
    float dx, dy;  /* shift in pixels (right, down)                      */
    int flip;      /* non-zero: mirror left-right after the rest         */
} nn_affine;

typedef struct {
    float max_rot;                      /* degrees, uniform in [-max_rot, max_rot]           */
    float max_zoom;                     /* fraction, scale uniform in [1-z, 1+z]             */
    float max_shift;                    /* fraction of width/height, uniform                 */
    float elastic_alpha, elastic_sigma; /* 0 alpha = no elastic distortion */
    float flip_prob;                    /* probability of a left-right mirror (0 = never);
                         for objects, never for digits                     */
    float max_stroke;                   /* pen width: t uniform in [-s, s] blends the image
                         toward its grey dilation (t > 0, thicker strokes)
                         or erosion (t < 0, thinner) by |t|; 0 = off       */
    float max_blur;                     /* Gaussian blur, sigma uniform in [0, b] pixels;
                         0 = off                                            */
} nn_aug_cfg;

void nn_affine_identity(nn_affine *a);

/* dst [h*w] floats 0..1 from src [h*w] bytes through transform a. */
void nn_affine_apply(float *dst, const uint8_t *src, int h, int w, const nn_affine *a);

/* nn_affine_apply with each output pixel's sampling point first moved
 * by a displacement (fx[i], fy[i]) pixels ([h*w] each; NULL = none):
 * dst(p) = src(A(p + d(p))), one bilinear resampling in all. */
void nn_warp(float *dst, const uint8_t *src, int h, int w, const nn_affine *a, const float *fx,
             const float *fy);

/* Draws a transform within cfg for an h x w image from (seed, counter). */
void nn_aug_sample(nn_affine *a, const nn_aug_cfg *cfg, int h, int w, uint64_t seed,
                   uint64_t counter);

/* Full augmentation of one image: affine, with elastic distortion if
 * cfg->elastic_alpha > 0, then a stroke-width change if cfg->max_stroke > 0,
 * then a blur if cfg->max_blur > 0. scratch holds 3*h*w floats. Deterministic in
 * (seed, counter). */
void nn_augment(float *dst, const uint8_t *src, int h, int w, const nn_aug_cfg *cfg, uint64_t seed,
                uint64_t counter, float *scratch);

int nn_aug_is_identity(const nn_aug_cfg *cfg);

#endif
