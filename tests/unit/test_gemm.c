/* test_gemm.c - nn_gemm against nn_gemm_ref on every kernel path this CPU
 * runs: all transposes, edge sizes around the tile and block sizes, padded
 * strides, general alpha/beta, beta == 0 over NaN, alpha == 0 and K == 0,
 * and two threads multiplying at once.
 *
 * Two kinds of data: small integers, for which every partial sum is exact
 * in float, so the fast path must match the oracle bit for bit (a dropped
 * or doubled product cannot hide in a tolerance); and uniform floats in
 * [-1, 1], checked within 1e-5 * K * max|a| * max|b|. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_float(void) { return (float)(rnd() % 2000001) / 1e6f - 1.0f; }
static float rnd_int(void) { return (float)((int)(rnd() % 9) - 4); }

/* Sentinel written into the padding of C (columns N..ldc-1 and beyond the
 * last row): it must survive every call. */
#define SENTINEL 12345.5f

struct mats {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float *A, *B, *C, *Cref;
    size_t na, nb, nc;
};

/* Allocates op(A) [M,K], op(B) [K,N] (stored transposed if ta/tb) and C
 * [M,N], each row padded by 0..pad extra floats, filled by gen (C too,
 * unless c_nan: then C is NaN, for beta == 0). */
static void mats_make(struct mats *m, int ta, int tb, int M, int N, int K, int pad,
                      float (*gen)(void), int c_nan)
{
    m->ta = ta, m->tb = tb, m->M = M, m->N = N, m->K = K;
    int arows = ta ? K : M, acols = ta ? M : K;
    int brows = tb ? N : K, bcols = tb ? K : N;
    m->lda = acols + (pad ? (int)(rnd() % (pad + 1)) : 0);
    m->ldb = bcols + (pad ? (int)(rnd() % (pad + 1)) : 0);
    m->ldc = N + (pad ? (int)(rnd() % (pad + 1)) : 0);
    if (m->lda < 1) m->lda = 1;
    if (m->ldb < 1) m->ldb = 1;
    if (m->ldc < 1) m->ldc = 1;
    m->na = (size_t)arows * m->lda + 1;
    m->nb = (size_t)brows * m->ldb + 1;
    m->nc = (size_t)M * m->ldc + 8;
    m->A = malloc(m->na * sizeof(float));
    m->B = malloc(m->nb * sizeof(float));
    m->C = malloc(m->nc * sizeof(float));
    m->Cref = malloc(m->nc * sizeof(float));
    assert_non_null(m->A);
    assert_non_null(m->B);
    assert_non_null(m->C);
    assert_non_null(m->Cref);
    for (size_t i = 0; i < m->na; i++) m->A[i] = gen();
    for (size_t i = 0; i < m->nb; i++) m->B[i] = gen();
    for (size_t i = 0; i < m->nc; i++) m->C[i] = SENTINEL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) m->C[(size_t)i * m->ldc + j] = c_nan ? NAN : gen();
    memcpy(m->Cref, m->C, m->nc * sizeof(float));
}

static void mats_free(struct mats *m)
{
    free(m->A);
    free(m->B);
    free(m->C);
    free(m->Cref);
}

