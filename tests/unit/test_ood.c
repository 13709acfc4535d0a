/* test_ood.c - the out-of-distribution score (nn/ood.h): features from the
 * forward pass, the Mahalanobis score against a double-precision reference
 * on a tiny net, the threshold and AUROC, energy by hand, a trained head
 * against its by-hand score, and the optional tensors of the weights
 * file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ensemble.h"
#include "nn/gemm.h"
#include "nn/net.h"
#include "nn/ood.h"
#include "nn/safetensors.h"

#define TMPDIR_PREFIX "test_ood"
#include "tmpdir.h"

/* 1x4x4 input -> dense 6 -> relu -> dense 3: six features, three classes. */
#define HW 16
#define D 6
#define K 3
#define N 60

static nn_net *tiny_net(void)
{
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    const char *arch = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":6},{\"type\":\"relu\"},"
                       "{\"type\":\"dense\",\"out\":3}]";
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("%s", err);
    nn_meta m;
    memset(&m, 0, sizeof m);
    m.nclasses = K;
    for (int c = 0; c < K; c++) snprintf(m.labels[c], NN_LABEL_MAX, "%d", c);
    m.input_mean = 0.0f;
    m.input_std = 1.0f;
    m.test_accuracy = -1;
    snprintf(m.dataset, sizeof m.dataset, "mnist");
    nn_net *net = nn_net_create(L, nl, 1, 4, 4, &m, err, sizeof err);
    if (!net) fail_msg("%s", err);
    nn_net_init(net, 7);
    return net;
}

