/* mnist-train - trains a net on MNIST (or any IDX image set) and writes a
 * safetensors weights file, a CSV of the history beside it, and the test
 * accuracy into the file's metadata. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/idx.h"
#include "nn/net.h"
#include "nn/pool.h"
#include "nn/preset.h"
#include "nn/train.h"

#define VERSION "1.0.0"

static volatile sig_atomic_t g_stop;
static volatile int g_stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    g_stop_flag = 1;
}

static const char *FASHION_LABELS[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mnist-train [options] --out FILE\n"
        "  --arch NAME|FILE   mlp, lenet, cnn, or a JSON architecture file (default mlp)\n"
        "  --epochs N         epochs (preset default)\n"
        "  --batch N          batch size (preset default)\n"
        "  --lr X             learning rate (peak for cosine/onecycle)\n"
        "  --opt adam|sgd     optimiser (default adam)\n"
        "  --sched NAME       const, step, exp, cosine, onecycle (preset default)\n"
        "  --gamma X          step/exp decay factor; --step N epochs per step\n"
        "  --warmup X         warm-up epochs for cosine/onecycle\n"
        "  --wd X             weight decay (decoupled for adam)\n"
        "  --ls X             label smoothing\n"
        "  --ema X            moving average of weights, e.g. 0.999 (0 = off)\n"
        "  --aug R,Z,S        augmentation: max rotation deg, zoom fraction, shift fraction\n"
        "  --elastic A,S      elastic distortion alpha and sigma (pixels)\n"
        "  --stroke S         pen width: thicken or thin strokes by up to S (0..1,\n"
        "                     blend toward a 1-pixel dilation or erosion)\n"
        "  --blur B           blur each image by a Gaussian of sigma up to B pixels\n"
        "  --deskew           put a deskew layer first: the model straightens\n"
        "                     slanted strokes itself, in training and inference\n"
        "  --dropout P        set every dropout layer's probability to P (0 = off)\n"
        "  --flip P           mirror images left-right with probability P (objects,\n"
        "                     not digits; default 0)\n"
        "  --no-aug           no augmentation\n"
        "  --seed N           random seed (default 1)\n"
        "  --threads N        training threads (default: all CPUs)\n"
        "  --val N            hold out the last N training images for validation\n"
        "                     and keep the best epoch's weights (default 0)\n"
        "  --limit N          train on the first N images only (smoke tests)\n"
        "  --data DIR         IDX files (default data/mnist; .gz accepted)\n"
        "  --dataset NAME     mnist or fashion-mnist (labels; default mnist)\n"
        "  --name NAME        model name stored in the metadata\n"
        "  --out FILE         weights file to write (required); history in FILE.csv\n"
        "  --quiet            one line per epoch, no progress bar\n"
        "  --help, --version\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    double t0;
    int quiet, tty;
    double last;
} prog_t;

static void fmt_time(char *buf, size_t n, double s)
{
    if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    else if (s >= 60) snprintf(buf, n, "%d:%02d", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%ds", (int)s);
}

static void progress(void *ud, int step, int steps, double loss, double acc)
{
    prog_t *p = ud;
    if (p->quiet) return;
    double t = now_s();
    if (step != steps && t - p->last < (p->tty ? 0.1 : 10.0)) return;
    p->last = t;
    int width = 30, done = (int)((long long)width * step / steps);
    char bar[40], eta[32];
    for (int i = 0; i < width; i++) bar[i] = i < done ? '=' : (i == done ? '>' : '.');
    bar[width] = 0;
    double el = t - p->t0, per = el / step;
    fmt_time(eta, sizeof eta, per * (steps - step));
    fprintf(stderr, "%s%*d/%d [%s] - ETA: %s - loss: %.4f - accuracy: %.4f%s",
            p->tty ? "\r" : "", (int)snprintf(NULL, 0, "%d", steps), step, steps, bar, eta, loss, acc,
            p->tty ? "" : "\n");
    fflush(stderr);
}

static int parse3(const char *s, float *a, float *b, float *c)
{
    return sscanf(s, "%f,%f,%f", a, b, c) == 3 ? 0 : -1;
}

/* A number from 0 to hi into *out; else "mnist-train: MSG" and -1. */
static int parse_upto(const char *s, double hi, const char *msg, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v <= hi)) {
        fprintf(stderr, "mnist-train: %s\n", msg);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *arch_arg = "mlp", *out = NULL, *data = "data/mnist", *dataset = "mnist";
    const char *sched_name = NULL, *name = NULL, *opt_name = "adam";
    int epochs = -1, batch = -1, threads = 0, val = 0, limit = 0, quiet = 0, no_aug = 0, deskew = 0;
    double lr = -1, gamma = -1, step = -1, warmup = -1, wd = -1, ls = -1, ema = -1;
    const char *aug_s = NULL, *elastic_s = NULL, *flip_s = NULL, *stroke_s = NULL, *blur_s = NULL, *dropout_s = NULL;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(flag) (!strcmp(a, flag) && (v ? (i++, 1) : (fprintf(stderr, "mnist-train: %s needs a value\n", flag), exit(2), 0)))
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--version")) { printf("mnist-train %s\n", VERSION); return 0; }
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--no-aug")) no_aug = 1;
        else if (!strcmp(a, "--deskew")) deskew = 1;
        else if (ARG("--arch")) arch_arg = v;
        else if (ARG("--epochs")) epochs = atoi(v);
        else if (ARG("--batch")) batch = atoi(v);
        else if (ARG("--lr")) lr = atof(v);
        else if (ARG("--opt")) opt_name = v;
        else if (ARG("--sched")) sched_name = v;
        else if (ARG("--gamma")) gamma = atof(v);
        else if (ARG("--step")) step = atof(v);
        else if (ARG("--warmup")) warmup = atof(v);
        else if (ARG("--wd")) wd = atof(v);
        else if (ARG("--ls")) ls = atof(v);
        else if (ARG("--ema")) ema = atof(v);
        else if (ARG("--aug")) aug_s = v;
        else if (ARG("--elastic")) elastic_s = v;
        else if (ARG("--flip")) flip_s = v;
        else if (ARG("--stroke")) stroke_s = v;
        else if (ARG("--blur")) blur_s = v;
        else if (ARG("--dropout")) dropout_s = v;
        else if (ARG("--seed")) seed = strtoull(v, NULL, 10);
        else if (ARG("--threads")) threads = atoi(v);
        else if (ARG("--val")) val = atoi(v);
        else if (ARG("--limit")) limit = atoi(v);
        else if (ARG("--data")) data = v;
        else if (ARG("--dataset")) dataset = v;
        else if (ARG("--name")) name = v;
        else if (ARG("--out")) out = v;
        else { fprintf(stderr, "mnist-train: unknown option %s (see --help)\n", a); return 2; }
#undef ARG
    }
    if (!out) { fprintf(stderr, "mnist-train: --out FILE is required (see --help)\n"); return 2; }

    /* The preset's recipe (or a JSON file's defaults), then the flags. */
    const nn_preset *preset;
    char err[512];
    char *arch_text = nn_arch_text(arch_arg, &preset, err, sizeof err);
    if (!arch_text) { fprintf(stderr, "mnist-train: --arch %s\n", err); return 2; }
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    int bad_arch = nn_arch_parse(arch_text, layers, &nl, err, sizeof err);
    free(arch_text);
    if (bad_arch) {
        fprintf(stderr, "mnist-train: %s\n", err);
        return 2;
    }
    nn_train_cfg cfg;
    nn_preset_train_cfg(preset, &cfg);
    if (epochs > 0) cfg.epochs = epochs;
    if (batch > 0) cfg.batch = batch;
    cfg.threads = threads;
    cfg.seed = seed;
    if (!strcmp(opt_name, "sgd")) nn_opt_cfg_default(&cfg.opt, NN_OPT_SGD);
    else if (strcmp(opt_name, "adam")) { fprintf(stderr, "mnist-train: --opt must be adam or sgd\n"); return 2; }
    if (sched_name && nn_sched_parse(sched_name, &cfg.sched.kind)) {
        fprintf(stderr, "mnist-train: unknown --sched %s (const, step, exp, cosine, onecycle)\n", sched_name);
        return 2;
    }
    if (lr > 0) cfg.sched.lr = (float)lr;
    if (gamma > 0) cfg.sched.gamma = (float)gamma;
    if (step > 0) cfg.sched.step = (float)step;
    if (warmup >= 0) cfg.sched.warmup = (float)warmup;
    if (wd >= 0) cfg.opt.weight_decay = (float)wd;
    if (ls >= 0) cfg.label_smoothing = (float)ls;
    if (ema >= 0) cfg.ema = (float)ema;
    if (aug_s && parse3(aug_s, &cfg.aug.max_rot, &cfg.aug.max_zoom, &cfg.aug.max_shift)) {
        fprintf(stderr, "mnist-train: --aug wants ROT,ZOOM,SHIFT e.g. 15,0.15,0.1\n");
        return 2;
    }
    if (elastic_s && sscanf(elastic_s, "%f,%f", &cfg.aug.elastic_alpha, &cfg.aug.elastic_sigma) != 2) {
        fprintf(stderr, "mnist-train: --elastic wants ALPHA,SIGMA e.g. 34,4\n");
        return 2;
    }
    if (flip_s && parse_upto(flip_s, 1, "--flip wants a probability from 0 to 1", &cfg.aug.flip_prob))
        return 2;
    if (stroke_s && parse_upto(stroke_s, 1, "--stroke wants a strength from 0 to 1", &cfg.aug.max_stroke))
        return 2;
    if (blur_s && parse_upto(blur_s, 4, "--blur wants a sigma from 0 to 4 pixels", &cfg.aug.max_blur))
        return 2;
    if (no_aug) memset(&cfg.aug, 0, sizeof cfg.aug);
    if (cfg.sched.kind == NN_SCHED_STEP && cfg.sched.step <= 0) cfg.sched.step = 5;

    if (deskew) {
        if (layers[0].kind == NN_DESKEW || nl == NN_MAX_LAYERS) {
            fprintf(stderr, "mnist-train: --deskew: the architecture %s\n",
                    layers[0].kind == NN_DESKEW ? "already starts with deskew" : "has no room for another layer");
            return 2;
        }
        memmove(layers + 1, layers, sizeof(nn_layer) * nl++);
        memset(&layers[0], 0, sizeof layers[0]);
        layers[0].kind = NN_DESKEW;
    }
    if (dropout_s) {
        char *end;
        double p = strtod(dropout_s, &end);
        if (end == dropout_s || *end || !(p >= 0 && p < 1)) {
            fprintf(stderr, "mnist-train: --dropout wants a probability from 0 to below 1\n");
            return 2;
        }
        int found = 0;
        for (int i = 0; i < nl; i++)
            if (layers[i].kind == NN_DROPOUT) layers[i].p = (float)p, found = 1;
        if (!found) {
            fprintf(stderr, "mnist-train: --dropout: the architecture has no dropout layer\n");
            return 2;
        }
    }
    /* From here on every exit goes through done:, which frees what exists. */
    nn_dataset *train = NULL, *test = NULL;
    nn_net *net = NULL, *best = NULL, *final = NULL;
    nn_trainer *tr = NULL;
    FILE *csv = NULL;
    float *probs = NULL;
    int rc = 1;
    train = nn_dataset_load_dir(data, 0, 256, err, sizeof err);
    if (!train) { fprintf(stderr, "mnist-train: %s (run `make data`)\n", err); goto done; }
    test = nn_dataset_load_dir(data, 1, 256, err, sizeof err);
    if (!test) { fprintf(stderr, "mnist-train: %s (run `make data`)\n", err); goto done; }

    nn_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.nclasses = 10;
    int fashion = !strcmp(dataset, "fashion-mnist") || !strcmp(dataset, "fashion");
    snprintf(meta.dataset, sizeof meta.dataset, "%s", fashion ? "fashion-mnist" : dataset);
    /* Recorded so the server frames uploads the way this data was framed. */
    snprintf(meta.preprocess, sizeof meta.preprocess, "%s", nn_preprocess_default(meta.dataset));
    for (int i = 0; i < 10; i++) {
        if (fashion) snprintf(meta.labels[i], NN_LABEL_MAX, "%s", FASHION_LABELS[i]);
        else snprintf(meta.labels[i], NN_LABEL_MAX, "%d", i);
    }
    meta.input_mean = preset->input_mean;
    meta.input_std = preset->input_std;
    meta.test_accuracy = -1.0;
    meta.seed = seed;
    meta.epochs = cfg.epochs;
    snprintf(meta.name, sizeof meta.name, "%s", name ? name : arch_arg);
    net = nn_net_create(layers, nl, 1, train->rows, train->cols, &meta, err, sizeof err);
    if (!net) { fprintf(stderr, "mnist-train: %s\n", err); rc = 2; goto done; }
    nn_net_init(net, seed);
    best = nn_net_create(layers, nl, 1, train->rows, train->cols, &meta, err, sizeof err);
    if (!best) { fprintf(stderr, "mnist-train: %s\n", err); goto done; }

    int ntrain = train->n;
    if (limit > 0 && limit < ntrain) ntrain = limit;
    if (val < 0 || val >= ntrain) { fprintf(stderr, "mnist-train: --val must be in [0, %d)\n", ntrain); rc = 2; goto done; }
    ntrain -= val;
    int hw = train->rows * train->cols;
    const uint8_t *val_x = train->images + (size_t)ntrain * hw, *val_y = train->labels + ntrain;

    tr = nn_trainer_create(net, &cfg, err, sizeof err);
    if (!tr) { fprintf(stderr, "mnist-train: %s\n", err); goto done; }

    char csv_path[1024];
    snprintf(csv_path, sizeof csv_path, "%s.csv", out);
    csv = fopen(csv_path, "w");
    if (!csv) { fprintf(stderr, "mnist-train: cannot write %s: %s\n", csv_path, strerror(errno)); goto done; }
    fprintf(csv, "epoch,loss,accuracy,val_accuracy,lr,seconds\n");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char summary[512];
    nn_net_summary(net, summary, sizeof summary);
    int nthreads = threads > 0 ? threads : nn_cpu_count();
    fprintf(stderr, "model: %s\nparameters: %zu, %.2f M multiply-adds per image\n", summary, net->nparams,
            nn_net_macs(net) / 1e6);
    fprintf(stderr, "training on %d images (%d held out), batch %d, %d epochs, seed %llu, %d threads\n",
            ntrain, val, cfg.batch, cfg.epochs, seed, nthreads);

    probs = malloc(sizeof(float) * 10 * (size_t)(test->n > val ? test->n : val));
    if (!probs) { fprintf(stderr, "mnist-train: out of memory\n"); goto done; }
    double best_val = -1.0, t_start = now_s();
    int best_epoch = 0, ran = 0;
    prog_t pg = {0, quiet, isatty(2), 0};
    for (int e = 0; e < cfg.epochs && !g_stop; e++) {
        if (!quiet) fprintf(stderr, "Epoch %d/%d\n", e + 1, cfg.epochs);
        pg.t0 = now_s();
        pg.last = 0;
        double loss, acc;
        int stopped = nn_trainer_epoch(tr, train->images, train->labels, ntrain, e, progress, &pg,
                                       &g_stop_flag, &loss, &acc);
        if (stopped) { fprintf(stderr, "\ninterrupted: keeping the best weights so far\n"); break; }
        double secs = now_s() - pg.t0;
        /* best receives this epoch's evaluation weights; on disk only if better. */
        nn_trainer_eval_weights(tr, best);
        double va = -1.0;
        nn_net *cand = best;
        if (val > 0) {
            nn_ensemble ens = {.n = 1};
            ens.nets[0] = cand;
            if (nn_eval_probs(&ens, val_x, val, NULL, threads, probs)) { fprintf(stderr, "mnist-train: out of memory\n"); goto done; }
            va = nn_accuracy(probs, val_y, val, 10, NULL);
        }
        ran = e + 1;
        if (pg.tty && !quiet) fprintf(stderr, "\n");
        fprintf(stderr, "%d/%d - %.1fs %.0fms/step - loss: %.4f - accuracy: %.4f", e + 1, cfg.epochs, secs,
                1000.0 * secs / ((ntrain + cfg.batch - 1) / cfg.batch), loss, acc);
        if (val > 0) fprintf(stderr, " - val_accuracy: %.4f", va);
        fprintf(stderr, " - lr: %.2e\n", nn_trainer_lr(tr));
        fprintf(csv, "%d,%.6f,%.6f,%.6f,%.6g,%.2f\n", e + 1, loss, acc, va, nn_trainer_lr(tr), secs);
        fflush(csv);
        if (val == 0 || va >= best_val) {
            best_val = va;
            best_epoch = e + 1;
            /* Checkpoint: the best weights so far are always on disk. */
            best->meta.epochs = e + 1;
            if (nn_net_save(best, out, err, sizeof err)) { fprintf(stderr, "mnist-train: %s\n", err); goto done; }
        }
    }
    fclose(csv);
    csv = NULL;
    if (ran == 0) { fprintf(stderr, "mnist-train: no epoch completed, nothing saved\n"); goto done; }
    /* Reload the kept checkpoint, score it on the test set, store the figure. */
    final = nn_net_load(out, err, sizeof err);
    if (!final) { fprintf(stderr, "mnist-train: %s\n", err); goto done; }
    nn_ensemble ens = {.n = 1};
    ens.nets[0] = final;
    if (nn_eval_probs(&ens, test->images, test->n, NULL, threads, probs)) { fprintf(stderr, "mnist-train: out of memory\n"); goto done; }
    double ta = nn_accuracy(probs, test->labels, test->n, 10, NULL);
    final->meta.test_accuracy = ta;
    if (nn_net_save(final, out, err, sizeof err)) { fprintf(stderr, "mnist-train: %s\n", err); goto done; }
    fprintf(stderr, "kept epoch %d%s; test accuracy %.4f (%d images); %.1f s in all\nwrote %s and %s\n",
            best_epoch, val > 0 ? " (best validation accuracy)" : "", ta, test->n, now_s() - t_start, out,
            csv_path);
    printf("{\"test_accuracy\": %.6f, \"epochs\": %d, \"best_epoch\": %d, \"seconds\": %.1f}\n", ta, ran,
           best_epoch, now_s() - t_start);
    rc = g_stop ? 130 : 0;
done:
    if (csv) fclose(csv);
    nn_net_free(final);
    nn_trainer_free(tr);
    nn_net_free(net);
    nn_net_free(best);
    nn_dataset_free(train);
    nn_dataset_free(test);
    free(probs);
    return rc;
}
