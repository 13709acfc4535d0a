/* peak.c - the machine's FP32 fused multiply-add peak: a loop of
 * independent FMAs on registers only (no memory traffic), on one core and
 * on every core at once, for each vector width this CPU runs.
 *
 *   build/bench/peak [seconds-per-measurement]     (default 0.3)
 *
 * Prints one line per (ISA, threads) with GFLOP/s (an FMA counts 2 flops),
 * the best of 5 runs. Rates are per thread CPU time (summed over threads),
 * so other processes on this shared machine lower them less than wall
 * time would; the FMA loop has no memory traffic to disturb. This is the ceiling the GEMM and training figures are
 * quoted against. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cli/opt.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PEAK_X86 1
#else
#define PEAK_X86 0
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Each loop runs `iters` iterations of 12 independent FMA chains: enough
 * to cover 2 FMA pipes x 4-5 cycles of latency. Returns flops done; the
 * result is stored to *sink so the chains stay live. */
typedef double (*fma_loop)(long iters, float *sink);

#define CHAINS(FMA, VT, SET1, STORE, LANES)                                  \
    VT a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f);   \
    VT a4 = SET1(1.4f), a5 = SET1(1.5f), a6 = SET1(1.6f), a7 = SET1(1.7f);   \
    VT a8 = SET1(1.8f), a9 = SET1(1.9f), a10 = SET1(2.0f), a11 = SET1(2.1f); \
    VT m = SET1(*sink), c = SET1(sink[1]);                                   \
    for (long i = 0; i < iters; i++) {                                       \
        a0 = FMA(a0, m, c);                                                  \
        a1 = FMA(a1, m, c);                                                  \
        a2 = FMA(a2, m, c);                                                  \
        a3 = FMA(a3, m, c);                                                  \
        a4 = FMA(a4, m, c);                                                  \
        a5 = FMA(a5, m, c);                                                  \
        a6 = FMA(a6, m, c);                                                  \
        a7 = FMA(a7, m, c);                                                  \
        a8 = FMA(a8, m, c);                                                  \
        a9 = FMA(a9, m, c);                                                  \
        a10 = FMA(a10, m, c);                                                \
        a11 = FMA(a11, m, c);                                                \
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));       \
    }                                                                        \
    VT s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;      \
    STORE(sink, s);                                                          \
    return (double)iters * 12 * (LANES)*2;

#if PEAK_X86
__attribute__((target("avx2,fma"))) static double loop_avx2(long iters, float *sink)
{
    CHAINS(_mm256_fmadd_ps, __m256, _mm256_set1_ps, _mm256_storeu_ps, 8)
}
__attribute__((target("avx512f"))) static double loop_avx512(long iters, float *sink)
{
    CHAINS(_mm512_fmadd_ps, __m512, _mm512_set1_ps, _mm512_storeu_ps, 16)
}
#endif

struct run {
    fma_loop fn;
    long iters;
    double flops, secs;
    float sink[16];
};

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *run_thread(void *arg)
{
    struct run *r = arg;
    double t0 = cpu_now();
    r->flops = r->fn(r->iters, r->sink);
    r->secs = cpu_now() - t0;
    return NULL;
}

/* GFLOP/s of nthreads running fn for about `secs` each; best of 5. */
static double measure(fma_loop fn, int nthreads, double secs)
{
    /* Calibrate on one thread. */
    struct run cal = {fn, 1000, 0, 0, {1.0f, 0.0f}};
    double t0 = now();
    run_thread(&cal);
    while (now() - t0 < 0.02) {
        cal.iters *= 2;
        t0 = now();
        run_thread(&cal);
    }
    long iters = (long)(cal.iters * secs / (now() - t0)) + 1;

    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        struct run runs[64];
        pthread_t th[64];
        for (int t = 0; t < nthreads; t++) {
            runs[t] = (struct run){fn, iters, 0, 0, {0.999999f, 1e-7f}};
        }
        for (int t = 0; t < nthreads; t++)
            if (pthread_create(&th[t], NULL, run_thread, &runs[t]) != 0) {
                fprintf(stderr, "peak: pthread_create failed\n");
                exit(1);
            }
        double g = 0;
        for (int t = 0; t < nthreads; t++) {
            pthread_join(th[t], NULL);
            g += runs[t].flops / runs[t].secs / 1e9;
        }
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv)
{
    double secs = 0.3;
    /* One optional operand, checked like every option of the programs. */
    const cli_opt opt = {"seconds",    CLI_DOUBLE,  &secs, 0, 100, "S", "seconds per measurement",
                         .lo_open = 1, .hi_open = 1};
    char err[200];
    if (argc > 2 || (argc == 2 && cli_set(&opt, argv[1], err, sizeof err) < 0)) {
        fprintf(stderr, "usage: %s [SECONDS per measurement, above 0 and below 100]\n", argv[0]);
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    if (ncpu > 64) ncpu = 64;
#if PEAK_X86
    struct {
        const char *name, *feat;
        fma_loop fn;
    } isas[] = {
        {"avx2+fma", "fma", loop_avx2},
        {"avx512f", "avx512f", loop_avx512},
    };
    __builtin_cpu_init();
    printf("%-10s %8s %12s\n", "isa", "threads", "GFLOP/s");
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        int ok = i == 0 ? __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                        : __builtin_cpu_supports("avx512f");
        if (!ok) {
            printf("%-10s %8s %12s\n", isas[i].name, "-", "unsupported");
            continue;
        }
        printf("%-10s %8d %12.1f\n", isas[i].name, 1, measure(isas[i].fn, 1, secs));
        if (ncpu > 1)
            printf("%-10s %8ld %12.1f\n", isas[i].name, ncpu, measure(isas[i].fn, (int)ncpu, secs));
    }
    return 0;
#else
    fprintf(stderr, "peak: only x86-64 FMA loops are written\n");
    return 1;
#endif
}
