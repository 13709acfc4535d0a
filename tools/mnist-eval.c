/* mnist-eval - test-set accuracy of a model (or an ensemble: several model
 * files averaged), expected calibration error (nn_ece), per-class
 * accuracy, confusion matrix and throughput.
 *
 * Out of distribution (nn/ood.h):
 *   --ood-fit OUT MODEL   fits the Mahalanobis statistics of one weights
 *                         file on its training set (all but the last
 *                         --ood-holdout images), sets the threshold so that
 *                         --ood-pass (95%) of the held-out images pass, and
 *                         writes MODEL with them to OUT (the rest of the
 *                         file unchanged).
 *                         --ood-method energy stores the energy score
 *                         (nothing but the threshold); --ood-method head
 *                         trains a small classifier on the features to
 *                         tell those training digits (and --head-in's
 *                         digits) from --head-out's outliers.
 *   --ood DIR MODEL       how well each score tells the test set from DIR's
 *                         test images: AUROC and the share of DIR marked in
 *                         distribution, on the raw IDX images and after the
 *                         server's preprocessing of an uploaded image (a
 *                         DIR of images that are not 28x28: the latter only).
 *
 * Data: --data and --ood take a directory of MNIST-named files or the
 * prefix of one set's two files (data/glyphs/digits-eval), nn/idx.h.
 *
 * Uploads: --upload STYLE evaluates each test image as the server sees it
 * uploaded: encoded as a PNG in STYLE (gray as stored, inverted: black on
 * white, colour: blue ink on yellow paper, alpha: black ink whose opacity
 * is the drawing, as a canvas exports it), then decoded, prepared and
 * classified by the serving pipeline (pipeline/pipeline.h). An image the
 * pipeline refuses (blank after preprocessing) counts as an error. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/opt.h"
#include "nn/amx.h"
#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/gemm.h"
#include "image/image.h"
#include "nn/idx.h"
#include "nn/ood.h"
#include "nn/pool.h"
#include "pipeline/pipeline.h"

#define VERSION "1.0.0"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- out of distribution ---------------------------------------------- */

/* --ood-fit's default share of held-out training digits that pass. */
#define OOD_SHARE 0.95

/* The in-distribution data directory of a model's dataset. */
static const char *default_data(const nn_ensemble *e)
{
    return !strcmp(nn_ensemble_meta(e)->dataset, "fashion-mnist")
               ? "/usr/share/datasets/fashion-mnist"
               : "data/mnist";
}

/* The one weights file of e as a net of our own, and the training set
 * (data), checked to fit it; what names the option in the messages.
 * Returns 0, or the exit code with the message printed. */
static int load_single(const nn_ensemble *e, const char *data, const char *what, nn_net **netp,
                       nn_dataset **trp)
{
    char err[512];
    if (nn_ensemble_size(e) != 1) {
        fprintf(stderr, "mnist-eval: %s takes one weights file, not an ensemble\n", what);
        return 2;
    }
    nn_net *net = nn_net_load(nn_ensemble_path(e, 0), err, sizeof err);
    if (!net) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        return 1;
    }
    nn_dataset *tr = nn_dataset_load_set(data, 0, nn_net_outputs(net), err, sizeof err);
    if (!tr) {
        fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err);
        nn_net_free(net);
        return 1;
    }
    if (tr->rows != net->in_h || tr->cols != net->in_w || net->in_c != 1) {
        fprintf(stderr, "mnist-eval: the model wants %dx%dx%d inputs, the data is %dx%d\n",
                net->in_c, net->in_h, net->in_w, tr->rows, tr->cols);
        nn_dataset_free(tr);
        nn_net_free(net);
        return 1;
    }
    *netp = net;
    *trp = tr;
    return 0;
}

/* What --ood-method head trains on besides the training digits. */
typedef struct {
    const char *in;  /* comma-separated extra digit sets, or NULL   */
    int in_repeat;   /* times they are given                         */
    const char *out; /* comma-separated outlier image files / sets   */
    nn_ood_head_cfg cfg;
} head_opts;

/* Images of one file (IDX images alone) or set (nn/idx.h), 28x28-checked
 * against net. NULL with the message printed. */
static nn_dataset *load_images(const char *where, const nn_net *net, const char *what)
{
    char err[512];
    struct stat st;
    nn_dataset *d = stat(where, &st) == 0 && S_ISREG(st.st_mode)
                        ? nn_dataset_load(where, NULL, 256, err, sizeof err)
                        : nn_dataset_load_set(where, 0, 256, err, sizeof err);
    if (!d) {
        fprintf(stderr, "mnist-eval: %s: %s\n", what, err);
        return NULL;
    }
    if (d->rows != net->in_h || d->cols != net->in_w || net->in_c != 1 || d->n < 1) {
        fprintf(stderr, "mnist-eval: %s: %s is not a set of %dx%d images\n", what, where, net->in_h,
                net->in_w);
        nn_dataset_free(d);
        return NULL;
    }
    return d;
}

#define HEAD_MAX_SETS 16

/* The sets of a comma-separated list (opt names the option in messages)
 * into sets[], their images counted in *total. The number loaded (at least
 * one), or -1 with the message printed; what was loaded is in sets[]. */
static int load_list(const char *names, const nn_net *net, const char *opt,
                     nn_dataset *sets[HEAD_MAX_SETS], int *total)
{
    char list[4096];
    int n = 0;
    *total = 0;
    if (snprintf(list, sizeof list, "%s", names) >= (int)sizeof list) {
        fprintf(stderr, "mnist-eval: %s: list too long\n", opt);
        return -1;
    }
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (n == HEAD_MAX_SETS) {
            fprintf(stderr, "mnist-eval: %s: at most %d sets\n", opt, HEAD_MAX_SETS);
            return -1;
        }
        if (!(sets[n] = load_images(p, net, opt))) return -1;
        *total += sets[n++]->n;
    }
    if (!n) fprintf(stderr, "mnist-eval: %s names no set\n", opt);
    return n ? n : -1;
}

/* Features of the sets one after another into f (d per image). */
static int list_features(const nn_net *net, nn_dataset *const *sets, int n, int d, float *f,
                         char *err, size_t errlen)
{
    for (int i = 0; i < n; f += (size_t)sets[i]->n * d, i++)
        if (nn_ood_features(net, sets[i]->images, sets[i]->n, f, err, errlen)) return -1;
    return 0;
}

/* Features of the head's digits (training images 0..nfit-1, then the
 * --head-in sets one after another, all of them --head-in-repeat times) and
 * outliers (every --head-out set), and the head trained on them. NULL with
 * the message printed. */