static float max_abs(const float *x, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

/* Runs both versions and compares; exact: bitwise-equal values required.
 * Fails with the shape and the first bad element. */
static void check(struct mats *m, float alpha, float beta, int exact)
{
    nn_gemm(m->ta, m->tb, m->M, m->N, m->K, alpha, m->A, m->lda, m->B, m->ldb, beta, m->C, m->ldc);
    nn_gemm_ref(m->ta, m->tb, m->M, m->N, m->K, alpha, m->A, m->lda, m->B, m->ldb, beta, m->Cref,
                m->ldc);
    float tol =
        1e-5f * (float)(m->K + 1) * max_abs(m->A, m->na) * max_abs(m->B, m->nb) * fabsf(alpha) +
        1e-6f;
    for (size_t idx = 0; idx < m->nc; idx++) {
        int i = (int)(idx / (size_t)m->ldc), j = (int)(idx % (size_t)m->ldc);
        int inside = i < m->M && j < m->N;
        float got = m->C[idx], want = m->Cref[idx];
        int ok;
        if (!inside)
            ok = got == SENTINEL;
        else if (exact)
            ok = got == want;
        else
            ok = isfinite(got) && fabsf(got - want) <= tol * (1 + fabsf(beta));
        if (!ok) {
            print_error("path %s ta=%d tb=%d M=%d N=%d K=%d lda=%d ldb=%d "
                        "ldc=%d alpha=%g beta=%g: C[%d][%d] = %.9g, want "
                        "%.9g (%s, tol %g)\n",
                        nn_gemm_path_name(NN_GEMM_PATH_AUTO), m->ta, m->tb, m->M, m->N, m->K,
                        m->lda, m->ldb, m->ldc, (double)alpha, (double)beta, i, j, (double)got,
                        (double)want, inside ? "inside" : "padding", (double)tol);
            fail();
        }
    }
}

static void one(int ta, int tb, int M, int N, int K, int pad, float alpha, float beta, int exact)
{
    struct mats m;
    mats_make(&m, ta, tb, M, N, K, pad, exact ? rnd_int : rnd_float, beta == 0.0f);
    check(&m, alpha, beta, exact);
    mats_free(&m);
}

/* Sizes around every tile and block boundary of every path: MR 6 and 8,
 * NR 8, 16 and 32, KC 192 and 256, MC 240, plus primes; 9, 17, 18, 26,
 * 36 and 49 rows take 9-row slivers on the 8-row paths (A in place). */
static const int msizes[] = {1,  2,  3,  5,   6,   7,   8,   9,  12, 13, 16,
                             17, 23, 48, 239, 240, 241, 250, 18, 26, 36, 49};
static const int nsizes[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 49, 64, 65, 100};
static const int ksizes[] = {1, 2, 3, 7, 16, 25, 64, 191, 192, 193, 255, 256, 257, 300, 385, 513};
#define COUNT(a) ((int)(sizeof a / sizeof a[0]))

/* The battery run on the path currently selected. */
static void battery(void)
{
    static const float alphas[] = {1.0f, 2.0f, -0.5f};
    static const float betas[] = {0.0f, 1.0f, -3.0f, 0.25f};
    /* Systematic: every transpose combination over a grid of small sizes
     * (tiny loop, dot path and blocked edges). */
    for (int t = 0; t < 4; t++)
        for (int mi = 0; mi < 12; mi++)
            for (int ni = 0; ni < 13; ni++)
                for (int ki = 0; ki < 8; ki += 3)
                    one(t >> 1, t & 1, msizes[mi], nsizes[ni], ksizes[ki], (mi + ni) % 3,
                        alphas[(mi + ki) % 3], betas[(ni + ki) % 4], 1);
    /* Random larger shapes, exact (integers) then float. */
    for (int r = 0; r < 160; r++) {
        int t = r & 3;
        int M = msizes[rnd() % COUNT(msizes)];
        int N = nsizes[rnd() % COUNT(nsizes)];
        int K = ksizes[rnd() % COUNT(ksizes)];
        one(t >> 1, t & 1, M, N, K, 5, alphas[rnd() % 3], betas[rnd() % 4], r % 2 == 0);
    }
}

static int select_path(int p)
{
    if (!nn_gemm_path_supported(p)) return 0;
    assert_int_equal(nn_gemm_set_path(p), 0);
    assert_int_equal(nn_gemm_get_path(), p);
    return 1;
}

static void test_paths(void **state)
{
    (void)state;
    int ran = 0;
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (!select_path(p)) {
            print_message("[ SKIP     ] path %s: not supported here\n", nn_gemm_path_name(p));
            continue;
        }
        print_message("[ PATH     ] %s\n", nn_gemm_path_name(p));
        battery();
        ran++;
    }
    /* The portable paths run everywhere. */
    assert_true(ran >= 2);
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* C1 (M + 1 rows, ldc apart) and C2 (M rows) for the row-offset tests: the
 * same random integers in the M x N block, SENTINEL in C1's padding and in
 * its extra row. */
static void c_pair_fill(float *C1, float *C2, int M, int N, int ldc)
{
    for (int i = 0; i < (M + 1) * ldc; i++) C1[i] = SENTINEL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C1[i * ldc + j] = C2[i * ldc + j] = rnd_int();
}

/* C1 equals the oracle's C2 exactly in the M x N block and every SENTINEL
 * survived. what and the inner dimension (dim = K or L) name the case. */
static void c_pair_check(const char *what, char dim, int M, int N, int inner, const float *C1,
                         const float *C2, int ldc)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            if (C1[i * ldc + j] != C2[i * ldc + j])
                fail_msg("%s %s M=%d N=%d %c=%d: C[%d,%d] = %g, want %g", what,
                         nn_gemm_path_name(NN_GEMM_PATH_AUTO), M, N, dim, inner, i, j,
                         C1[i * ldc + j], C2[i * ldc + j]);
        for (int j = N; j < ldc; j++) assert_true(C1[i * ldc + j] == SENTINEL);
    }
    for (int j = 0; j < ldc; j++) assert_true(C1[M * ldc + j] == SENTINEL);
}

