#include "nn/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Hand-offs spin before they sleep: a training step runs the pool twice
 * (the step, then the update), and waking a sleeping thread through the
 * kernel took a sixth of an MLP step at 2 threads (perf:
 * finish_task_switch, the futex's unlock). A worker that has just finished
 * polls for the next run, and the caller for the workers' end, for up to
 * SPIN_NS (a pause instruction between polls, the clock read every 64)
 * and only then sleeps on the condition variable. Lost wake-ups are ruled
 * out the usual way: a sleeper announces itself (sleepers, waiting) under
 * the mutex before it checks the condition once more, and the side that
 * changes the condition reads that announcement after the change (both
 * sequentially consistent) and signals under the mutex when it is set. */
#define SPIN_NS 50000L

struct nn_pool {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    atomic_ulong gen;   /* bumped per run; workers wait for a change  */
    atomic_int pending; /* workers still inside the current run       */
    atomic_int quit;
    atomic_int sleepers; /* workers asleep (or about to be) on go      */
    atomic_int waiting;  /* the caller asleep (or about to be) on done */
    nn_pool_fn fn;       /* written before gen is bumped, read after   */
    void *arg;
};

typedef struct {
    nn_pool *p;
    int t;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Spins until ready(p) or SPIN_NS have passed; returns ready(p). */
static int spin(nn_pool *p, int (*ready)(nn_pool *, unsigned long), unsigned long arg)
{
    long end = 0;
    for (unsigned i = 0;; i++) {
        if (ready(p, arg)) return 1;
        if ((i & 63) == 0) {
            long t = now_ns();
            if (!end)
                end = t + SPIN_NS;
            else if (t > end)
                return 0;
        }
        cpu_relax();
    }
}

static int run_started(nn_pool *p, unsigned long seen)
{
    return atomic_load_explicit(&p->gen, memory_order_acquire) != seen ||
           atomic_load_explicit(&p->quit, memory_order_relaxed);
}

static int run_finished(nn_pool *p, unsigned long unused)
{
    (void)unused;
    return atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
}

/* Waits until gen differs from seen (or quit); returns the new gen. */
static unsigned long wait_run(nn_pool *p, unsigned long seen)
{
    if (spin(p, run_started, seen)) return atomic_load(&p->gen);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->go, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return atomic_load(&p->gen);
}

static void *worker(void *a)
{
    nn_pool *p = ((worker_arg *)a)->p;
    int t = ((worker_arg *)a)->t;
    free(a);
    unsigned long seen = 0;
    for (;;) {
        seen = wait_run(p, seen);
        if (atomic_load(&p->quit)) break;
        p->fn(p->arg, t, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

nn_pool *nn_pool_create(int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    nn_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->waiting, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    if (nthreads > 1 && !(p->th = calloc((size_t)nthreads - 1, sizeof(pthread_t)))) {
        free(p);
        return NULL;
    }
    for (int t = 1; t < nthreads; t++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) {
            p->n = t;
            nn_pool_free(p);
            return NULL;
        }
        a->p = p;
        a->t = t;
        if (pthread_create(&p->th[t - 1], NULL, worker, a)) {
            free(a);
            p->n = t;
            nn_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void nn_pool_free(nn_pool *p)
{
    if (!p) return;
    atomic_store(&p->quit, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->n; t++) pthread_join(p->th[t - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->th);
    free(p);
}

void nn_pool_run(nn_pool *p, nn_pool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    if (spin(p, run_finished, 0)) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->waiting, 1);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->waiting, 0);
    pthread_mutex_unlock(&p->mu);
}

int nn_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
