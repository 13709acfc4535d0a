/* gemm_bench.c - GFLOP/s of nn_gemm on the shapes the CNN library runs,
 * beside the reference triple loop, the portable path and, when the
 * OpenBLAS shared library is installed, OpenBLAS's cblas_sgemm on one
 * thread (loaded with dlopen, so neither this program nor the library
 * depends on a BLAS).
 *
 *   build/bench/gemm_bench [--peak GFLOPS] [--quick]
 *
 * --peak: one core's FP32 FMA peak (from build/bench/peak) to print each
 * figure as a fraction of it. --quick: shorter timings.
 * Each figure is the best of 5 timed runs of at least 50 ms (20 ms quick),
 * the implementations interleaved per shape so machine noise hits all. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/gemm.h"

static double now(void)
{
    struct timespec ts;
    /* Thread CPU time: this machine is shared, and time spent descheduled
     * says nothing about the kernel (cache pollution still shows). */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* cblas enums are ints in the ABI: RowMajor 101, NoTrans 111, Trans 112. */
typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
static cblas_sgemm_fn blas_sgemm;
static const char *blas_config = "";

static void load_openblas(void)
{
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    blas_sgemm = (cblas_sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*set_threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    char *(*config)(void) = (char *(*)(void))dlsym(h, "openblas_get_config");
    if (set_threads) set_threads(1);
    if (config) blas_config = config();
}

enum impl { OURS, GENERIC, REF, BLAS, NIMPL };
static const char *impl_names[NIMPL] = {"nn_gemm", "generic", "ref", "openblas"};

struct shape {
    const char *what;
    int ta, tb, M, N, K;
};

static void call(enum impl im, const struct shape *s, const float *A, const float *B, float *C)
{
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    switch (im) {
    case OURS:
    case GENERIC:
        nn_gemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 1.0f, C, s->N);
        break;
    case REF:
        nn_gemm_ref(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 1.0f, C, s->N);
        break;
    case BLAS:
        blas_sgemm(101, s->ta ? 112 : 111, s->tb ? 112 : 111, s->M, s->N, s->K, 1.0f, A, lda, B,
                   ldb, 1.0f, C, s->N);
        break;
    default: break;
    }
}

/* GFLOP/s, best of 5 runs of >= min_secs each. */
static double timeit(enum impl im, const struct shape *s, const float *A, const float *B, float *C,
                     double min_secs)
{
    int auto_path = nn_gemm_get_path();
    if (im == GENERIC) nn_gemm_set_path(NN_GEMM_PATH_GENERIC);
    double flops = 2.0 * s->M * s->N * s->K;
    call(im, s, A, B, C); /* warm caches and per-thread buffers */
    long reps = 1;
    double t0 = now();
    call(im, s, A, B, C);
    double one = now() - t0;
    if (one < min_secs) reps = (long)(min_secs / (one > 1e-9 ? one : 1e-9)) + 1;
    int runs = im == REF ? 1 : 5; /* the reference is only a yardstick */
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        t0 = now();
        for (long i = 0; i < reps; i++) call(im, s, A, B, C);
        double t = (now() - t0) / reps;
        if (t < best) best = t;
    }
    nn_gemm_set_path(auto_path);
    return flops / best / 1e9;
}

int main(int argc, char **argv)
{
    double peak = 0, min_secs = 0.05;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--peak") && i + 1 < argc)
            peak = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            min_secs = 0.02;
        else {
            fprintf(stderr, "usage: %s [--peak GFLOPS] [--quick]\n", argv[0]);
            return 2;
        }
    }
    static const struct shape shapes[] = {
        {"lenet conv1 fwd", 0, 0, 6, 784, 25},
        {"lenet conv2 fwd", 0, 0, 16, 100, 150},
        {"lenet conv2 dW", 0, 1, 16, 150, 100},
        {"lenet conv2 dcol", 1, 0, 150, 100, 16},
        {"conv 3x3 32->32 fwd", 0, 0, 32, 784, 288},
        {"conv 3x3 32->64 fwd", 0, 0, 64, 196, 288},
        {"conv 3x3 64->128 fwd", 0, 0, 128, 49, 576},
        {"conv 5x5 32->64 fwd", 0, 0, 64, 196, 800},
        {"conv 3x3 64 dW", 0, 1, 64, 576, 196},
        {"conv 3x3 64 dcol", 1, 0, 576, 196, 64},
        {"dense 400->120 b1", 0, 1, 1, 120, 400},
        {"dense 84->10 b1", 0, 1, 1, 10, 84},
        {"dense 400->120 b32", 0, 1, 32, 120, 400},
        {"dense 784->128 b128", 0, 1, 128, 128, 784},
        {"dense 400->120 dW b32", 1, 0, 120, 400, 32},
        {"dense 400->120 dX b32", 0, 0, 32, 400, 120},
        {"square-ish 256x784x800", 0, 0, 256, 784, 800},
        {"square 512", 0, 0, 512, 512, 512},
    };
    load_openblas();
    printf("nn_gemm path: %s", nn_gemm_path_name(NN_GEMM_PATH_AUTO));
    if (blas_sgemm)
        printf("; openblas (1 thread): %s", blas_config);
    else
        printf("; openblas: not installed");
    printf("\n%-24s %2s %2s %4s %4s %4s  %9s %9s %9s %9s  %s\n", "shape", "ta", "tb", "M", "N", "K",
           impl_names[OURS], impl_names[GENERIC], impl_names[REF], impl_names[BLAS],
           "ours/ref ours/blas");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
        float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C);
        if (!A || !B || !C) {
            fprintf(stderr, "gemm_bench: out of memory\n");
            return 1;
        }
        for (size_t j = 0; j < na; j++) A[j] = (float)(j % 17) * 0.01f - 0.08f;
        for (size_t j = 0; j < nb; j++) B[j] = (float)(j % 13) * 0.01f - 0.06f;
        memset(C, 0, nc * sizeof *C);
        double g[NIMPL] = {0};
        for (int im = 0; im < NIMPL; im++)
            if (im != BLAS || blas_sgemm) g[im] = timeit((enum impl)im, s, A, B, C, min_secs);
        printf("%-24s %2d %2d %4d %4d %4d  %9.1f %9.1f %9.2f ", s->what, s->ta, s->tb, s->M, s->N,
               s->K, g[OURS], g[GENERIC], g[REF]);
        if (blas_sgemm)
            printf("%9.1f  %7.1fx %8.2fx", g[BLAS], g[OURS] / g[REF], g[OURS] / g[BLAS]);
        else
            printf("%9s  %7.1fx %9s", "-", g[OURS] / g[REF], "-");
        if (peak > 0) printf("  %3.0f%% of peak", 100 * g[OURS] / peak);
        printf("\n");
        free(A);
        free(B);
        free(C);
    }
    return 0;
}