/* nn_gemm_rows: B rows at arbitrary (overlapping) offsets into one
 * buffer, read in place, against the oracle on the gathered matrix. The
 * 32 floats past each row's N columns, which it may read, hold NaN: they
 * must never reach C. Integer data: exact match. */
static void rows_case(int M, int N, int K, float beta)
{
    const int ldc = N + 3;
    size_t nbuf = (size_t)K * 7 + N + 64;
    float *buf = malloc(nbuf * sizeof(float)), *A = malloc((size_t)M * K * sizeof(float));
    float *B = malloc((size_t)K * N * sizeof(float));
    float *C1 = malloc((size_t)(M + 1) * ldc * sizeof(float)),
          *C2 = malloc((size_t)M * ldc * sizeof(float));
    ptrdiff_t *roff = malloc((size_t)K * sizeof(ptrdiff_t));
    assert_true(buf && A && B && C1 && C2 && roff);
    for (size_t i = 0; i < nbuf; i++) buf[i] = rnd_int();
    for (int i = 0; i < M * K; i++) A[i] = rnd_int();
    for (int k = 0; k < K; k++) roff[k] = (ptrdiff_t)(rnd() % (unsigned)(K * 7));
    /* The last row reaches the end of the buffer; NaN past N there. */
    roff[K - 1] = (ptrdiff_t)(nbuf - 32 - N);
    for (size_t i = nbuf - 32; i < nbuf; i++) buf[i] = NAN;
    for (int k = 0; k < K; k++) memcpy(B + (size_t)k * N, buf + roff[k], (size_t)N * sizeof(float));
    c_pair_fill(C1, C2, M, N, ldc);
    nn_gemm_rows(M, N, K, 2.0f, A, K, buf, roff, beta, C1, ldc);
    nn_gemm_ref(0, 0, M, N, K, 2.0f, A, K, B, N, beta, C2, ldc);
    c_pair_check("rows", 'K', M, N, K, C1, C2, ldc);
    free(buf);
    free(A);
    free(B);
    free(C1);
    free(C2);
    free(roff);
}

static void test_rows(void **state)
{
    (void)state;
    static const int shapes[][3] = {{32, 728, 9}, {32, 624, 288}, {64, 70, 1600}, {7, 5, 3},
                                    {1, 1, 1},    {250, 33, 17},  {6, 16, 600},   {13, 47, 257}};
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (!select_path(p)) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int b = 0; b < 2; b++)
                rows_case(shapes[i][0], shapes[i][1], shapes[i][2], b ? 0.5f : 0.0f);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* nn_gemm_bpanels: B laid out once by nn_gemm_bpanels_pack (zeros padding
 * the last panel, which the kernels read), A read with a row stride as
 * the Winograd GEMMs do, against the oracle on B itself; and
 * nn_gemm_bpanels_rows on a block of the panels' rows. Integer data:
 * exact match, so a panel or row read from the wrong place fails. N
 * below, at and past a panel and a kernel's width; K past a block (256);
 * M from one row to several blocks of slivers, and the counts whose
 * leftover rows go into 9-row slivers (9, 17, 18, 26, 36, 49; not 12). */
