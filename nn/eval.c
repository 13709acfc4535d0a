#include "nn/eval.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pool.h"

#define EVAL_BATCH 128

typedef struct {
    const nn_ensemble *e;
    const uint8_t *images; /* bytes, passed through tf; or           */
    const float *x;        /* model inputs as they are (images NULL) */
    int n, hw, k, nt;
    const nn_affine *tf;
    float *probs;
    float *energy, *ood, *disagree; /* per image, or NULL */
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
            const float *in = x;
            if (j->images)
                for (int i = 0; i < m; i++)
                    nn_affine_apply(x + (size_t)i * j->hw, j->images + (size_t)(b + i) * j->hw, h,
                                    w, j->tf ? j->tf : &id);
            else
                in = j->x + (size_t)b * j->hw;
            nn_ensemble_forward_disagree(
                j->e, ws, in, m, j->probs + (size_t)b * j->k, j->energy ? j->energy + b : NULL,
                j->ood ? j->ood + b : NULL, j->disagree ? j->disagree + b : NULL);
        }
    }
    free(x);
    nn_ensemble_ws_free(ws);
    return NULL;
}

int nn_eval_probs(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                  int threads, float *probs)
{
    return nn_eval_scores(e, images, n, tf, threads, probs, NULL, NULL, NULL);
}

static int eval_run(eval_job *jp, int threads);

int nn_eval_scores(const nn_ensemble *e, const uint8_t *images, int n, const nn_affine *tf,
                   int threads, float *probs, float *energy, float *ood, float *disagree)
{
    const nn_net *n0 = nn_ensemble_member(e, 0);
    eval_job j = {.e = e,
                  .images = images,
                  .n = n,
                  .hw = n0->in_c * n0->in_h * n0->in_w,
                  .k = nn_ensemble_classes(e),
                  .tf = tf,
                  .probs = probs,
                  .energy = energy,
                  .ood = ood,
                  .disagree = disagree};
    if (n0->in_c != 1) return -1;
    return eval_run(&j, threads);
}

int nn_eval_inputs(const nn_ensemble *e, const float *x, int n, int threads, float *probs,
                   float *energy, float *ood, float *disagree)
{
    const nn_net *n0 = nn_ensemble_member(e, 0);
    eval_job j = {.e = e,
                  .x = x,
                  .n = n,
                  .hw = n0->in_c * n0->in_h * n0->in_w,
                  .k = nn_ensemble_classes(e),
                  .probs = probs,
                  .energy = energy,
                  .ood = ood,
                  .disagree = disagree};
    return eval_run(&j, threads);
}

/* Runs job *jp on threads threads (<= 0: all CPUs). */
static int eval_run(eval_job *jp, int threads)
{
    eval_job j = *jp;
    int n = j.n;
    if (j.ood && !nn_ensemble_ood(j.e)) return -1;
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

/* Bin of confidence c: ceil(c * bins) - 1, so that bin b holds
 * ((b-1)/bins, b/bins]; 0 and anything below go to the first. */
static int ece_bin(double c, int bins)
{
    int b = (int)ceil(c * bins) - 1;
    return b < 0 ? 0 : b >= bins ? bins - 1 : b;
}

double nn_ece(const float *probs, const uint8_t *labels, int n, int k, int bins)
{
    double conf[NN_ECE_MAX_BINS] = {0}, correct[NN_ECE_MAX_BINS] = {0};
    if (bins < 1 || bins > NN_ECE_MAX_BINS) return -1.0;
    if (n < 1 || k < 1) return 0.0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int a = nn_argmax(p, k), b = ece_bin(p[a], bins);
        conf[b] += p[a];
        correct[b] += a == labels[i];
    }
    /* sum_b |bin|/n * |correct_b/|bin| - conf_b/|bin|| = sum_b |correct_b - conf_b| / n */
    double e = 0;
    for (int b = 0; b < bins; b++) e += fabs(correct[b] - conf[b]);
    return e / n;
}

int nn_ece_edge(const float *probs, int n, int k, int bins, float margin)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        double c = p[nn_argmax(p, k)];
        for (int b = 1; b < bins; b++)
            if (fabs(c - (double)b / bins) < margin) {
                count++;
                break;
            }
    }
    return count;
}