static nn_ood *fit_head(const nn_net *net, const nn_dataset *tr, int nfit, const head_opts *h)
{
    char err[512];
    int d = nn_ood_dim(net), nextra = 0, nout = 0, rc = -1;
    nn_dataset *ins[HEAD_MAX_SETS] = {NULL}, *outs[HEAD_MAX_SETS] = {NULL};
    int nins = 0, nsets = 0;
    float *fin = NULL, *fout = NULL;
    nn_ood *o = NULL;
    if (!d) {
        fprintf(stderr, "mnist-eval: --ood-method head: the net has no dense last layer\n");
        return NULL;
    }
    if (!h->out) {
        fprintf(stderr, "mnist-eval: --ood-method head needs --head-out FILE[,FILE...] (outliers: "
                        "build/mnist-outliers)\n");
        return NULL;
    }
    if (h->in && (nins = load_list(h->in, net, "--head-in", ins, &nextra)) < 0) goto done;
    if ((nsets = load_list(h->out, net, "--head-out", outs, &nout)) < 0) goto done;
    if ((double)nextra * h->in_repeat + nfit > 1e9) {
        fprintf(stderr, "mnist-eval: --head-in: %d images %d times is too many\n", nextra,
                h->in_repeat);
        goto done;
    }
    int nin = nfit + nextra * h->in_repeat;
    fin = malloc(sizeof(float) * (size_t)nin * d);
    fout = malloc(sizeof(float) * (size_t)nout * d);
    if (!fin || !fout) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    if (nn_ood_features(net, tr->images, nfit, fin, err, sizeof err)) goto fail;
    float *f = fin + (size_t)nfit * d;
    if (list_features(net, ins, nins, d, f, err, sizeof err)) goto fail;
    for (int r = 1; r < h->in_repeat && nextra; r++)
        memcpy(f + (size_t)r * nextra * d, f, sizeof(float) * (size_t)nextra * d);
    if (list_features(net, outs, nsets, d, fout, err, sizeof err)) goto fail;
    if (!(o = nn_ood_fit_head(d, fin, nin, fout, nout, &h->cfg, err, sizeof err))) goto fail;
    printf("head: %d hidden units trained %d epochs (seed %llu) on %d digits and %d outliers\n",
           h->cfg.hidden, h->cfg.epochs, (unsigned long long)h->cfg.seed, nin, nout);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "mnist-eval: %s\n", err);
done:
    for (int i = 0; i < HEAD_MAX_SETS; i++) {
        nn_dataset_free(ins[i]);
        nn_dataset_free(outs[i]);
    }
    free(fin);
    free(fout);
    return o;
}

static int ood_fit(const nn_ensemble *e, const char *data, const char *out, int holdout,
                   double ridge, nn_ood_method method, double share, const head_opts *head)
{
    char err[512];
    nn_ensemble *view = NULL;
    float *probs = NULL, *scores = NULL;
    /* The file again, as a net of our own to attach the statistics to. */
    nn_net *net = NULL;
    nn_dataset *tr = NULL;
    int rc = load_single(e, data, "--ood-fit", &net, &tr);
    if (rc) return rc;
    rc = 1;
    if (holdout < 1 || holdout > tr->n - 2) {
        fprintf(stderr,
                "mnist-eval: --ood-holdout must leave at least 2 of the %d training images\n",
                tr->n);
        goto done;
    }
    int nfit = tr->n - holdout, k = nn_net_outputs(net);
    /* Fitted on the net as stored; the server runs it with batch norm
     * folded, whose features differ by float rounding only. */
    nn_ood *o = method == NN_OOD_HEAD ? fit_head(net, tr, nfit, head)
                : method == NN_OOD_ENERGY
                    ? nn_ood_create_energy(-1.0, err, sizeof err)
                    : nn_ood_fit(net, tr->images, tr->labels, nfit, ridge, err, sizeof err);
    if (!o) {
        if (method != NN_OOD_HEAD) fprintf(stderr, "mnist-eval: %s\n", err);
        goto done;
    }
    nn_ood_free(net->ood); /* a file refitted: its old score goes */
    net->ood = o;
    probs = malloc(sizeof(float) * (size_t)holdout * k);
    scores = malloc(sizeof(float) * (size_t)holdout);
    view = nn_ensemble_view(net);
    if (!probs || !scores || !view ||
        nn_eval_scores(view, tr->images + (size_t)nfit * tr->rows * tr->cols, holdout, NULL, 0,
                       probs, NULL, scores, NULL) ||
        nn_ood_set_threshold(o, scores, holdout, share)) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    if (nn_net_save(net, out, err, sizeof err)) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        goto done;
    }
    if (method == NN_OOD_HEAD)
        printf("head score; threshold %.6g passes %.4g%% of %s training images %d..%d; wrote %s\n",
               o->threshold, share * 100, data, nfit, tr->n - 1, out);
    else if (method == NN_OOD_ENERGY)
        printf("energy score; threshold %.6g passes %.4g%% of %s training images %d..%d; wrote "
               "%s\n",
               o->threshold, share * 100, data, nfit, tr->n - 1, out);
    else
        printf("fitted on %s training images 0..%d (%d features, ridge %g); threshold %.6g "
               "passes %.4g%% of images %d..%d; wrote %s\n",
               data, nfit - 1, o->d, ridge, o->threshold, share * 100, nfit, tr->n - 1, out);
    rc = 0;
done:
    free(probs);
    free(scores);
    nn_ensemble_free(view);
    nn_net_free(net);
    nn_dataset_free(tr);
    return rc;
}

/* ---- calibration ------------------------------------------------------ */

/* Raw logits [n, k] of net (temperature not applied) for n images of d
 * starting at image first, in batches on this thread. 0, or -1 (memory). */
static int logits_of(const nn_net *net, const nn_dataset *d, int first, int n, float *logits)
{
    enum { B = 128 };
    size_t hw = (size_t)d->rows * d->cols;
    int k = nn_net_outputs(net);
    nn_ws *ws = nn_ws_create(net, B, 0);
    float *x = malloc(sizeof(float) * B * hw);
    if (!ws || !x) {
        nn_ws_free(ws);
        free(x);
        return -1;
    }
    for (int b = 0; b < n; b += B) {
        int m = n - b < B ? n - b : B;
        const uint8_t *img = d->images + (size_t)(first + b) * hw;
        for (size_t i = 0; i < (size_t)m * hw; i++) x[i] = img[i] / 255.0f;
        nn_net_forward(net, ws, x, m, NULL, logits + (size_t)b * k);
    }
    nn_ws_free(ws);
    free(x);
    return 0;
}

/* ECE of softmax(logits / t) against labels (15 bins). -1 on memory. */
static double ece_at(const float *logits, const uint8_t *labels, int n, int k, double t)
{
    float *p = malloc(sizeof(float) * (size_t)n * k);
    if (!p) return -1;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        float *q = p + (size_t)i * k;
        double m = z[nn_argmax(z, k)], s = 0;
        for (int j = 0; j < k; j++) s += (q[j] = (float)exp((z[j] - m) / t));
        for (int j = 0; j < k; j++) q[j] = (float)(q[j] / s);
    }
    double e = nn_ece(p, labels, n, k, NN_ECE_BINS);
    free(p);
    return e;
}

/* --fit-temperature: the softmax temperature of one weights file fitted
 * by NLL on the last `holdout` images of its training set (the images
 * 50,000-59,999 that --ood-fit also holds out), written with the file to
 * out. The test set is not read: --stamp measures the new test ECE. */
static int temperature_fit(const nn_ensemble *e, const char *data, const char *out, int holdout)
{
    char err[512];
    float *logits = NULL;
    nn_net *net = NULL;
    nn_dataset *tr = NULL;
    int rc = load_single(e, data, "--fit-temperature", &net, &tr);
    if (rc) return rc;
    rc = 1;
    if (holdout < 1 || holdout > tr->n) {
        fprintf(stderr, "mnist-eval: --ood-holdout must be 1..%d (the training images)\n", tr->n);
        goto done;
    }
    int k = nn_net_outputs(net), first = tr->n - holdout;
    const uint8_t *y = tr->labels + first;
    logits = malloc(sizeof(float) * (size_t)holdout * k);
    /* The file's own net (not folded): the logits it was trained to. */
    if (!logits || logits_of(net, tr, first, holdout, logits)) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    double old_t = net->meta.temperature, nll0 = nn_temperature_nll(logits, y, holdout, k, 1.0),
           nll, t = nn_temperature_fit(logits, y, holdout, k, &nll);
    double ece0 = ece_at(logits, y, holdout, k, 1.0), ece1 = ece_at(logits, y, holdout, k, t);
    if (t < 0 || ece0 < 0 || ece1 < 0) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    net->meta.temperature = t;
    /* The file's test ECE was measured at the old temperature. */
    if (t != old_t) net->meta.test_ece = -1;
    if (nn_net_save(net, out, err, sizeof err)) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        goto done;
    }
    printf("temperature %.6g (was %.6g), fitted on %s training images %d..%d: NLL %.6f -> "
           "%.6f, ECE %.2f%% -> %.2f%% there%s; wrote %s\n",
           t, old_t, data, first, tr->n - 1, nll0, nll, 100 * ece0, 100 * ece1,
           t <= NN_TFIT_MIN || t >= NN_TFIT_MAX ? " (at the search's bound)" : "", out);
    if (t != old_t)
        printf("its test_ece is now unknown: `mnist-eval --stamp OUT %s` measures it\n", out);
    rc = 0;