static void bpanels_case(int M, int N, int K, float beta)
{
    const int ldc = N + 3, lda = K + 5;
    const size_t np = nn_gemm_bpanels_size(K, N);
    assert_true(np == (size_t)K * ((N + 15) / 16 * 16));
    float *A = malloc((size_t)M * lda * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
    float *Bp = malloc(np * sizeof(float));
    float *C1 = malloc((size_t)(M + 1) * ldc * sizeof(float)),
          *C2 = malloc((size_t)M * ldc * sizeof(float));
    assert_true(A && B && Bp && C1 && C2);
    for (int i = 0; i < M * lda; i++) A[i] = rnd_int();
    for (int i = 0; i < K * N; i++) B[i] = rnd_int();
    for (size_t i = 0; i < np; i++) Bp[i] = NAN;
    nn_gemm_bpanels_pack(Bp, B, N, K, N);
    for (size_t i = 0; i < np; i++) assert_false(isnan(Bp[i]));
    c_pair_fill(C1, C2, M, N, ldc);
    nn_gemm_bpanels(M, N, K, 2.0f, A, lda, Bp, beta, C1, ldc);
    nn_gemm_ref(0, 0, M, N, K, 2.0f, A, lda, B, N, beta, C2, ldc);
    c_pair_check("bpanels", 'K', M, N, K, C1, C2, ldc);
    /* nn_gemm_bpanels_rows: rows [k0, k0 + kk) of the same panels (a
     * third in, a quarter short of the end), A's columns to match. */
    const int k0 = K / 3, kk = K - k0 - K / 4;
    c_pair_fill(C1, C2, M, N, ldc);
    nn_gemm_bpanels_rows(M, N, kk, 2.0f, A + k0, lda, Bp + (size_t)k0 * NN_GEMM_BPANEL, K, beta, C1,
                         ldc);
    nn_gemm_ref(0, 0, M, N, kk, 2.0f, A + k0, lda, B + (size_t)k0 * N, N, beta, C2, ldc);
    c_pair_check("bpanels_rows", 'K', M, N, kk, C1, C2, ldc);
    free(A);
    free(B);
    free(Bp);
    free(C1);
    free(C2);
}

static void test_bpanels(void **state)
{
    (void)state;
    static const int shapes[][3] = {
        {36, 32, 32},  {4, 64, 256},  {9, 32, 128}, {144, 64, 64}, {1, 1, 1},    {7, 5, 3},
        {13, 47, 257}, {250, 33, 17}, {6, 16, 600}, {3, 8, 40},    {2, 100, 9},  {9, 64, 257},
        {36, 64, 64},  {49, 16, 32},  {26, 40, 72}, {17, 64, 128}, {18, 9, 300}, {12, 32, 16}};
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (!select_path(p)) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int b = 0; b < 2; b++)
                bpanels_case(shapes[i][0], shapes[i][1], shapes[i][2], b ? 0.5f : 0.0f);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* nn_gemm_rows_nt: C += A B^T with B's rows (L floats each) at arbitrary
 * overlapping offsets into one buffer, against the oracle on the gathered
 * matrix; the last row ends exactly at the buffer's end (nothing past L
 * may be read: ASan sees it). Integer data: exact. */
static void rows_nt_case(int M, int N, int L)
{
    const int ldc = N + 2;
    size_t nbuf = (size_t)N * 5 + L;
    float *buf = malloc(nbuf * sizeof(float)), *A = malloc((size_t)M * L * sizeof(float));
    float *B = malloc((size_t)N * L * sizeof(float));
    float *C1 = malloc((size_t)(M + 1) * ldc * sizeof(float)),
          *C2 = malloc((size_t)M * ldc * sizeof(float));
    ptrdiff_t *roff = malloc((size_t)N * sizeof(ptrdiff_t));
    assert_true(buf && A && B && C1 && C2 && roff);
    for (size_t i = 0; i < nbuf; i++) buf[i] = rnd_int();
    for (int i = 0; i < M * L; i++) A[i] = rnd_int();
    for (int j = 0; j < N; j++) roff[j] = (ptrdiff_t)(rnd() % (unsigned)(N * 5 + 1));
    roff[N - 1] = (ptrdiff_t)(nbuf - L);
    for (int j = 0; j < N; j++) memcpy(B + (size_t)j * L, buf + roff[j], (size_t)L * sizeof(float));
    c_pair_fill(C1, C2, M, N, ldc);
    nn_gemm_rows_nt(M, N, L, A, L, buf, roff, C1, ldc);
    nn_gemm_ref(0, 1, M, N, L, 1.0f, A, L, B, L, 1.0f, C2, ldc);
    c_pair_check("rows_nt", 'L', M, N, L, C1, C2, ldc);
    free(buf);
    free(A);
    free(B);
    free(C1);
    free(C2);
    free(roff);
}