/* Deterministic images: class c brightens one quarter, plus noise. */
static void tiny_data_seed(uint8_t *img, uint8_t *lab, int n, uint32_t s)
{
    for (int i = 0; i < n; i++) {
        lab[i] = (uint8_t)(i % K);
        for (int p = 0; p < HW; p++) {
            s = s * 1664525u + 1013904223u;
            int v = (int)(s >> 25) + ((p / 4) == lab[i] ? 120 : 0);
            img[i * HW + p] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

static void tiny_data(uint8_t *img, uint8_t *lab) { tiny_data_seed(img, lab, N, 12345); }

/* Images that are none of the classes: no quarter brighter than the
 * rest, the whole image lifted by 110..141 instead. */
static void tiny_outliers(uint8_t *img, int n, uint32_t s)
{
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        int lift = 110 + (int)(s >> 27);
        for (int p = 0; p < HW; p++) {
            s = s * 1664525u + 1013904223u;
            img[i * HW + p] = (uint8_t)((int)(s >> 25) + lift);
        }
    }
}

/* The hidden layer in double, straight from the parameters. */
static void ref_features(const nn_net *net, const uint8_t *img, double *f)
{
    const nn_layer *L = &net->layers[1];
    const float *w = net->params + L->w_off, *b = net->params + L->b_off;
    for (int o = 0; o < D; o++) {
        double s = b[o];
        for (int p = 0; p < HW; p++) s += (double)w[o * HW + p] * (img[p] / 255.0);
        f[o] = s > 0 ? s : 0;
    }
}

static void features_of(const nn_net *net, const uint8_t *img, int n, float *out)
{
    nn_ws *ws = nn_ws_create(net, n, 0);
    float *x = malloc(sizeof(float) * n * HW);
    assert_non_null(ws);
    assert_non_null(x);
    for (int i = 0; i < n * HW; i++) x[i] = img[i] / 255.0f;
    nn_net_forward(net, ws, x, n, NULL, NULL);
    memcpy(out, nn_ws_features(ws), sizeof(float) * n * D);
    nn_ws_free(ws);
    free(x);
}

/* The forward pass's features are the last dense layer's input. */
static void test_features(void **state)
{
    (void)state;
    nn_net *net = tiny_net();
    uint8_t img[N * HW], lab[N];
    tiny_data(img, lab);
    assert_int_equal(nn_ood_dim(net), D);
    float f[N * D];
    features_of(net, img, N, f);
    for (int i = 0; i < N; i++) {
        double r[D];
        ref_features(net, img + i * HW, r);
        /* A 16-term float dot product: relative error well under 1e-5. */
        for (int o = 0; o < D; o++)
            if (fabs(f[i * D + o] - r[o]) > 1e-5 * (1 + fabs(r[o])))
                fail_msg("image %d feature %d: %g, reference %g", i, o, (double)f[i * D + o], r[o]);
    }
    nn_net_free(net);
}

/* Solves A x = b (d x d) by Gauss-Jordan elimination with partial pivoting:
 * an algorithm independent of the library's Cholesky route. */
static void gj_solve(double *A, double *b, int d)
{
    for (int c = 0; c < d; c++) {
        int p = c;
        for (int r = c + 1; r < d; r++)
            if (fabs(A[r * d + c]) > fabs(A[p * d + c])) p = r;
        for (int q = 0; q < d; q++) {
            double t = A[c * d + q];
            A[c * d + q] = A[p * d + q];
            A[p * d + q] = t;
        }
        double t = b[c];
        b[c] = b[p];
        b[p] = t;
        for (int r = 0; r < d; r++) {
            if (r == c) continue;
            double m = A[r * d + c] / A[c * d + c];
            for (int q = 0; q < d; q++) A[r * d + q] -= m * A[c * d + q];
            b[r] -= m * b[c];
        }
    }
    for (int c = 0; c < d; c++) b[c] /= A[c * d + c];
}

/* Fit and score against the textbook computation in double: class means,
 * shared covariance with the same ridge, min_c v^T Sigma^-1 v. */
static void test_score_reference(void **state)
{
    (void)state;
    const double ridge = 0.1;
    nn_net *net = tiny_net();
    uint8_t img[N * HW], lab[N];
    char err[256];
    tiny_data(img, lab);
    nn_ood *o = nn_ood_fit(net, img, lab, N, ridge, err, sizeof err);
    if (!o) fail_msg("%s", err);
    assert_int_equal(o->k, K);
    assert_int_equal(o->d, D);
    assert_true(o->threshold < 0);

    float f[N * D];
    features_of(net, img, N, f);
    double mu[K][D] = {{0}}, S[D * D] = {0};
    int cnt[K] = {0};
    for (int i = 0; i < N; i++) {
        cnt[lab[i]]++;
        for (int a = 0; a < D; a++) mu[lab[i]][a] += f[i * D + a];
    }
    for (int c = 0; c < K; c++)
        for (int a = 0; a < D; a++) mu[c][a] /= cnt[c];
    for (int i = 0; i < N; i++)
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++)
                S[a * D + b] += (f[i * D + a] - mu[lab[i]][a]) * (f[i * D + b] - mu[lab[i]][b]) / N;
    double tr = 0;
    for (int a = 0; a < D; a++) tr += S[a * D + a];
    for (int a = 0; a < D; a++) S[a * D + a] += ridge * tr / D;

    float got[N];
    nn_ood_score(o, f, N, got);
    for (int i = 0; i < N; i++) {
        double best = INFINITY;
        for (int c = 0; c < K; c++) {
            double A[D * D], v[D], y[D];
            memcpy(A, S, sizeof A);
            for (int a = 0; a < D; a++) v[a] = y[a] = f[i * D + a] - mu[c][a];
            gj_solve(A, y, D);
            double q = 0;
            for (int a = 0; a < D; a++) q += v[a] * y[a];
            if (q < best) best = q;
        }
        /* The library stores the means and the Cholesky factor as float
         * (relative rounding 2^-24 each) and computes in double: the score
         * moves by about d * cond(L) * 2^-24 relative. With the ridge at
         * 0.1 of the mean variance cond(L) < sqrt(11 * d) here, so 1e-5 is
         * a bound with room, not a measured figure. */
        if (fabs(got[i] - best) > 1e-5 * best + 1e-6)
            fail_msg("image %d: score %.9g, reference %.9g", i, (double)got[i], best);
    }
    nn_ood_free(o);
    nn_net_free(net);
}

static void test_threshold_auroc(void **state)
{
    (void)state;
    char err[128];
    const float means[2] = {0, 0}, chol[1] = {1};
    nn_ood *o = nn_ood_create(2, 1, means, chol, -1, err, sizeof err);
    if (!o) fail_msg("%s", err);
    const float s[5] = {5, 1, 3, 2, 4};
    assert_int_equal(nn_ood_set_threshold(o, s, 5, 0.6), 0);
    assert_true(o->threshold == 3.0); /* 3 of 5 at or below it */
    assert_int_equal(nn_ood_set_threshold(o, s, 5, 0.61), 0);
    assert_true(o->threshold == 4.0);
    assert_int_equal(nn_ood_set_threshold(o, s, 5, 1.0), 0);
    assert_true(o->threshold == 5.0);
    assert_int_equal(nn_ood_set_threshold(o, s, 0, 0.5), -1);
    assert_int_equal(nn_ood_set_threshold(o, s, 5, 0.0), -1);
    nn_ood_free(o);
    nn_ood_free(NULL);

    const float in[2] = {1, 2}, out[2] = {2, 3}, low[2] = {0, 0.5f};
    /* Pairs (in,out): (1,2) 1, (1,3) 1, (2,2) 1/2, (2,3) 1. */
    assert_true(nn_ood_auroc(in, 2, out, 2) == 0.875);
    assert_true(nn_ood_auroc(in, 2, low, 2) == 0.0);
    assert_true(nn_ood_auroc(in, 2, in, 2) == 0.5);
    assert_true(nn_ood_auroc(in, 0, out, 2) == -1.0);

    /* Bad statistics are refused with a message. */
    const float means4[4] = {0, 0, 1, 1}, bad_chol[4] = {1, 0.5f, 0, 1}, neg[4] = {1, 0, 0, -1};
    assert_null(nn_ood_create(2, 2, means4, bad_chol, 1, err, sizeof err));
    assert_non_null(strstr(err, "lower triangular"));
    assert_null(nn_ood_create(2, 2, means4, neg, 1, err, sizeof err));
    const float nan_means[2] = {NAN, 0};
    assert_null(nn_ood_create(2, 1, nan_means, chol, 1, err, sizeof err));
}

/* The energy output of the one forward is -logsumexp of the logits, and
 * the score output the nn_ood_score of that forward's features. */
static void test_forward_scores(void **state)
{
    (void)state;
    char err[256];
    nn_net *net = tiny_net();
    uint8_t img[N * HW], lab[N];
    tiny_data(img, lab);
    nn_ood *o = nn_ood_fit(net, img, lab, N, 0.01, err, sizeof err);
    if (!o) fail_msg("%s", err);
    o->threshold = 1.0;
    net->ood = o;
    nn_net *tmp[1] = {net};
    nn_ensemble *e = nn_ensemble_from_nets(tmp, 1, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_ptr_equal(nn_ensemble_ood(e), nn_ensemble_member_infer(e, 0)->ood);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, N);
    nn_ws *nws = nn_ws_create(net, N, 0);
    assert_non_null(ws);
    assert_non_null(nws);
    float x[N * HW], probs[N * K], energy[N], score[N], logits[N * K], f[N * D], want[N];
    for (int i = 0; i < N * HW; i++) x[i] = img[i] / 255.0f;
    nn_ensemble_forward_scores(e, ws, x, N, probs, energy, score);
    nn_net_forward(net, nws, x, N, NULL, logits);
    features_of(net, img, N, f);
    nn_ood_score(o, f, N, want);
    for (int i = 0; i < N; i++) {
        double m = logits[i * K], s = 0;
        for (int c = 1; c < K; c++) m = fmax(m, logits[i * K + c]);
        for (int c = 0; c < K; c++) s += exp(logits[i * K + c] - m);
        double en = -(m + log(s));
        if (fabs(energy[i] - en) > 1e-6 * (1 + fabs(en)))
            fail_msg("image %d: energy %g, by hand %g", i, energy[i], en);
        assert_true(score[i] == want[i]); /* same features, same code */
    }
    nn_ws_free(nws);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
}

/* Saved with statistics: loads back with the same statistics and scores;
 * saved without: byte-identical to a file written before they existed
 * (no ood tensors, no ood metadata). Partial or unknown ood data refused. */
/* Writes src again to dst with the tensor or metadata key named drop left
 * out, metadata key set_key set to set_val (if set_key), and the first
 * value of tensor nan_in made a NaN (if nan_in); the checksum is
 * recomputed, so only what changed can make dst fail to load. */
static void write_variant(const char *src, const char *dst, const char *drop, const char *set_key,
                          const char *set_val, const char *nan_in)
{
    char err[256], cks[64];
    nn_st_file *g = nn_st_read(src, err, sizeof err);
    if (!g) fail_msg("%s", err);
    nn_st_writer *w = nn_st_writer_create();
    assert_non_null(w);
    uint64_t h = NN_ST_FNV_INIT;
    uint8_t **copies = calloc((size_t)g->ntensors, sizeof *copies); /* the writer keeps pointers */
    assert_non_null(copies);
    for (int i = 0; i < g->ntensors; i++) {
        const nn_st_tensor *q = &g->tensors[i];
        if (!strcmp(q->name, drop)) continue;
        uint8_t *data = copies[i] = malloc(q->nbytes);
        assert_non_null(data);
        memcpy(data, q->data, q->nbytes);
        if (nan_in && !strcmp(q->name, nan_in)) {
            float v = NAN;
            memcpy(data, &v, sizeof v);
        }
        /* tensors back to back: the checksum is theirs in order */
        assert_int_equal(nn_st_writer_add(w, q->name, q->dtype, q->ndim, q->shape, data), 0);
        h = nn_st_fnv1a64(data, q->nbytes, h);
    }
    snprintf(cks, sizeof cks, "fnv1a64:%016llx", (unsigned long long)h);
    for (int i = 0; i < g->nmeta; i++) {
        const char *k = g->meta_keys[i], *v = g->meta_vals[i];
        if (!strcmp(k, drop)) continue;
        if (!strcmp(k, "checksum")) v = cks;
        if (set_key && !strcmp(k, set_key)) v = set_val;
        assert_int_equal(nn_st_writer_meta(w, k, v), 0);
    }
    assert_int_equal(nn_st_writer_write(w, dst, err, sizeof err), 0);
    nn_st_writer_free(w);
    for (int i = 0; i < g->ntensors; i++) free(copies[i]);
    free(copies);
    nn_st_free(g);
}

static void test_weights_file(void **state)
{
    (void)state;
    char err[512], with[160], without[160], bad[160];
    nn_net *net = tiny_net();
    uint8_t img[N * HW], lab[N];
    tiny_data(img, lab);
    snprintf(with, sizeof with, "%s/with.safetensors", tmpdir);
    snprintf(without, sizeof without, "%s/without.safetensors", tmpdir);
    assert_int_equal(nn_net_save(net, without, err, sizeof err), 0);
    nn_st_file *f = nn_st_read(without, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(f->ntensors, 4);
    assert_null(nn_st_meta(f, "ood_method"));
    assert_null(nn_st_meta(f, "ood_threshold"));
    nn_st_free(f);
    nn_net *back = nn_net_load(without, err, sizeof err);
    if (!back) fail_msg("%s", err);
    assert_null(back->ood);
    nn_net_free(back);

    nn_ood *o = nn_ood_fit(net, img, lab, N, 0.01, err, sizeof err);
    if (!o) fail_msg("%s", err);
    o->threshold = 12.5;
    net->ood = o;
    assert_int_equal(nn_net_save(net, with, err, sizeof err), 0);
    back = nn_net_load(with, err, sizeof err);
    if (!back) fail_msg("%s", err);
    assert_non_null(back->ood);
    assert_true(back->ood->threshold == 12.5);
    assert_memory_equal(back->ood->means, o->means, sizeof(float) * K * D);
    assert_memory_equal(back->ood->chol, o->chol, sizeof(float) * D * D);
    float fe[N * D], s1[N], s2[N];
    features_of(net, img, N, fe);
    nn_ood_score(o, fe, N, s1);
    nn_ood_score(back->ood, fe, N, s2);
    assert_memory_equal(s1, s2, sizeof s1);
    /* Folding keeps the statistics (the folded net is what serves). */
    nn_net *folded = nn_net_fold_bn(back, err, sizeof err);
    assert_non_null(folded);
    assert_non_null(folded->ood);
    nn_net_free(folded);
    nn_net_free(back);

    /* Drop one of the four pieces, or rename the method: refused. */
    const char *drop[] = {"ood.means",     "ood.chol", "ood_method",
                          "ood_threshold", "!method",  "!threshold"};
    for (size_t t = 0; t < sizeof drop / sizeof drop[0]; t++) {
        snprintf(bad, sizeof bad, "%s/bad%zu.safetensors", tmpdir, t);
        write_variant(with, bad, drop[t],
                      !strcmp(drop[t], "!method")      ? "ood_method"
                      : !strcmp(drop[t], "!threshold") ? "ood_threshold"
                                                       : NULL,
                      !strcmp(drop[t], "!method") ? "energy" : "-1", NULL);
        err[0] = 0;
        back = nn_net_load(bad, err, sizeof err);
        if (back) {
            nn_net_free(back);
            fail_msg("a file without %s loaded", drop[t]);
        }
        if (!strstr(err, "ood")) fail_msg("%s: message %s", drop[t], err);
    }
    nn_net_free(net);
}

/* The energy method: no statistics, the score is -logsumexp of the
 * logits (by hand here), served from the same pass; the file carries the
 * method and threshold only, and loads back as such. */
static void test_energy_method(void **state)
{
    (void)state;
    char err[256], path[512];
    nn_net *net = tiny_net();
    uint8_t img[N * HW], lab[N];
    tiny_data(img, lab);
    net->ood = nn_ood_create_energy(-2.5, err, sizeof err);
    if (!net->ood) fail_msg("%s", err);
    assert_null(nn_ood_create_energy(NAN, err, sizeof err));
    nn_ood_method m;
    assert_int_equal(nn_ood_method_parse("energy", &m), 0);
    assert_int_equal(m, NN_OOD_ENERGY);
    assert_int_equal(nn_ood_method_parse("msp", &m), -1);
    assert_string_equal(nn_ood_method_name(NN_OOD_ENERGY), "energy");

    snprintf(path, sizeof path, "%s/energy.safetensors", tmpdir);
    assert_int_equal(nn_net_save(net, path, err, sizeof err), 0);
    nn_st_file *f = nn_st_read(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(f->ntensors, 4); /* the net's own, nothing more */
    assert_string_equal(nn_st_meta(f, "ood_method"), "energy");
    assert_float_equal(atof(nn_st_meta(f, "ood_threshold")), -2.5, 0);
    nn_st_free(f);
    nn_net *back = nn_net_load(path, err, sizeof err);
    if (!back) fail_msg("%s", err);
    assert_non_null(back->ood);
    assert_int_equal(back->ood->method, NN_OOD_ENERGY);
    assert_true(back->ood->threshold == -2.5);

    /* Served from the folded net, as the server runs it. */
    nn_net *tmp[1] = {back};
    nn_ensemble *e = nn_ensemble_from_nets(tmp, 1, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_non_null(nn_ensemble_ood(e));
    assert_int_equal(nn_ensemble_ood(e)->method, NN_OOD_ENERGY);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, N);
    nn_ws *nws = nn_ws_create(net, N, 0);
    float x[N * HW], probs[N * K], score[N], logits[N * K];
    for (int i = 0; i < N * HW; i++) x[i] = img[i] / 255.0f;
    nn_ensemble_forward_scores(e, ws, x, N, probs, NULL, score);
    nn_net_forward(net, nws, x, N, NULL, logits);
    for (int i = 0; i < N; i++) {
        double mx = logits[i * K], s = 0;
        for (int c = 1; c < K; c++) mx = fmax(mx, logits[i * K + c]);
        for (int c = 0; c < K; c++) s += exp(logits[i * K + c] - mx);
        double en = -(mx + log(s));
        if (fabs(score[i] - en) > 1e-5 * (1 + fabs(en)))
            fail_msg("image %d: score %g, energy by hand %g", i, score[i], en);
    }
    nn_ws_free(nws);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
    nn_net_free(net);
}

/* The head's score by hand in double from its stored parameters and the
 * double-precision features. */
static double ref_head(const nn_ood *o, const double *f)
{
    double z = o->b2;
    for (int i = 0; i < o->h; i++) {
        double a = o->b1[i];
        for (int j = 0; j < o->d; j++)
            a += (double)o->w1[i * o->d + j] * ((f[j] - o->norm[j]) / o->norm[o->d + j]);
        if (a > 0) z += (double)o->w2[i] * a;
    }
    return z;
}

/* The head method: trained on the tiny net's features it tells unseen
 * digits from unseen outliers; its score matches a by-hand computation,
 * is served from the same (folded) pass, is deterministic for a seed,
 * and round-trips through the weights file, which refuses any piece
 * missing or broken. */
static void test_head_method(void **state)
{
    (void)state;
    char err[512], path[512], bad[512];
    nn_net *net = tiny_net();
    uint8_t din[N * HW], lab[N], dout[N * HW], hin[N * HW], hlab[N], hout[N * HW];
    tiny_data(din, lab);
    tiny_outliers(dout, N, 1);
    tiny_data_seed(hin, hlab, N, 999); /* held out: other draws of both */
    tiny_outliers(hout, N, 2);
    float fin[N * D], fout[N * D];
    assert_int_equal(nn_ood_features(net, din, N, fin, err, sizeof err), 0);
    assert_int_equal(nn_ood_features(net, dout, N, fout, err, sizeof err), 0);
    nn_ood_head_cfg cfg;
    nn_ood_head_cfg_default(&cfg);
    assert_int_equal(cfg.hidden, 64);
    cfg.hidden = 11; /* a block of 8 units and 3 more (head_score) */
    cfg.epochs = 300;
    cfg.batch = 16;
    cfg.lr = 1e-2f;
    cfg.seed = 3;
    nn_ood *o = nn_ood_fit_head(D, fin, N, fout, N, &cfg, err, sizeof err);
    if (!o) fail_msg("%s", err);
    assert_int_equal(o->method, NN_OOD_HEAD);
    assert_int_equal(o->h, 11);
    assert_true(o->threshold < 0); /* none chosen yet */

    /* Unseen images: outliers score higher. */
    float gin[N * D], gout[N * D], sin_[N], sout[N];
    features_of(net, hin, N, gin);
    features_of(net, hout, N, gout);
    nn_ood_score_pass(o, gin, NULL, N, K, sin_);
    nn_ood_score_pass(o, gout, NULL, N, K, sout);
    double auroc = nn_ood_auroc(sin_, N, sout, N);
    if (auroc < 0.98) fail_msg("held-out AUROC %g: the head did not learn", auroc);
    assert_int_equal(nn_ood_set_threshold(o, sin_, N, 0.95), 0);

    /* Against the reference, from double features. */
    for (int i = 0; i < N; i++) {
        double f[D], want;
        ref_features(net, hin + i * HW, f);
        want = ref_head(o, f);
        if (fabs(sin_[i] - want) > 1e-4 * (1 + fabs(want)))
            fail_msg("image %d: head score %g, by hand %g", i, (double)sin_[i], want);
    }

    /* Every kernel path this CPU has gives the bits of the plain loop in
     * order (ref_head: each unit's sum over the features a product then
     * an add), from the same float features. */
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        assert_int_equal(nn_gemm_set_path(path), 0);
        float got[N];
        nn_ood_score_pass(o, gin, NULL, N, K, got);
        for (int i = 0; i < N; i++) {
            double f[D];
            for (int j = 0; j < D; j++) f[j] = gin[i * D + j];
            const double z = ref_head(o, f);
            if (memcmp(&got[i], &(float){(float)z}, sizeof(float)) != 0)
                fail_msg("path %s, image %d: head score %a, in order %a", nn_gemm_path_name(path),
                         i, (double)got[i], (double)(float)z);
        }
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);

    /* Same seed, same head; another seed, another. */
    nn_ood *o2 = nn_ood_fit_head(D, fin, N, fout, N, &cfg, err, sizeof err);
    assert_non_null(o2);
    assert_memory_equal(o2->w1, o->w1, sizeof(float) * 11 * D);
    assert_true(o2->b2 == o->b2);
    nn_ood_free(o2);
    cfg.seed = 4;
    o2 = nn_ood_fit_head(D, fin, N, fout, N, &cfg, err, sizeof err);
    assert_non_null(o2);
    assert_true(memcmp(o2->w1, o->w1, sizeof(float) * 11 * D) != 0);
    nn_ood_free(o2);

    /* Bad settings and parameters: refused with a message. */
    cfg.epochs = 0;
    assert_null(nn_ood_fit_head(D, fin, N, fout, N, &cfg, err, sizeof err));
    cfg.epochs = 1;
    assert_null(nn_ood_fit_head(D, fin, N, fout, 0, &cfg, err, sizeof err));
    float norm[2 * D], w1[D], b1[1] = {0}, w2[1] = {1};
    for (int j = 0; j < D; j++) norm[j] = 0, norm[D + j] = 1, w1[j] = 0.5f;
    nn_ood *ok = nn_ood_create_head(D, 1, norm, w1, b1, w2, 0.0f, 1.0, err, sizeof err);
    assert_non_null(ok);
    nn_ood_free(ok);
    norm[D + 2] = 0;
    assert_null(nn_ood_create_head(D, 1, norm, w1, b1, w2, 0.0f, 1.0, err, sizeof err));
    assert_non_null(strstr(err, "std"));
    norm[D + 2] = 1;
    assert_null(nn_ood_create_head(D, 1, norm, w1, b1, w2, NAN, 1.0, err, sizeof err));
    assert_null(nn_ood_create_head(D, 0, norm, w1, b1, w2, 0.0f, 1.0, err, sizeof err));
    nn_ood_method m;
    assert_int_equal(nn_ood_method_parse("head", &m), 0);
    assert_int_equal(m, NN_OOD_HEAD);
    assert_string_equal(nn_ood_method_name(NN_OOD_HEAD), "head");

    /* The weights file: the net's four tensors and the head's five. */
    net->ood = o;
    snprintf(path, sizeof path, "%s/head.safetensors", tmpdir);
    assert_int_equal(nn_net_save(net, path, err, sizeof err), 0);
    nn_st_file *f = nn_st_read(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(f->ntensors, 9);
    assert_string_equal(nn_st_meta(f, "ood_method"), "head");
    nn_st_free(f);
    nn_net *back = nn_net_load(path, err, sizeof err);
    if (!back) fail_msg("%s", err);
    assert_non_null(back->ood);
    assert_int_equal(back->ood->method, NN_OOD_HEAD);
    assert_true((float)back->ood->threshold == (float)o->threshold); /* saved as %.9g */
    assert_memory_equal(back->ood->w1, o->w1, sizeof(float) * 11 * D);
    assert_memory_equal(back->ood->norm, o->norm, sizeof(float) * 2 * D);

    /* Served from the folded net, as the server runs it. */
    nn_net *tmp[1] = {back}; /* the ensemble owns it now */
    nn_ensemble *e = nn_ensemble_from_nets(tmp, 1, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_int_equal(nn_ensemble_ood(e)->method, NN_OOD_HEAD);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, N);
    float x[N * HW], probs[N * K], score[N];
    for (int i = 0; i < N * HW; i++) x[i] = hin[i] / 255.0f;
    nn_ensemble_forward_scores(e, ws, x, N, probs, NULL, score);
    for (int i = 0; i < N; i++)
        if (fabs(score[i] - sin_[i]) > 1e-4 * (1 + fabs(sin_[i])))
            fail_msg("image %d: served score %g, direct %g", i, (double)score[i], (double)sin_[i]);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);

    /* Any of the five tensors missing, a NaN in one, a std that is not
     * positive, no threshold, or the tensors under another method. */
    const char *drop[] = {"ood.head.norm", "ood.head.w1", "ood.head.b1", "ood.head.w2",
                          "ood.head.b2"};
    for (int t = 0; t < 10; t++) {
        snprintf(bad, sizeof bad, "%s/badhead%d.safetensors", tmpdir, t);
        if (t < 5)
            write_variant(path, bad, drop[t], NULL, NULL, NULL);
        else if (t < 8)
            write_variant(path, bad, "", NULL, NULL, drop[t - 4]);
        else if (t == 8)
            write_variant(path, bad, "ood_threshold", NULL, NULL, NULL);
        else
            write_variant(path, bad, "", "ood_method", "energy", NULL);
        err[0] = 0;
        nn_net *b = nn_net_load(bad, err, sizeof err);
        if (b) {
            nn_net_free(b);
            fail_msg("variant %d of the head file loaded", t);
        }
        assert_true(err[0] != 0);
    }
    /* A std of 0 (the norm tensor's second row). */
    {
        nn_st_file *g = nn_st_read(path, err, sizeof err);
        assert_non_null(g);
        const nn_st_tensor *q = nn_st_find(g, "ood.head.norm");
        float nb[2 * D];
        memcpy(nb, q->data, sizeof nb);
        nb[D] = 0.0f;
        nn_ood *z = nn_ood_create_head(D, 8, nb, o->w1, o->b1, o->w2, o->b2, 1.0, err, sizeof err);
        assert_null(z);
        nn_st_free(g);
    }
    nn_net_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features),        cmocka_unit_test(test_score_reference),
        cmocka_unit_test(test_threshold_auroc), cmocka_unit_test(test_forward_scores),
        cmocka_unit_test(test_weights_file),    cmocka_unit_test(test_energy_method),
        cmocka_unit_test(test_head_method),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
