#include "nn/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct nn_pool {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen; /* bumped per run; workers wait for a change */
    int pending, quit;
    nn_pool_fn fn;
    void *arg;
};

typedef struct {
    nn_pool *p;
    int t;
} worker_arg;

static void *worker(void *a)
{
    nn_pool *p = ((worker_arg *)a)->p;
    int t = ((worker_arg *)a)->t;
    free(a);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        nn_pool_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, t, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

nn_pool *nn_pool_create(int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    nn_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads;
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
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int nn_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