static void test_rows_nt(void **state)
{
    (void)state;
    /* LeNet's first convolution (6 x 25, a group of 16 images), slices of
     * L (1024) and their tails, blocks of 3 x 4 and their edges. */
    static const int shapes[][3] = {{6, 25, 15360 + 896}, {1, 1, 1},    {3, 4, 16},
                                    {7, 18, 1031},        {2, 5, 2048}, {8, 9, 77}};
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (!select_path(p)) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            rows_nt_case(shapes[i][0], shapes[i][1], shapes[i][2]);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

static int cpu_avx2(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static int cpu_avx512(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    return cpu_avx2() && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* Sets NN_ISA to v (NULL: unset) and applies it; returns init's result. */
static int isa_apply(const char *v, char *err, size_t errlen)
{
    if (v)
        setenv("NN_ISA", v, 1);
    else
        unsetenv("NN_ISA");
    return nn_gemm_init_env(err, errlen);
}

/* NN_ISA caps the dispatch for the whole process: paths above the cap are
 * unsupported (nothing can select them), the cap's own path is in use,
 * and an unknown value or one the CPU lacks is refused with a message
 * naming it, changing nothing. Every value is tried whatever the CPU:
 * the expected outcome follows from the CPU's flags. */
static void test_isa_env(void **state)
{
    (void)state;
    char orig[64] = "", err[256], list[128];
    int had = getenv("NN_ISA") != NULL;
    if (had) snprintf(orig, sizeof orig, "%s", getenv("NN_ISA"));
    int before = nn_gemm_get_path();

    assert_int_equal(isa_apply("bogus", err, sizeof err), -1);
    assert_non_null(strstr(err, "NN_ISA=bogus"));
    assert_int_equal(nn_gemm_get_path(), before);

    assert_int_equal(isa_apply("generic", err, sizeof err), 0);
    assert_int_equal(nn_gemm_get_path(), NN_GEMM_PATH_GENERIC);
    assert_false(nn_gemm_path_supported(NN_GEMM_PATH_AVX2));
    assert_false(nn_gemm_path_supported(NN_GEMM_PATH_AVX512));
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AVX2), -1);
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    assert_int_equal(nn_gemm_get_path(), NN_GEMM_PATH_GENERIC);
    nn_gemm_paths_list(list, sizeof list);
    assert_string_equal(list, "generic");

    assert_int_equal(isa_apply("generic-wide", err, sizeof err), 0);
    assert_int_equal(nn_gemm_get_path(), NN_GEMM_PATH_GENERIC_WIDE);

    if (cpu_avx2()) {
        assert_int_equal(isa_apply("avx2", err, sizeof err), 0);
        assert_int_equal(nn_gemm_get_path(), NN_GEMM_PATH_AVX2);
        assert_false(nn_gemm_path_supported(NN_GEMM_PATH_AVX512));
        assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AVX512), -1);
        nn_gemm_paths_list(list, sizeof list);
        assert_string_equal(list, "generic avx2");
    } else {
        assert_int_equal(isa_apply("avx2", err, sizeof err), -1);
        assert_non_null(strstr(err, "cannot run"));
    }
    if (cpu_avx512()) {
        assert_int_equal(isa_apply("avx512", err, sizeof err), 0);
        assert_int_equal(nn_gemm_get_path(), NN_GEMM_PATH_AVX512);
        nn_gemm_paths_list(list, sizeof list);
        assert_string_equal(list, "generic avx2 avx512");
    } else {
        assert_int_equal(isa_apply("avx512", err, sizeof err), -1);
        assert_non_null(strstr(err, "cannot run"));
    }
    /* Unset, empty and "auto": the best the CPU runs. */
    int best = cpu_avx512() ? NN_GEMM_PATH_AVX512
               : cpu_avx2() ? NN_GEMM_PATH_AVX2
                            : NN_GEMM_PATH_GENERIC;
    assert_int_equal(isa_apply(NULL, err, sizeof err), 0);
    assert_int_equal(nn_gemm_get_path(), best);
    assert_int_equal(isa_apply("", err, sizeof err), 0);
    assert_int_equal(nn_gemm_get_path(), best);
    assert_int_equal(isa_apply("auto", err, sizeof err), 0);
    assert_int_equal(nn_gemm_get_path(), best);
    /* The names a user can give, longest list first, are exactly these. */
    assert_int_equal(nn_gemm_paths_list(list, sizeof list), strlen(list));
    assert_int_equal(nn_gemm_paths_list(list, 4), strlen("generic") +
                                                      (cpu_avx2() ? strlen(" avx2") : 0) +
                                                      (cpu_avx512() ? strlen(" avx512") : 0));
    assert_int_equal(strlen(list), 3); /* truncated, NUL-terminated */

    /* Back to the cap this run was started with. */
    assert_int_equal(isa_apply(had ? orig : NULL, err, sizeof err), 0);
}