done:
    free(logits);
    nn_net_free(net);
    nn_dataset_free(tr);
    return rc;
}

/* Scores of one image set, higher = less like the training data. */
typedef struct {
    int n, blank;    /* images scored; images the preprocessing found blank */
    float *msp;      /* -(largest probability)                             */
    float *energy;   /* -logsumexp(logits), members averaged              */
    float *stored;   /* the model's stored score, or NULL without one      */
    float *disagree; /* an ensemble's members' disagreement
                        (nn_disagreement), or NULL for one model           */
    int *index;      /* the set's image index of each scored row           */
    uint8_t *pred;   /* the answer (argmax) of each scored row             */
} ood_set;

static void ood_set_free(ood_set *s)
{
    free(s->msp);
    free(s->energy);
    free(s->stored);
    free(s->disagree);
    free(s->index);
    free(s->pred);
}

static int ood_set_alloc(ood_set *s, int n, int stored, int disagree)
{
    size_t m = n ? (size_t)n : 1;
    memset(s, 0, sizeof *s);
    s->msp = malloc(sizeof(float) * m);
    s->energy = malloc(sizeof(float) * m);
    s->stored = stored ? malloc(sizeof(float) * m) : NULL;
    s->disagree = disagree ? malloc(sizeof(float) * m) : NULL;
    s->index = malloc(sizeof(int) * m);
    s->pred = malloc(m);
    return !s->msp || !s->energy || (stored && !s->stored) || (disagree && !s->disagree) ||
                   !s->index || !s->pred
               ? -1
               : 0;
}

/* msp and pred of n rows of probabilities. */
static void answers_of(ood_set *s, const float *probs, int n, int k)
{
    for (int i = 0; i < n; i++) {
        int a = nn_argmax(probs + (size_t)i * k, k);
        s->msp[i] = -probs[(size_t)i * k + a];
        s->pred[i] = (uint8_t)a;
    }
}

/* n raw IDX images (28x28 bytes), as the test set is evaluated. */
static int ood_raw(const nn_ensemble *e, const uint8_t *images, int n, ood_set *s)
{
    int k = nn_ensemble_classes(e);
    float *probs = malloc(sizeof(float) * (size_t)(n ? n : 1) * k);
    if (!probs || ood_set_alloc(s, n, nn_ensemble_ood(e) != NULL, nn_ensemble_size(e) > 1) ||
        nn_eval_scores(e, images, n, NULL, 0, probs, s->energy, s->stored, s->disagree)) {
        free(probs);
        return -1;
    }
    answers_of(s, probs, n, k);
    for (int i = 0; i < n; i++) s->index[i] = i;
    s->n = n;
    free(probs);
    return 0;
}

/* Each image as the server sees an upload of it: the model's
 * preprocessing (crop, fit, centre) first, then the model on all threads;
 * blank images are answered with an error there, so they are counted,
 * not scored. */
static int ood_prepared(const nn_ensemble *e, const nn_dataset *d, int n, ood_set *s)
{
    int k = nn_ensemble_classes(e), rc = -1;
    size_t hw = (size_t)d->rows * d->cols;
    const char *mode = nn_ensemble_meta(e)->preprocess;
    float *x = malloc(sizeof(float) * 784 * (size_t)(n ? n : 1));
    float *probs = malloc(sizeof(float) * (size_t)(n ? n : 1) * k);
    if (!x || !probs || ood_set_alloc(s, n, nn_ensemble_ood(e) != NULL, nn_ensemble_size(e) > 1))
        goto done;
    int m = 0;
    for (int i = 0; i < n; i++) {
        char err[128];
        if (img_prep_by_name(mode, d->images + (size_t)i * hw, (uint32_t)d->cols, (uint32_t)d->rows,
                             x + (size_t)m * 784, err, sizeof err) == IMG_OK)
            s->index[m++] = i;
        else
            s->blank++;
    }
    if (m && nn_eval_inputs(e, x, m, 0, probs, s->energy, s->stored, s->disagree)) goto done;
    answers_of(s, probs, m, k);
    s->n = m;
    rc = 0;
done:
    free(x);
    free(probs);
    return rc;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* The share of out-scores at or below the score that OOD_SHARE of the
 * in-scores do not exceed (the "passing at 95% of the test set" figure
 * that compares methods on equal terms), that score in *at; -1 on memory
 * failure. */
static double pass_at_share(const float *in, int nin, const float *out, int nout, float *at)
{
    float *s = malloc(sizeof(float) * nin);
    if (!s || nin < 1 || nout < 1) {
        free(s);
        return -1;
    }
    memcpy(s, in, sizeof(float) * nin);
    qsort(s, (size_t)nin, sizeof(float), cmp_f);
    long idx = (long)ceil(OOD_SHARE * nin - 1e-9) - 1;
    float t = s[idx < 0 ? 0 : idx];
    *at = t;
    free(s);
    int c = 0;
    for (int i = 0; i < nout; i++) c += out[i] <= t;
    return (double)c / nout;
}

/* How far another kernel path may move a score: NN_BORDERLINE_MARGIN
 * relative to its size (absolute below 1, as for probabilities). The
 * counts below turn that into the room a re-measured figure needs: an
 * image the margin cannot carry across a threshold cannot change which
 * side it is on, and a pair farther apart than both margins cannot swap. */
static double margin_of(double x) { return NN_BORDERLINE_MARGIN * (fabs(x) > 1 ? fabs(x) : 1); }

/* Scores of v [n] within width * margin_of(t) of t. */
static int count_near(const float *v, int n, double t, double width)
{
    int c = 0;
    for (int i = 0; i < n; i++) c += fabs(v[i] - t) <= width * margin_of(t);
    return c;
}

/* Upper bound on the (in, out) pairs whose order another path could
 * swap: pairs with |a - b| <= margin_of(a) + margin_of(b). Since
 * |b| <= |a| + |a - b|, such b lie within w = 2 m max(1,|a|) / (1 - 2m)
 * of a (m the margin); counting that window (two binary searches in the
 * sorted out-scores) may count a few more, never fewer. -1 on memory. */
static double close_pairs(const float *in, int nin, const float *out, int nout)
{
    float *s = malloc(sizeof(float) * (size_t)(nout ? nout : 1));
    if (!s) return -1;
    memcpy(s, out, sizeof(float) * (size_t)nout);
    qsort(s, (size_t)nout, sizeof(float), cmp_f);
    double pairs = 0, m = NN_BORDERLINE_MARGIN;
    for (int i = 0; i < nin; i++) {
        double a = in[i], w = 2 * margin_of(a) / (1 - 2 * m);
        int lo = 0, hi = nout; /* first index with s >= a - w */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (s[mid] < a - w)
                lo = mid + 1;
            else
                hi = mid;
        }
        int first = lo;
        hi = nout; /* first index with s > a + w */
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (s[mid] <= a + w)
                lo = mid + 1;
            else
                hi = mid;
        }
        pairs += lo - first;
    }
    free(s);
    return pairs;
}