/* E|S - mu| for S the number of successes of `m` independent trials of
 * probabilities p[0..m), mu their sum, and in *var the variance of
 * |S - mu|: the distribution of S grows one trial at a time in pmf[0..m]. */
static double poisson_binomial_mad(const double *p, int m, double *pmf, double *var)
{
    double mu = 0;
    pmf[0] = 1;
    for (int i = 0; i < m; i++) {
        pmf[i + 1] = pmf[i] * p[i];
        for (int s = i; s > 0; s--) pmf[s] = pmf[s] * (1 - p[i]) + pmf[s - 1] * p[i];
        pmf[0] *= 1 - p[i];
        mu += p[i];
    }
    double e = 0, e2 = 0;
    for (int s = 0; s <= m; s++) {
        e += pmf[s] * fabs(s - mu);
        e2 += pmf[s] * (s - mu) * (s - mu);
    }
    *var = e2 > e * e ? e2 - e * e : 0;
    return e;
}

double nn_ece_floor(const float *probs, int n, int k, int bins, double *sd)
{
    if (sd) *sd = 0;
    if (bins < 1 || bins > NN_ECE_MAX_BINS) return -1.0;
    if (n < 1 || k < 1) return 0.0;
    /* Rows grouped by bin (counting sort), then one bin at a time. */
    int start[NN_ECE_MAX_BINS + 1] = {0};
    int *bin = malloc(sizeof(int) * (size_t)n);
    double *c = malloc(sizeof(double) * (size_t)n), *pmf = malloc(sizeof(double) * ((size_t)n + 1));
    double *byb = malloc(sizeof(double) * (size_t)n);
    double e = -1.0;
    if (!bin || !c || !pmf || !byb) goto out;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        c[i] = p[nn_argmax(p, k)];
        bin[i] = ece_bin(c[i], bins);
        start[bin[i] + 1]++;
    }
    for (int b = 0; b < bins; b++) start[b + 1] += start[b];
    int fill[NN_ECE_MAX_BINS];
    memcpy(fill, start, sizeof(int) * bins);
    for (int i = 0; i < n; i++) byb[fill[bin[i]]++] = c[i];
    e = 0;
    double var = 0;
    for (int b = 0; b < bins; b++) {
        double v;
        e += poisson_binomial_mad(byb + start[b], start[b + 1] - start[b], pmf, &v);
        var += v;
    }
    e /= n;
    if (sd) *sd = sqrt(var) / n;
out:
    free(bin);
    free(c);
    free(pmf);
    free(byb);
    return e;
}

double nn_temperature_nll(const float *logits, const uint8_t *labels, int n, int k, double t)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        double m = z[0], s = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > m) m = z[j];
        for (int j = 0; j < k; j++) s += exp((z[j] - m) / t);
        /* -log softmax(z / t)[y] = log sum exp((z - m) / t) - (z_y - m) / t */
        sum += log(s) - (z[labels[i]] - m) / t;
    }
    return n ? sum / n : 0.0;
}

double nn_temperature_fit(const float *logits, const uint8_t *labels, int n, int k, double *nll)
{
    if (n < 1 || k < 2) return -1;
    for (int i = 0; i < n; i++)
        if (labels[i] >= k) return -1;
    /* Golden section on u = log T: the bracket shrinks by 0.618 per step,
     * from log(400) to below 1e-9 in 50 steps; 80 leave no doubt. */
    const double g = (sqrt(5.0) - 1) / 2;
    double a = log(NN_TFIT_MIN), b = log(NN_TFIT_MAX);
    double c = b - g * (b - a), d = a + g * (b - a);
    double fc = nn_temperature_nll(logits, labels, n, k, exp(c));
    double fd = nn_temperature_nll(logits, labels, n, k, exp(d));
    for (int it = 0; it < 80 && b - a > 1e-12; it++) {
        if (fc <= fd) {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = nn_temperature_nll(logits, labels, n, k, exp(c));
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = nn_temperature_nll(logits, labels, n, k, exp(d));
        }
    }
    double t = exp((a + b) / 2);
    /* The bounds themselves, when the minimum lies past one of them. */
    if (t < NN_TFIT_MIN) t = NN_TFIT_MIN;
    if (t > NN_TFIT_MAX) t = NN_TFIT_MAX;
    if (nll) *nll = nn_temperature_nll(logits, labels, n, k, t);
    return t;
}