static void test_dispatch(void **state)
{
    (void)state;
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    int best = nn_gemm_get_path();
    assert_true(best >= 0 && best < NN_GEMM_PATH_COUNT);
    assert_int_not_equal(best, NN_GEMM_PATH_GENERIC_WIDE);
    assert_true(nn_gemm_path_supported(best));
    /* AUTO takes the widest supported instruction set. */
    if (nn_gemm_path_supported(NN_GEMM_PATH_AVX512))
        assert_int_equal(best, NN_GEMM_PATH_AVX512);
    else if (nn_gemm_path_supported(NN_GEMM_PATH_AVX2))
        assert_int_equal(best, NN_GEMM_PATH_AVX2);
    else
        assert_int_equal(best, NN_GEMM_PATH_GENERIC);
#if defined(__GNUC__) && defined(__x86_64__)
    /* Without a cap, "supported" is what the CPU runs. */
    const char *isa = getenv("NN_ISA");
    if (isa == NULL || *isa == '\0' || strcmp(isa, "auto") == 0)
        assert_int_equal(nn_gemm_path_supported(NN_GEMM_PATH_AVX2), cpu_avx2());
#endif
    /* Unknown or unsupported paths are refused and change nothing. */
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_COUNT), -1);
    assert_int_equal(nn_gemm_set_path(-7), -1);
    if (!nn_gemm_path_supported(NN_GEMM_PATH_AVX512))
        assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AVX512), -1);
    assert_int_equal(nn_gemm_get_path(), best);
    assert_string_equal(nn_gemm_path_name(NN_GEMM_PATH_GENERIC), "generic");
    assert_string_equal(nn_gemm_path_name(NN_GEMM_PATH_AUTO), nn_gemm_path_name(best));
    assert_string_equal(nn_gemm_path_name(99), "unknown");
}

/* The shapes the CNN library uses, float data, on the default path. */
static void test_typical_shapes(void **state)
{
    (void)state;
    static const int shapes[][5] = {
        /* ta tb M N K */
        {0, 0, 6, 784, 25},     {0, 0, 16, 100, 150}, {0, 0, 32, 196, 800}, {0, 0, 64, 49, 1600},
        {0, 1, 16, 150, 100},   {1, 0, 150, 100, 16}, {0, 1, 32, 120, 400}, {0, 1, 1, 120, 400},
        {0, 1, 2, 84, 120},     {1, 0, 120, 400, 32}, {0, 0, 32, 400, 120}, {0, 0, 1, 10, 84},
        {0, 0, 128, 784, 1152},
    };
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    for (int s = 0; s < COUNT(shapes); s++) {
        const int *x = shapes[s];
        one(x[0], x[1], x[2], x[3], x[4], 0, 1.0f, 0.0f, 0);
        one(x[0], x[1], x[2], x[3], x[4], 3, 1.0f, 1.0f, 0);
        one(x[0], x[1], x[2], x[3], x[4], 0, 1.0f, 1.0f, 1);
    }
}

/* Empty products: M or N of 0 touch nothing, K == 0 or alpha == 0 give
 * beta * C without reading A or B (which hold NaN here). */