static double share_at_most(const float *v, int n, double t)
{
    int c = 0;
    for (int i = 0; i < n; i++) c += v[i] <= t;
    return n ? (double)c / n : 0.0;
}

/* One input path's figures: text rows, or an object in o. dthr: the
 * disagreement's threshold (NAN: none), chosen on held-out images
 * described by dfrom. */
static void ood_report(const nn_ensemble *e, const char *path, const ood_set *in,
                       const ood_set *out, double dthr, const char *dfrom, cJSON *o)
{
    cJSON *p = o ? cJSON_AddObjectToObject(o, path) : NULL;
    /* The third row is the score the model stores and serves (its first
     * member's, for an ensemble): "stored" in JSON, with its method. */
    const nn_ood *st = nn_ensemble_ood(e);
    char stored[40];
    snprintf(stored, sizeof stored, "%s*", st ? nn_ood_method_name(st->method) : "");
    const char *names[4] = {"msp", "energy", p ? "stored" : stored, "disagree"};
    const float *ins[4] = {in->msp, in->energy, in->stored, in->disagree},
                *outs[4] = {out->msp, out->energy, out->stored, out->disagree};
    const double thr[4] = {NAN, NAN, st ? st->threshold : NAN, dthr};
    if (p) {
        cJSON_AddNumberToObject(p, "in_n", in->n);
        cJSON_AddNumberToObject(p, "out_n", out->n);
        cJSON_AddNumberToObject(p, "in_blank", in->blank);
        cJSON_AddNumberToObject(p, "out_blank", out->blank);
    }
    for (int m = 0; m < 4; m++) {
        if (!ins[m]) continue;
        double auc = nn_ood_auroc(ins[m], in->n, outs[m], out->n);
        float at = 0;
        double pass = pass_at_share(ins[m], in->n, outs[m], out->n, &at);
        double tin = -1, tout = -1;
        int has_thr = !isnan(thr[m]);
        if (has_thr) {
            tin = share_at_most(ins[m], in->n, thr[m]);
            tout = share_at_most(outs[m], out->n, thr[m]);
        }
        if (p) {
            cJSON *r = cJSON_AddObjectToObject(p, names[m]);
            cJSON_AddNumberToObject(r, "auroc", auc);
            /* What another kernel path may change (margin_of): the pairs
             * that could swap, and the images near each cut. The 95% cut
             * is itself an in-score, so it may move by one margin too. */
            cJSON_AddNumberToObject(r, "auroc_close_pairs",
                                    close_pairs(ins[m], in->n, outs[m], out->n));
            cJSON_AddNumberToObject(r, "out_pass_at_95", pass);
            cJSON_AddNumberToObject(r, "out_pass_at_95_edge", count_near(outs[m], out->n, at, 2));
            if (m == 2) cJSON_AddStringToObject(r, "method", nn_ood_method_name(st->method));
            if (m == 3 && has_thr) cJSON_AddStringToObject(r, "threshold_from", dfrom);
            if (has_thr) {
                cJSON_AddNumberToObject(r, "threshold", thr[m]);
                cJSON_AddNumberToObject(r, "in_pass", tin);
                cJSON_AddNumberToObject(r, "in_pass_edge", count_near(ins[m], in->n, thr[m], 1));
                cJSON_AddNumberToObject(r, "out_pass", tout);
                cJSON_AddNumberToObject(r, "out_pass_edge", count_near(outs[m], out->n, thr[m], 1));
            }
        } else {
            printf("%-9s %-12s %7.4f %9.2f%%", path, names[m], auc, 100 * pass);
            if (has_thr) printf("   %8.2f%% %8.2f%%", 100 * tin, 100 * tout);
            printf("\n");
        }
    }
    if (!p && (in->blank || out->blank))
        printf("%-9s (blank after preprocessing, refused, not scored: %d in, %d out)\n", path,
               in->blank, out->blank);
}

/* The name of label c of an out set under --per-class NAMES: "letters"
 * as mnist-glyphs numbers them (A-Z 0..25, a-z 26..51), "digits" (0-9),
 * or "index" (the number). */
static void class_name(char *buf, size_t len, const char *names, int c)
{
    static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if (!strcmp(names, "letters") && c < 52)
        snprintf(buf, len, "%c", letters[c]);
    else if (!strcmp(names, "digits") && c < 10)
        snprintf(buf, len, "%c", '0' + c);
    else
        snprintf(buf, len, "%d", c);
}

/* --per-class: for each label of the out set, its images, the share the
 * stored score passes (marked in distribution) and the answer given most
 * (first on ties), for one input path: text rows or an array in o. */
static int ood_per_class(const nn_ensemble *e, const char *path, const ood_set *out,
                         const uint8_t *labels, const char *names, cJSON *o)
{
    int k = nn_ensemble_classes(e), *cnt = calloc(256 * (size_t)(k + 2), sizeof(int));
    if (!cnt) return -1;
    /* cnt[c * (k + 2)]: images of label c; + 1: passing; + 2 + a: answered a */
    double t = nn_ensemble_ood(e)->threshold;
    for (int i = 0; i < out->n; i++) {
        int *r = cnt + (size_t)labels[out->index[i]] * (k + 2);
        r[0]++;
        r[1] += out->stored[i] <= t;
        r[2 + out->pred[i]]++;
    }
    cJSON *arr = o ? cJSON_AddArrayToObject(o, path) : NULL;
    if (!o)
        printf("\n%s, per class of the out set:\n%-6s %7s %9s   %s\n", path, "class", "images",
               "in dist.", "answered most");
    for (int c = 0; c < 256; c++) {
        const int *r = cnt + (size_t)c * (k + 2);
        if (!r[0]) continue;
        int a = 0;
        for (int j = 1; j < k; j++)
            if (r[2 + j] > r[2 + a]) a = j;
        char nm[16];
        class_name(nm, sizeof nm, names, c);
        const char *lab = nn_ensemble_meta(e)->labels[a];
        if (arr) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddItemToArray(arr, x);
            cJSON_AddNumberToObject(x, "label", c);
            cJSON_AddStringToObject(x, "name", nm);
            cJSON_AddNumberToObject(x, "n", r[0]);
            cJSON_AddNumberToObject(x, "in_pass", (double)r[1] / r[0]);
            cJSON_AddStringToObject(x, "answer", lab);
            cJSON_AddNumberToObject(x, "answer_share", (double)r[2 + a] / r[0]);
        } else {
            printf("%-6s %7d %8.2f%%   %s (%.0f%%)\n", nm, r[0], 100.0 * r[1] / r[0], lab,
                   100.0 * r[2 + a] / r[0]);
        }
    }
    free(cnt);
    return 0;
}

/* The disagreement that OOD_SHARE of the training images [first, first +
 * n) of data do not exceed: the threshold its rows report (as the stored
 * scores' were chosen). NAN for one model; -1 + message on failure. */
