/* tol.h - the error bounds numeric tests compare against, derived from
 * the arithmetic rather than read off one machine.
 *
 * A float sum of n products, added in any order, with or without fused
 * multiply-add (every kernel path does one or the other), is within
 * gamma(n) * sum |a_i b_i| of the exact sum, gamma(n) = n u / (1 - n u),
 * u = 2^-24 the unit roundoff (Higham, "Accuracy and Stability of
 * Numerical Algorithms", 2nd ed., eq. 3.5). The references accumulate in
 * double and round once (one more u relative to the result). So a fast
 * kernel's result and the reference's differ by at most
 * (gamma(n) + u) * m, where m is the same sum taken over absolute values:
 * the reference run on |inputs| gives m exactly where it is needed.
 *
 * A bug (a dropped, doubled or misplaced product) moves a result by about
 * one product, roughly m / n: far above the bound for every n used here.
 */
#ifndef TEST_TOL_H
#define TEST_TOL_H

#include <math.h>
#include <stdlib.h>

#define TOL_U 0x1p-24

static inline double tol_gamma(double n) { return n * TOL_U / (1.0 - n * TOL_U); }

/* |got - want| <= (gamma(n) + u) * mag + the smallest normal float (so a
 * zero magnitude still allows a denormal difference). */
static inline int tol_ok(float got, float want, double n, float mag)
{
    double bound = (tol_gamma(n) + TOL_U) * fabs((double)mag) + 0x1p-126;
    return isfinite(got) && fabs((double)got - (double)want) <= bound;
}

/* A malloc'ed copy of x[0..n) with every element made non-negative. */
static inline float *tol_absdup(const float *x, size_t n)
{
    float *a = malloc((n ? n : 1) * sizeof(float));
    if (a)
        for (size_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
    return a;
}

/* Asserts tol_ok for element i of arrays got/want/mag; on failure prints
 * the element, both values and the bound. For cmocka tests. */
#define assert_tol(what, got, want, i, n, mag)                                               \
    do {                                                                                     \
        float g_ = (got)[i], w_ = (want)[i], m_ = (mag)[i];                                  \
        if (!tol_ok(g_, w_, (n), m_)) {                                                      \
            print_error("%s[%zu] = %.9g, reference %.9g, bound %.3g "                        \
                        "(n = %g, magnitude %.6g)\n",                                        \
                        what, (size_t)(i), (double)g_, (double)w_,                           \
                        (tol_gamma(n) + TOL_U) * fabs((double)m_), (double)(n), (double)m_); \
            fail();                                                                          \
        }                                                                                    \
    } while (0)

#endif