static void test_degenerate(void **state)
{
    (void)state;
    float A[64], B[64], C[64];
    for (int i = 0; i < 64; i++) A[i] = B[i] = NAN;
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (!select_path(p)) continue;
        for (int i = 0; i < 64; i++) C[i] = 2.0f;
        nn_gemm(0, 0, 0, 4, 4, 1.0f, A, 4, B, 4, 0.0f, C, 4);
        nn_gemm(0, 0, 4, 0, 4, 1.0f, A, 4, B, 4, 0.0f, C, 4);
        for (int i = 0; i < 64; i++) assert_true(C[i] == 2.0f);
        /* K == 0 with beta 3: C = 3 C, padding column untouched. */
        nn_gemm(1, 1, 3, 4, 0, 1.0f, A, 3, B, 1, 3.0f, C, 5);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) assert_true(C[i * 5 + j] == (j < 4 ? 6.0f : 2.0f));
        /* K == 0 with beta 0 over NaN: zeros. */
        for (int i = 0; i < 64; i++) C[i] = NAN;
        nn_gemm(0, 0, 4, 4, 0, 1.0f, A, 1, B, 4, 0.0f, C, 4);
        for (int i = 0; i < 16; i++) assert_true(C[i] == 0.0f);
        /* alpha == 0 over NaN operands, big enough for the blocked path. */
        float *Ab = malloc(64 * 64 * sizeof(float));
        float *Bb = malloc(64 * 64 * sizeof(float));
        float *Cb = malloc(64 * 64 * sizeof(float));
        assert_non_null(Ab);
        assert_non_null(Bb);
        assert_non_null(Cb);
        for (int i = 0; i < 64 * 64; i++) Ab[i] = Bb[i] = NAN, Cb[i] = 1.0f;
        nn_gemm(0, 0, 64, 64, 64, 0.0f, Ab, 64, Bb, 64, 0.5f, Cb, 64);
        for (int i = 0; i < 64 * 64; i++) assert_true(Cb[i] == 0.5f);
        free(Ab);
        free(Bb);
        free(Cb);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* Two threads multiplying different shapes at once must each get their
 * own single-thread answer (per-thread packing memory). */
struct job {
    int ta, tb, M, N, K;
    float *A, *B, *C, *want;
    int bad;
};

static void *job_run(void *arg)
{
    struct job *j = arg;
    int lda = j->ta ? j->M : j->K, ldb = j->tb ? j->K : j->N;
    for (int rep = 0; rep < 20 && !j->bad; rep++) {
        nn_gemm(j->ta, j->tb, j->M, j->N, j->K, 1.0f, j->A, lda, j->B, ldb, 0.0f, j->C, j->N);
        if (memcmp(j->C, j->want, (size_t)j->M * j->N * sizeof(float))) j->bad = 1;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct job jobs[2] = {{0, 0, 64, 300, 500, 0, 0, 0, 0, 0}, {1, 1, 100, 77, 333, 0, 0, 0, 0, 0}};
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    for (int t = 0; t < 2; t++) {
        struct job *j = &jobs[t];
        size_t na = (size_t)j->M * j->K, nb = (size_t)j->K * j->N, nc = (size_t)j->M * j->N;
        j->A = malloc(na * sizeof(float));
        j->B = malloc(nb * sizeof(float));
        j->C = malloc(nc * sizeof(float));
        j->want = malloc(nc * sizeof(float));
        assert_non_null(j->A);
        assert_non_null(j->B);
        assert_non_null(j->C);
        assert_non_null(j->want);
        for (size_t i = 0; i < na; i++) j->A[i] = rnd_float();
        for (size_t i = 0; i < nb; i++) j->B[i] = rnd_float();
        int lda = j->ta ? j->M : j->K, ldb = j->tb ? j->K : j->N;
        nn_gemm(j->ta, j->tb, j->M, j->N, j->K, 1.0f, j->A, lda, j->B, ldb, 0.0f, j->want, j->N);
    }
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, job_run, &jobs[t]), 0);
    for (int t = 0; t < 2; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(jobs[t].bad, 0);
        free(jobs[t].A);
        free(jobs[t].B);
        free(jobs[t].C);
        free(jobs[t].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),   cmocka_unit_test(test_isa_env),
        cmocka_unit_test(test_degenerate), cmocka_unit_test(test_typical_shapes),
        cmocka_unit_test(test_threads),    cmocka_unit_test(test_paths),
        cmocka_unit_test(test_rows),       cmocka_unit_test(test_rows_nt),
        cmocka_unit_test(test_bpanels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