static int disagree_threshold(const nn_ensemble *e, const char *data, int holdout, double *thr,
                              char *from, size_t fromlen)
{
    char err[512];
    *thr = NAN;
    if (nn_ensemble_size(e) < 2) return 0;
    nn_dataset *tr = nn_dataset_load_set(data, 0, nn_ensemble_classes(e), err, sizeof err);
    if (!tr) {
        fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err);
        return -1;
    }
    int rc = -1;
    ood_set h;
    memset(&h, 0, sizeof h);
    if (holdout < 1 || holdout > tr->n || tr->rows != 28 || tr->cols != 28) {
        fprintf(stderr, "mnist-eval: --ood-holdout must be 1..%d (the 28x28 training images)\n",
                tr->n);
        goto done;
    }
    int first = tr->n - holdout;
    float at;
    if (ood_raw(e, tr->images + (size_t)first * 784, holdout, &h) ||
        pass_at_share(h.disagree, h.n, h.disagree, h.n, &at) < 0) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    *thr = at;
    snprintf(from, fromlen, "%.0f%% of %s training images %d..%d", OOD_SHARE * 100, data, first,
             tr->n - 1);
    rc = 0;
done:
    ood_set_free(&h);
    nn_dataset_free(tr);
    return rc;
}

static int ood_eval(const nn_ensemble *e, const char *data, const char *dir, int limit, int holdout,
                    const char *per_class, int json)
{
    char err[512];
    int k = nn_ensemble_classes(e), rc = 1;
    ood_set s[4];
    memset(s, 0, sizeof s);
    nn_dataset *in = nn_dataset_load_set(data, 1, k, err, sizeof err);
    if (!in) {
        fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err);
        return 1;
    }
    nn_dataset *out = nn_dataset_load_set(dir, 1, 255, err, sizeof err);
    if (!out) {
        fprintf(stderr, "mnist-eval: --ood: %s\n", err);
        nn_dataset_free(in);
        return 1;
    }
    const nn_net *n0 = nn_ensemble_member(e, 0);
    /* An out set of another size is only scored as uploads of it. */
    if (in->rows != 28 || in->cols != 28 || n0->in_c != 1 || n0->in_h != 28 || n0->in_w != 28) {
        fprintf(stderr, "mnist-eval: --ood wants a 1x28x28 model and 28x28 test images\n");
        goto done;
    }
    int raw = out->rows == 28 && out->cols == 28;
    int nin = in->n, nout = out->n;
    if (limit > 0 && limit < nin) nin = limit;
    if (limit > 0 && limit < nout) nout = limit;
    if (per_class && !nn_ensemble_ood(e)) {
        fprintf(stderr, "mnist-eval: --per-class counts what the stored score passes: the model "
                        "has none (--ood-fit)\n");
        goto done;
    }
    double dthr;
    char dfrom[600] = "";
    if (disagree_threshold(e, data, holdout, &dthr, dfrom, sizeof dfrom)) goto done;
    if (ood_raw(e, in->images, nin, &s[0]) || (raw && ood_raw(e, out->images, nout, &s[1])) ||
        ood_prepared(e, in, nin, &s[2]) || ood_prepared(e, out, nout, &s[3])) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    if (s[2].n < 1 || s[3].n < 1) {
        fprintf(stderr, "mnist-eval: --ood: every image of a set was blank after preprocessing\n");
        goto done;
    }
    const nn_ood *st = nn_ensemble_ood(e);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON *models = cJSON_AddArrayToObject(o, "models");
        for (int i = 0; i < nn_ensemble_size(e); i++)
            cJSON_AddItemToArray(models, cJSON_CreateString(nn_ensemble_path(e, i)));
        cJSON_AddStringToObject(o, "in", data);
        cJSON_AddStringToObject(o, "out", dir);
        if (st) {
            cJSON_AddStringToObject(o, "ood_method", nn_ood_method_name(st->method));
            cJSON_AddNumberToObject(o, "ood_threshold", st->threshold);
        } else {
            cJSON_AddNullToObject(o, "ood_method");
            cJSON_AddNullToObject(o, "ood_threshold");
        }
        if (raw)
            ood_report(e, "raw", &s[0], &s[1], dthr, dfrom, o);
        else
            cJSON_AddNullToObject(o, "raw");
        ood_report(e, "prepared", &s[2], &s[3], dthr, dfrom, o);
        if (per_class) {
            cJSON *pc = cJSON_AddObjectToObject(o, "per_class");
            if ((raw && ood_per_class(e, "raw", &s[1], out->labels, per_class, pc)) ||
                ood_per_class(e, "prepared", &s[3], out->labels, per_class, pc)) {
                cJSON_Delete(o);
                fprintf(stderr, "mnist-eval: out of memory\n");
                goto done;
            }
        }
        char *txt = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!txt) {
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
        printf("%s\n", txt);
        free(txt);
    } else {
        printf("in distribution: %s test (%d images); out: %s test (%d images)\n", data, nin, dir,
               nout);
        if (st)
            printf("stored score: %s (the row marked *), threshold %.6g\n",
                   nn_ood_method_name(st->method), st->threshold);
        else
            printf("no stored statistics (fit them with --ood-fit): msp and energy only\n");
        printf(
            "scores: higher = less like the training data; \"out @95%%\" = share of out images at "
            "or below\n"
            "the score 95%% of the in-distribution test images do not exceed; \"in/out pass\" = "
            "shares\n"
            "at or below the stored threshold. raw = IDX images as stored; prepared = through the\n"
            "model's upload preprocessing (crop, fit, centre), as the server sees a PNG of "
            "them.\n\n");
        printf("%-9s %-12s %7s %10s   %9s %9s\n", "input", "method", "AUROC", "out @95%", "in pass",
               "out pass");
        if (raw)
            ood_report(e, "raw", &s[0], &s[1], dthr, dfrom, NULL);
        else
            printf("raw       (not scored: %s's images are %dx%d)\n", dir, out->rows, out->cols);
        ood_report(e, "prepared", &s[2], &s[3], dthr, dfrom, NULL);
        if (!isnan(dthr))
            printf("disagree: the members' mutual information; its in/out pass use %.6g, the "
                   "score %s do not exceed\n",
                   dthr, dfrom);
        if (per_class && ((raw && ood_per_class(e, "raw", &s[1], out->labels, per_class, NULL)) ||
                          ood_per_class(e, "prepared", &s[3], out->labels, per_class, NULL))) {
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
    }
    rc = 0;
done:
    for (int i = 0; i < 4; i++) ood_set_free(&s[i]);
    nn_dataset_free(in);
    nn_dataset_free(out);
    return rc;
}

/* ---- uploads ------------------------------------------------------------- */

static const char *const UPLOAD_STYLES[] = {"gray", "inverted", "colour", "alpha"};
#define NSTYLES ((int)(sizeof UPLOAD_STYLES / sizeof UPLOAD_STYLES[0]))

/* Image img (w*h, ink bright on dark as IDX stores it) as PNG samples of
 * style into smp; returns the PNG colour type. Colour: ink (20,40,140)
 * blended into paper (250,235,160) by the pixel's ink. */
static int upload_samples(int style, const uint8_t *img, size_t hw, uint16_t *smp)
{
    static const int paper[3] = {250, 235, 160}, ink[3] = {20, 40, 140};
    for (size_t i = 0; i < hw; i++) {
        int v = img[i];
        switch (style) {
        case 0: smp[i] = (uint16_t)v; break;
        case 1: smp[i] = (uint16_t)(255 - v); break;
        case 2:
            for (int c = 0; c < 3; c++)
                smp[3 * i + c] = (uint16_t)((paper[c] * 255 + (ink[c] - paper[c]) * v + 127) / 255);
            break;
        default:
            smp[4 * i] = smp[4 * i + 1] = smp[4 * i + 2] = 0;
            smp[4 * i + 3] = (uint16_t)v;
            break;
        }
    }
    return style == 2 ? 2 : style == 3 ? 6 : 0;
}

