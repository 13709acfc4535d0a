#include "nn/eval.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pool.h"

#define EVAL_BATCH 128

typedef struct {
    const nn_ensemble *e;
    const uint8_t *images;
    int n, hw, k, nt;
    const nn_affine *tf;
    float *probs;
    float *energy, *ood; /* per image, or NULL */
    int failed;
} eval_job;

static void *eval_worker(void *arg)
{
    eval_job *j = ((eval_job **)arg)[0];
    int t = (int)(intptr_t)((void **)arg)[1];
    const nn_net *n0 = nn_ensemble_member(j->e, 0);
    int h = n0->in_h, w = n0->in_w;
    nn_ensemble_ws *ws = nn_ensemble_ws_create(j->e, EVAL_BATCH);
    float *x = malloc(sizeof(float) * EVAL_BATCH * j->hw);
    if (!ws || !x) {
        j->failed = 1;
    } else {
        /* Contiguous slice per thread. */
        int lo = (int)((long long)j->n * t / j->nt), hi = (int)((long long)j->n * (t + 1) / j->nt);
        nn_affine id;
        nn_affine_identity(&id);
        for (int b = lo; b < hi; b += EVAL_BATCH) {
            int m = hi - b < EVAL_BATCH ? hi - b : EVAL_BATCH;
            for (int i = 0; i < m; i++)
                nn_affine_apply(x + (size_t)i * j->hw, j->images + (size_t)(b + i) * j->hw, h, w,
                                j->tf ? j->tf : &id);
            nn_ensemble_forward_scores(j->e, ws, x, m, j->probs + (size_t)b * j->k,
                                       j->energy ? j->energy + b : NULL,
                                       j->ood ? j->ood + b : NULL);
        }
    }
    free(x);
    nn_ensemble_ws_free(ws);
    return NULL;
}

int nn_eval_probs(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                  int threads, float *probs)
{
    return nn_eval_scores(e, images, n, tf, threads, probs, NULL, NULL);
}

int nn_eval_scores(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                   int threads, float *probs, float *energy, float *ood)
{
    const nn_net *n0 = nn_ensemble_member(e, 0);
    eval_job j = {
        e,      images, n, n0->in_c * n0->in_h * n0->in_w, nn_ensemble_classes(e), 0, tf, probs,
        energy, ood,    0};
    if (n0->in_c != 1 || (ood && !nn_ensemble_ood(e))) return -1;
    if (threads <= 0) threads = nn_cpu_count();
    if (threads > 64) threads = 64;
    if (threads > n) threads = n > 0 ? n : 1;
    j.nt = threads;
    pthread_t th[64];
    void *args[64][2];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        args[t][0] = &j;
        args[t][1] = (void *)(intptr_t)t;
        if (pthread_create(&th[t], NULL, eval_worker, args[t])) break;
        started = t;
    }
    if (started != threads - 1) {
        for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
        return -1;
    }
    args[0][0] = &j;
    args[0][1] = (void *)(intptr_t)0;
    eval_worker(args[0]);
    for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
    return j.failed ? -1 : 0;
}

int nn_argmax(const float *v, int k)
{
    int b = 0;
    for (int i = 1; i < k; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

double nn_accuracy(const float *probs, const uint8_t *labels, int n, int k, int *confusion)
{
    int ok = 0;
    if (confusion) memset(confusion, 0, sizeof(int) * k * k);
    for (int i = 0; i < n; i++) {
        int p = nn_argmax(probs + (size_t)i * k, k);
        ok += p == labels[i];
        if (confusion && labels[i] < k) confusion[labels[i] * k + p]++;
    }
    return n ? (double)ok / n : 0.0;
}

int nn_borderline(const float *probs, int n, int k, float margin)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float a = -1.0f, b = -1.0f; /* largest, second largest */
        for (int j = 0; j < k; j++) {
            if (p[j] > a) {
                b = a;
                a = p[j];
            } else if (p[j] > b) {
                b = p[j];
            }
        }
        count += a - b < margin;
    }
    return count;
}