/* probs [n,k] of the first n images of d uploaded as style PNGs through
 * the serving pipeline; ok[i] = 0 where the pipeline refused image i (its
 * probabilities are then zero). 0, or -1 + err. */
static int eval_upload(const nn_ensemble *e, const nn_dataset *d, int n, int style, float *probs,
                       uint8_t *ok, int *refused, char *err, size_t errlen)
{
    int k = nn_ensemble_classes(e), rc = -1;
    size_t hw = (size_t)d->rows * d->cols;
    uint16_t *smp = malloc(sizeof(uint16_t) * 4 * hw);
    pipe_ws *ws = pipe_ws_create(e, 1);
    *refused = 0;
    if (!smp || !ws) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        img_png_spec spec = {.width = (uint32_t)d->cols,
                             .height = (uint32_t)d->rows,
                             .bit_depth = 8,
                             .samples = smp};
        spec.color_type = upload_samples(style, d->images + (size_t)i * hw, hw, smp);
        uint8_t *png = NULL;
        size_t len = 0;
        char perr[128];
        if (img_png_encode(&spec, &png, &len, perr, sizeof perr) != IMG_OK) {
            snprintf(err, errlen, "image %d: %s", i, perr);
            goto done;
        }
        pipe_result r;
        pipe_run_png(e, ws, png, len, NULL, NULL, &r);
        free(png);
        float *row = probs + (size_t)i * k;
        ok[i] = r.status == PIPE_OK;
        if (ok[i])
            memcpy(row, r.probs, sizeof(float) * k);
        else {
            memset(row, 0, sizeof(float) * k);
            ++*refused;
        }
    }
    rc = 0;
done:
    free(smp);
    pipe_ws_free(ws);
    return rc;
}

/* Accuracy over all n images where a refused one (ok[i] == 0) is an
 * error; conf counts the answered ones only. */
static double accuracy_answered(const float *probs, const uint8_t *labels, const uint8_t *ok, int n,
                                int k, int *conf)
{
    memset(conf, 0, sizeof(int) * k * k);
    int right = 0;
    for (int i = 0; i < n; i++) {
        if (!ok[i]) continue;
        int p = nn_argmax(probs + (size_t)i * k, k);
        conf[labels[i] * k + p]++;
        right += p == labels[i];
    }
    return n ? (double)right / n : 0.0;
}

/* bf16 when NN_PRECISION=bf16 runs any member's convolutions on AMX. */
static int ens_precision(const nn_ensemble *e)
{
    for (int i = 0; i < nn_ensemble_size(e); i++)
        if (nn_net_plan_bf16_layers(nn_ensemble_member_infer(e, i))) return NN_PREC_BF16;
    return NN_PREC_FP32;
}

int main(int argc, char **argv)
{
    int json = 0, threads = 0, limit = 0, list_kernels = 0;
    const char *data = NULL, *shift = NULL;
    double rotate = 0, scale = 1;
    int rotate_set = 0, scale_set = 0;
    const char *ood_dir = NULL, *ood_out = NULL, *upload = NULL, *stamp = NULL, *fit_t = NULL;
    int holdout = 10000;
    double ridge = 1e-6, share = OOD_SHARE;
    const char *ood_method = NN_OOD_METHOD, *per_class = NULL;
    head_opts head = {.in = NULL, .in_repeat = 1, .out = NULL};
    nn_ood_head_cfg_default(&head.cfg);
    int head_seed = 1;
    const cli_opt opts[] = {
        {"ood", CLI_STRING, &ood_dir, 0, 0, "DIR",
         "out-of-distribution report: the test set against DIR's test images (IDX)", .def = NULL},
        {"per-class", CLI_STRING, &per_class, 0, 0, "NAMES",
         "--ood: also the out set's images per label, the share the stored score passes and the "
         "answer given most; labels named as letters (A-Z a-z, as mnist-glyphs writes them), "
         "digits or index",
         .def = NULL},
        {"stamp", CLI_STRING, &stamp, 0, 0, "OUT",
         "write MODEL (one weights file) to OUT with the test-set ECE measured now in its "
         "metadata (test_ece); tensors unchanged",
         .def = NULL},
        {"ood-fit", CLI_STRING, &ood_out, 0, 0, "OUT",
         "fit the out-of-distribution statistics of MODEL and write it with them to OUT",
         .def = NULL},
        {"fit-temperature", CLI_STRING, &fit_t, 0, 0, "OUT",
         "fit the softmax temperature of MODEL (one weights file) by NLL on the last "
         "--ood-holdout training images and write it with it to OUT",
         .def = NULL},
        {"ood-holdout", CLI_INT, &holdout, 1, 1000000, "N",
         "--ood-fit: the last N training images choose the threshold, the rest fit; "
         "--fit-temperature: the last N fit",
         .def = NULL},
        {"ood-method", CLI_STRING, &ood_method, 0, 0, "NAME",
         "--ood-fit: mahalanobis (class means and covariance of the features) or energy "
         "(-logsumexp of the logits; for nets trained with --outliers) or head (a classifier "
         "trained on the features: --head-out)",
         .def = NN_OOD_METHOD},
        {"ood-pass", CLI_DOUBLE, &share, 0.5, 1, "SHARE",
         "--ood-fit: the threshold lets this share of the held-out training images pass "
         "(0.5..1; higher: fewer digits refused, more non-digits accepted)",
         .def = "0.95"},
        {"ood-ridge", CLI_DOUBLE, &ridge, 0, 1, "R",
         "--ood-fit: add R * mean variance to the covariance diagonal", .hi_open = 1, .def = NULL},
        {"head-out", CLI_STRING, &head.out, 0, 0, "FILE[,FILE...]",
         "--ood-method head: images that are not digits (IDX image files or sets, e.g. "
         "build/mnist-outliers' output)",
         .def = NULL},
        {"head-in", CLI_STRING, &head.in, 0, 0, "SET[,SET...]",
         "--ood-method head: more digits beside the training images (labels ignored)", .def = NULL},
        {"head-in-repeat", CLI_INT, &head.in_repeat, 1, 1000, "R",
         "--ood-method head: give --head-in's digits (all its sets) R times", .def = "1"},
        {"head-hidden", CLI_INT, &head.cfg.hidden, 1, NN_OOD_MAX_HIDDEN, "H",
         "--ood-method head: hidden units", .def = "64"},
        {"head-epochs", CLI_INT, &head.cfg.epochs, 1, 1000, "N",
         "--ood-method head: passes over digits and outliers", .def = "5"},
        {"head-seed", CLI_INT, &head_seed, 0, 2147483647, "S",
         "--ood-method head: initialisation and shuffling seed", .def = "1"},
        {"json", CLI_FLAG, &json, 0, 0, NULL, "print one JSON object", .def = NULL},
        {"list-kernels", CLI_FLAG, &list_kernels, 0, 0, NULL,
         "print the kernel paths this CPU runs (values for NN_ISA) and exit", .def = NULL},
        {"upload", CLI_STRING, &upload, 0, 0, "STYLE",
         "each test image as an uploaded PNG through the serving pipeline; STYLE: gray, inverted, "
         "colour or alpha",
         .def = NULL},
        {"data", CLI_STRING, &data, 0, 0, "DIR|PREFIX",
         "IDX files (MNIST names in DIR, or PREFIX-images-idx3-ubyte...), .gz accepted",
         .def = "by the model's dataset, data/mnist or /usr/share/datasets/fashion-mnist"},
        {"threads", CLI_INT, &threads, 0, 1024, "N", "threads (0 = all CPUs)",
         .def = "0, all CPUs"},
        {"limit", CLI_INT, &limit, 0, 100000000, "N", "first N test images only (0 = all)",
         .def = NULL},
        {"shift", CLI_STRING, &shift, 0, 0, "DX,DY", "shift every test image by DX,DY pixels first",
         .def = "0,0"},
        {"rotate", CLI_DOUBLE, &rotate, -360, 360, "DEG",
         "rotate every test image (counter-clockwise)", .seen = &rotate_set},
        {"scale", CLI_DOUBLE, &scale, 0.05, 20, "S", "scale every test image about its centre",
         .lo_open = 1, .hi_open = 1, .seen = &scale_set},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **models = calloc((size_t)argc, sizeof *models);
    int nmodels = 0;
    if (!models) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        return 1;
    }
    switch (cli_parse(opts, nopts, argc, argv, models, &nmodels, err, sizeof err)) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-eval [options] MODEL [MODEL...]\n"
                  "Evaluates MODEL on the test set; several models (or MODEL as a\n"
                  "comma-separated list, or a NAME.ensemble list file) are evaluated as one\n"
                  "ensemble (mean probabilities). NN_ISA=generic|avx2|avx512 caps the\n"
                  "kernel path (default: the best this CPU runs).",
                  opts, nopts);
        free(models);
        return 0;
    case CLI_VERSION:
        printf("mnist-eval %s\n", VERSION);
        free(models);
        return 0;
    case CLI_ERROR:
        fprintf(stderr, "mnist-eval: %s\n", err);
        free(models);
        return 2;
    case CLI_RUN: break;
    }
    if (nn_gemm_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        free(models);
        return 2;
    }
    if (nn_precision_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        free(models);
        return 2;
    }
    if (list_kernels) {
        char list[128];
        nn_gemm_paths_list(list, sizeof list);
        printf("%s\n", list);
        free(models);
        return 0;
    }
    nn_affine tf;
    nn_affine_identity(&tf);
    int use_tf = rotate_set || scale_set;
    tf.rot_deg = (float)rotate;
    tf.scale = (float)scale;
    if (shift) {
        float d[2];
        if (cli_floats(shift, d, 2) || !(fabsf(d[0]) <= 28 && fabsf(d[1]) <= 28)) {
            fprintf(stderr, "mnist-eval: --shift wants DX,DY, pixels from -28 to 28 each\n");
            free(models);
            return 2;
        }
        tf.dx = d[0];
        tf.dy = d[1];
        use_tf = 1;
    }
    int style = -1;
    if (upload) {
        for (int i = 0; i < NSTYLES; i++)
            if (!strcmp(upload, UPLOAD_STYLES[i])) style = i;
        const char *clash = use_tf               ? "--shift, --rotate or --scale"
                            : ood_dir || ood_out ? "--ood or --ood-fit"
                                                 : NULL;
        if (style < 0 || clash) {
            if (style < 0)
                fprintf(stderr, "mnist-eval: --upload wants gray, inverted, colour or alpha\n");
            else
                fprintf(stderr, "mnist-eval: --upload takes no %s\n", clash);
            free(models);
            return 2;
        }
    }
    char paths[4096] = "";
    size_t used = 0;
    for (int i = 0; i < nmodels; i++) {
        int k = snprintf(paths + used, sizeof paths - used, "%s%s", used ? "," : "", models[i]);
        if (k < 0 || (size_t)k >= sizeof paths - used) {
            fprintf(stderr, "mnist-eval: too many model paths\n");
            free(models);
            return 2;
        }
        used += (size_t)k;
    }
    free(models);
    if (!used) {
        fprintf(stderr, "mnist-eval: no MODEL given (see --help)\n");
        return 2;
    }
    nn_ensemble *e = nn_ensemble_load(paths, err, sizeof err);
    if (!e) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        return 1;
    }
    /* From here every exit goes through done: nothing leaks on an error
     * (the sanitizer build runs these paths). */
    int rc = 1, k = nn_ensemble_classes(e), nt = threads > 0 ? threads : nn_cpu_count();
    float *probs = NULL;
    int *conf = NULL, refused = 0;
    uint8_t *answered = NULL;
    nn_dataset *test = NULL;
    if (stamp && (nn_ensemble_size(e) != 1 || use_tf || upload || limit || ood_out || ood_dir)) {
        fprintf(stderr, "mnist-eval: --stamp takes one weights file, a full test set and no "
                        "other mode\n");
        rc = 2;
        goto done;
    }
    if (!data) data = default_data(e);
    if (per_class && (!ood_dir || (strcmp(per_class, "letters") && strcmp(per_class, "digits") &&
                                   strcmp(per_class, "index")))) {
        fprintf(stderr, "mnist-eval: --per-class goes with --ood and wants letters, digits or "
                        "index\n");
        rc = 2;
        goto done;
    }
    if (fit_t) {
        if (stamp || ood_out || ood_dir || use_tf || upload || limit) {
            fprintf(stderr, "mnist-eval: --fit-temperature takes no other mode\n");
            rc = 2;
        } else {
            rc = temperature_fit(e, data, fit_t, holdout);
        }
        goto done;
    }
    if (ood_out || ood_dir) {
        if (ood_out && ood_dir) {
            fprintf(stderr, "mnist-eval: --ood-fit and --ood are separate runs\n");
            rc = 2;
        } else if (use_tf) {
            fprintf(stderr,
                    "mnist-eval: --ood and --ood-fit take no --shift, --rotate or --scale\n");
            rc = 2;
        } else {
            nn_ood_method m;
            if (nn_ood_method_parse(ood_method, &m)) {
                fprintf(stderr, "mnist-eval: --ood-method must be mahalanobis, energy or head\n");
                rc = 2;
            } else if ((head.out || head.in) && (m != NN_OOD_HEAD || !ood_out)) {
                fprintf(stderr, "mnist-eval: --head-in and --head-out go with --ood-fit and "
                                "--ood-method head\n");
                rc = 2;
            } else {
                head.cfg.seed = (uint64_t)head_seed;
                rc = ood_out ? ood_fit(e, data, ood_out, holdout, ridge, m, share, &head)
                             : ood_eval(e, data, ood_dir, limit, holdout, per_class, json);
            }
        }
        goto done;
    }
    test = nn_dataset_load_set(data, 1, k, err, sizeof err);
    if (!test) {
        fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err);
        goto done;
    }
    const nn_net *n0 = nn_ensemble_member(e, 0);
    /* An upload of any size is prepared to what a servable model takes. */
    if (style >= 0 ? pipe_model_check(e, paths, err, sizeof err) != 0
                   : test->rows != n0->in_h || test->cols != n0->in_w || n0->in_c != 1) {
        if (style >= 0)
            fprintf(stderr, "mnist-eval: %s\n", err);
        else
            fprintf(stderr, "mnist-eval: the model wants %dx%dx%d inputs, the data is %dx%d\n",
                    n0->in_c, n0->in_h, n0->in_w, test->rows, test->cols);
        goto done;
    }
    int n = test->n;
    if (limit > 0 && limit < n) n = limit;
    probs = malloc(sizeof(float) * (size_t)n * k);
    conf = malloc(sizeof(int) * k * k);
    answered = malloc((size_t)n);
    if (!probs || !conf || !answered) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    double t0 = now_s(), acc;
    if (style >= 0) {
        if (eval_upload(e, test, n, style, probs, answered, &refused, err, sizeof err)) {
            fprintf(stderr, "mnist-eval: %s\n", err);
            goto done;
        }
        acc = accuracy_answered(probs, test->labels, answered, n, k, conf);
    } else {
        if (nn_eval_probs(e, test->images, n, use_tf ? &tf : NULL, threads, probs)) {
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
        acc = nn_accuracy(probs, test->labels, n, k, conf);
    }
    double secs = now_s() - t0;
    if (style >= 0) nt = 1;
    /* Over the answered images: a refused upload states no confidence. */
    double ece, ece_sd, ece_floor;
    if (style >= 0) {
        float *pa = malloc(sizeof(float) * (size_t)n * k);
        uint8_t *la = malloc((size_t)n);
        int na = 0;
        if (!pa || !la) {
            free(pa);
            free(la);
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
        for (int i = 0; i < n; i++)
            if (answered[i]) {
                memcpy(pa + (size_t)na * k, probs + (size_t)i * k, sizeof(float) * k);
                la[na++] = test->labels[i];
            }
        ece = nn_ece(pa, la, na, k, NN_ECE_BINS);
        ece_floor = nn_ece_floor(pa, na, k, NN_ECE_BINS, &ece_sd);
        free(pa);
        free(la);
    } else {
        ece = nn_ece(probs, test->labels, n, k, NN_ECE_BINS);
        ece_floor = nn_ece_floor(probs, n, k, NN_ECE_BINS, &ece_sd);
    }
    if (ece_floor < 0) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    const nn_meta *m = nn_ensemble_meta(e);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON *models = cJSON_AddArrayToObject(o, "models");
        for (int i = 0; i < nn_ensemble_size(e); i++)
            cJSON_AddItemToArray(models, cJSON_CreateString(nn_ensemble_path(e, i)));
        cJSON_AddStringToObject(o, "dataset", m->dataset);
        cJSON_AddStringToObject(o, "data", data);
        if (style >= 0) {
            cJSON_AddStringToObject(o, "upload", UPLOAD_STYLES[style]);
            cJSON_AddNumberToObject(o, "refused", refused);
        } else {
            cJSON_AddNullToObject(o, "upload");
        }
        cJSON_AddNumberToObject(o, "accuracy", acc);
        cJSON_AddNumberToObject(o, "n", n);
        cJSON_AddNumberToObject(o, "errors", (int)((1.0 - acc) * n + 0.5));
        cJSON_AddNumberToObject(o, "borderline", nn_borderline(probs, n, k, NN_BORDERLINE_MARGIN));
        /* ECE over NN_ECE_BINS bins, and the images a kernel path's
         * rounding could move to a neighbouring bin (nn/eval.h). */
        cJSON_AddNumberToObject(o, "ece", ece);
        cJSON_AddNumberToObject(o, "ece_bins", NN_ECE_BINS);
        /* What a perfectly calibrated model would measure on these rows. */
        cJSON_AddNumberToObject(o, "ece_floor", ece_floor);
        cJSON_AddNumberToObject(o, "ece_floor_sd", ece_sd);
        cJSON_AddNumberToObject(o, "ece_edge",
                                nn_ece_edge(probs, n, k, NN_ECE_BINS, NN_BORDERLINE_MARGIN));
        cJSON_AddStringToObject(o, "kernels", nn_gemm_path_name(NN_GEMM_PATH_AUTO));
        cJSON_AddStringToObject(o, "precision", nn_precision_name(ens_precision(e)));
        cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
        cJSON *cf = cJSON_AddArrayToObject(o, "confusion");
        for (int i = 0; i < k; i++) {
            int tot = 0;
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < k; j++) {
                tot += conf[i * k + j];
                cJSON_AddItemToArray(row, cJSON_CreateNumber(conf[i * k + j]));
            }
            cJSON_AddItemToArray(cf, row);
            cJSON_AddItemToArray(pc, cJSON_CreateNumber(tot ? (double)conf[i * k + i] / tot : 0.0));
        }
        cJSON *lab = cJSON_AddArrayToObject(o, "labels");
        for (int i = 0; i < k; i++) cJSON_AddItemToArray(lab, cJSON_CreateString(m->labels[i]));
        cJSON_AddNumberToObject(o, "params", (double)nn_ensemble_params(e));
        cJSON_AddNumberToObject(o, "images_per_second", n / secs);
        cJSON_AddNumberToObject(o, "threads", nt);
        if (use_tf) {
            cJSON *t = cJSON_AddObjectToObject(o, "transform");
            cJSON_AddNumberToObject(t, "dx", tf.dx);
            cJSON_AddNumberToObject(t, "dy", tf.dy);
            cJSON_AddNumberToObject(t, "rotate", tf.rot_deg);
            cJSON_AddNumberToObject(t, "scale", tf.scale);
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s) {
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
        printf("%s\n", s);
        free(s);
    } else {
        printf("model: %s (%d member%s, %zu parameters)\n", paths, nn_ensemble_size(e),
               nn_ensemble_size(e) > 1 ? "s" : "", nn_ensemble_params(e));
        printf("data: %s\n", data);
        if (use_tf)
            printf("transform: shift %g,%g  rotate %g  scale %g\n", tf.dx, tf.dy, tf.rot_deg,
                   tf.scale);
        if (style >= 0)
            printf("upload: %s PNGs through the serving pipeline, %d refused (counted as errors)\n",
                   UPLOAD_STYLES[style], refused);
        printf("test accuracy: %.4f (%d/%d, %d errors)\n", acc, (int)(acc * n + 0.5), n,
               n - (int)(acc * n + 0.5));
        printf("expected calibration error: %.2f%% (%d equal-width confidence bins); "
               "a calibrated model would measure %.2f%% +- %.2f%% on these confidences\n\n",
               100 * ece, NN_ECE_BINS, 100 * ece_floor, 100 * ece_sd);
        printf("%-12s %8s\n", "class", "accuracy");
        for (int i = 0; i < k; i++) {
            int tot = 0;
            for (int j = 0; j < k; j++) tot += conf[i * k + j];
            printf("%-12s %8.4f\n", m->labels[i], tot ? (double)conf[i * k + i] / tot : 0.0);
        }
        printf("\nconfusion (rows: true, columns: predicted)\n     ");
        for (int j = 0; j < k; j++) printf("%6d", j);
        printf("\n");
        for (int i = 0; i < k; i++) {
            printf("%4d ", i);
            for (int j = 0; j < k; j++) printf("%6d", conf[i * k + j]);
            printf("\n");
        }
        printf("\n%.0f images/s (%d threads, batch %d, %s kernels, %s)\n", n / secs, nt,
               style >= 0 ? 1 : 128, nn_gemm_path_name(NN_GEMM_PATH_AUTO),
               nn_precision_name(ens_precision(e)));
    }
    if (stamp) {
        /* The file again, as a net of our own: only the metadata changes,
         * the tensors (and their checksum) are written as they were read. */
        nn_net *net = nn_net_load(nn_ensemble_path(e, 0), err, sizeof err);
        if (!net) {
            fprintf(stderr, "mnist-eval: %s\n", err);
            goto done;
        }
        net->meta.test_ece = ece;
        int bad = nn_net_save(net, stamp, err, sizeof err);
        nn_net_free(net);
        if (bad) {
            fprintf(stderr, "mnist-eval: %s\n", err);
            goto done;
        }
        fprintf(stderr, "mnist-eval: wrote %s with test_ece %.6f\n", stamp, ece);
    }
    rc = 0;
done:
    free(probs);
    free(conf);
    free(answered);
    nn_dataset_free(test);
    nn_ensemble_free(e);
    return rc;
}
