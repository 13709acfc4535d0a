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

#include "cli/opt.h"
#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/gemm.h"
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

static const char *FASHION_LABELS[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                         "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                         "Bag",         "Ankle boot"};

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
    if (s >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    else if (s >= 60)
        snprintf(buf, n, "%d:%02d", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%ds", (int)s);
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
    fprintf(stderr, "%s%*d/%d [%s] - ETA: %s - loss: %.4f - accuracy: %.4f%s", p->tty ? "\r" : "",
            (int)snprintf(NULL, 0, "%d", steps), step, steps, bar, eta, loss, acc,
            p->tty ? "" : "\n");
    fflush(stderr);
}

/* Class probabilities of net (as it is, not folded) on n images: 0, or -1
 * when out of memory. */
static int eval_net(const nn_net *net, const uint8_t *images, int n, int threads, float *probs)
{
    nn_ensemble *view = nn_ensemble_view(net);
    int rc = view ? nn_eval_probs(view, images, n, NULL, threads, probs) : -1;
    nn_ensemble_free(view);
    return rc;
}

int main(int argc, char **argv)
{
    const char *arch_arg = "mlp", *out = NULL, *data = "data/mnist", *dataset = "mnist";
    const char *sched_name = NULL, *name = NULL, *opt_name = "adam", *aug_s = NULL,
               *elastic_s = NULL, *init = NULL, *outliers = NULL, *extra = NULL, *margins_s = NULL;
    int oe_batch = 0, extra_repeat = 1;
    float oe_weight = 0.5f;
    int epochs = 0, batch = 0, threads = 0, val = 0, limit = 0, quiet = 0, no_aug = 0, deskew = 0;
    double lr = 0, gamma = 0, step = 0, warmup = 0, wd = 0, ls = 0, ema = 0;
    float flip = 0, stroke = 0, blur = 0, dropout = 0;
    int lr_set = 0, gamma_set = 0, step_set = 0, warmup_set = 0, wd_set = 0, ls_set = 0,
        ema_set = 0;
    int flip_set = 0, stroke_set = 0, blur_set = 0, dropout_set = 0;
    unsigned long long seed = 1;
    const cli_opt opts[] = {
        {"arch", CLI_STRING, &arch_arg, 0, 0, "NAME|FILE",
         NN_PRESET_NAMES ", or a JSON architecture file", .def = NULL},
        {"epochs", CLI_INT, &epochs, 1, 100000, "N", "epochs",
         .def = "the preset's: mlp 20, lenet 20, cnn 30, file 5"},
        {"batch", CLI_INT, &batch, 1, 65536, "N", "batch size",
         .def = "the preset's: cnn 64, others 32"},
        {"lr", CLI_DOUBLE, &lr, 0, 10, "X", "learning rate (peak for cosine/onecycle)",
         .def = "the preset's: cnn 3e-3, others 1e-3", .lo_open = 1, .seen = &lr_set},
        {"opt", CLI_STRING, &opt_name, 0, 0, "adam|sgd", "optimiser", .def = NULL},
        {"sched", CLI_STRING, &sched_name, 0, 0, "NAME", "const, step, exp, cosine, onecycle",
         .def = "the preset's: mlp and lenet exp, cnn onecycle, file const"},
        {"gamma", CLI_DOUBLE, &gamma, 0, 100, "X", "step/exp decay factor",
         .def = "the preset's: 0.85 for exp, else 1", .lo_open = 1, .seen = &gamma_set},
        {"step", CLI_DOUBLE, &step, 0, 100000, "N", "epochs per step of the step schedule",
         .def = "5", .lo_open = 1, .seen = &step_set},
        {"warmup", CLI_DOUBLE, &warmup, 0, 100000, "X", "warm-up epochs for cosine/onecycle",
         .def = "the preset's: cnn 2, others 0", .seen = &warmup_set},
        {"wd", CLI_DOUBLE, &wd, 0, 10, "X", "weight decay (decoupled for adam)", .seen = &wd_set},
        {"ls", CLI_DOUBLE, &ls, 0, 1, "X", "label smoothing", .hi_open = 1, .seen = &ls_set},
        {"ema", CLI_DOUBLE, &ema, 0, 1, "X", "moving average of weights, e.g. 0.999 (0 = off)",
         .def = "the preset's: cnn 0.999, others 0", .hi_open = 1, .seen = &ema_set},
        {"aug", CLI_STRING, &aug_s, 0, 0, "R,Z,S",
         "augmentation: max rotation deg, zoom fraction, shift fraction",
         .def = "the preset's: lenet 8,0.08,0.08, cnn 12,0.12,0.1, others none"},
        {"elastic", CLI_STRING, &elastic_s, 0, 0, "A,S",
         "elastic distortion alpha and sigma (pixels)", .def = "off"},
        {"stroke", CLI_FLOAT, &stroke, 0, 1, "S",
         "pen width: thicken or thin strokes by up to S (blend toward a 1-pixel dilation or "
         "erosion)",
         .what = "a strength", .seen = &stroke_set},
        {"blur", CLI_FLOAT, &blur, 0, 4, "B",
         "blur each image by a Gaussian of sigma up to B pixels", .what = "a sigma in pixels",
         .seen = &blur_set},
        {"deskew", CLI_FLAG, &deskew, 0, 0, NULL,
         "put a deskew layer first: the model straightens slanted strokes itself", .def = NULL},
        {"dropout", CLI_FLOAT, &dropout, 0, 1, "P",
         "set every dropout layer's probability to P (0 = off)", .def = "the architecture's",
         .what = "a probability", .hi_open = 1, .seen = &dropout_set},
        {"flip", CLI_FLOAT, &flip, 0, 1, "P",
         "mirror images left-right with probability P (objects, not digits)",
         .what = "a probability", .seen = &flip_set},
        {"init", CLI_STRING, &init, 0, 0, "FILE",
         "start from this model's weights (same architecture) instead of random ones: "
         "fine-tuning",
         .def = NULL},
        {"extra-data", CLI_STRING, &extra, 0, 0, "PREFIX",
         "more labelled training images, PREFIX-{images-idx3,labels-idx1}-ubyte (e.g. "
         "data/glyphs/digits-train), added to every epoch",
         .def = NULL},
        {"extra-repeat", CLI_INT, &extra_repeat, 1, 1000, "N",
         "--extra-data: each extra image N times per epoch", .def = "1"},
        {"outliers", CLI_STRING, &outliers, 0, 0, "FILE",
         "IDX images of no class (build/mnist-outliers): outlier exposure, trained toward "
         "the uniform distribution",
         .def = NULL},
        {"oe-batch", CLI_INT, &oe_batch, 1, 65536, "N", "outliers added to each step",
         .def = "half the batch"},
        {"oe-weight", CLI_FLOAT, &oe_weight, 0, 100, "X",
         "weight of the outliers' mean loss beside the digits' mean loss", .def = "0.5",
         .what = "a weight"},
        {"oe-margins", CLI_STRING, &margins_s, 0, 0, "IN,OUT",
         "outlier exposure by energy margins instead of the uniform target: digits pay "
         "(energy - IN)^2 above IN, outliers (OUT - energy)^2 below OUT, both times "
         "--oe-weight (energy = -logsumexp of the logits; e.g. -12,-5)",
         .def = "off"},
        {"no-aug", CLI_FLAG, &no_aug, 0, 0, NULL, "no augmentation", .def = NULL},
        {"seed", CLI_U64, &seed, 0, 18446744073709551615.0, "N", "random seed", .def = NULL},
        {"threads", CLI_INT, &threads, 0, 1024, "N", "training threads (0 = all CPUs)",
         .def = "0, all CPUs"},
        {"val", CLI_INT, &val, 0, 100000000, "N",
         "hold out the last N training images for validation and keep the best epoch's weights",
         .def = NULL},
        {"limit", CLI_INT, &limit, 0, 100000000, "N",
         "train on the first N images only (0 = all; smoke tests)", .def = NULL},
        {"data", CLI_STRING, &data, 0, 0, "DIR", "IDX files (.gz accepted)", .def = NULL},
        {"dataset", CLI_STRING, &dataset, 0, 0, "NAME", "mnist or fashion-mnist (labels)",
         .def = NULL},
        {"name", CLI_STRING, &name, 0, 0, "NAME", "model name stored in the metadata",
         .def = "the --arch value"},
        {"out", CLI_STRING, &out, 0, 0, "FILE",
         "weights file to write (required); history in FILE.csv", .def = NULL},
        {"quiet", CLI_FLAG, &quiet, 0, 0, NULL, "one line per epoch, no progress bar", .def = NULL},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **operands = calloc((size_t)argc, sizeof *operands);
    int nops = 0;
    if (!operands) {
        fprintf(stderr, "mnist-train: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, operands, &nops, err, sizeof err);
    free(operands);
    switch (act) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-train [options] --out FILE\n"
                  "Trains a net and writes its weights, a CSV history and its test accuracy.",
                  opts, nopts);
        return 0;
    case CLI_VERSION: printf("mnist-train %s\n", VERSION); return 0;
    case CLI_ERROR: fprintf(stderr, "mnist-train: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (nn_gemm_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-train: %s\n", err);
        return 2;
    }
    if (nops) {
        fprintf(stderr, "mnist-train: unexpected argument %s (see --help)\n", argv[argc - 1]);
        return 2;
    }
    if (!out) {
        fprintf(stderr, "mnist-train: --out FILE is required (see --help)\n");
        return 2;
    }

    /* The preset's recipe (or a JSON file's defaults), then the flags. */
    const nn_preset *preset;
    char *arch_text = nn_arch_text(arch_arg, &preset, err, sizeof err);
    if (!arch_text) {
        fprintf(stderr, "mnist-train: --arch %s\n", err);
        return 2;
    }
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
    if (!strcmp(opt_name, "sgd"))
        nn_opt_cfg_default(&cfg.opt, NN_OPT_SGD);
    else if (strcmp(opt_name, "adam")) {
        fprintf(stderr, "mnist-train: --opt must be adam or sgd\n");
        return 2;
    }
    if (sched_name && nn_sched_parse(sched_name, &cfg.sched.kind)) {
        fprintf(stderr, "mnist-train: unknown --sched %s (const, step, exp, cosine, onecycle)\n",
                sched_name);
        return 2;
    }
    if (lr_set) cfg.sched.lr = (float)lr;
    if (gamma_set) cfg.sched.gamma = (float)gamma;
    if (step_set) cfg.sched.step = (float)step;
    if (warmup_set) cfg.sched.warmup = (float)warmup;
    if (wd_set) cfg.opt.weight_decay = (float)wd;
    if (ls_set) cfg.label_smoothing = (float)ls;
    if (ema_set) cfg.ema = (float)ema;
    float aug[3];
    if (aug_s && (cli_floats(aug_s, aug, 3) || !(aug[0] >= 0 && aug[0] <= 180) ||
                  !(aug[1] >= 0 && aug[1] < 1) || !(aug[2] >= 0 && aug[2] <= 1))) {
        fprintf(stderr, "mnist-train: --aug wants ROT,ZOOM,SHIFT e.g. 15,0.15,0.1 (degrees 0..180, "
                        "fractions 0..1)\n");
        return 2;
    }
    if (aug_s) cfg.aug.max_rot = aug[0], cfg.aug.max_zoom = aug[1], cfg.aug.max_shift = aug[2];
    float el[2];
    if (elastic_s && (cli_floats(elastic_s, el, 2) || !(el[0] >= 0 && el[0] <= 1000) ||
                      !(el[1] > 0 && el[1] <= 100))) {
        fprintf(stderr, "mnist-train: --elastic wants ALPHA,SIGMA e.g. 34,4 (alpha 0..1000, "
                        "sigma above 0 up to 100)\n");
        return 2;
    }
    if (elastic_s) cfg.aug.elastic_alpha = el[0], cfg.aug.elastic_sigma = el[1];
    if (margins_s) {
        float mg[2];
        if (!outliers || cli_floats(margins_s, mg, 2) || !(mg[0] >= -1000 && mg[0] < mg[1]) ||
            !(mg[1] <= 1000)) {
            fprintf(stderr, "mnist-train: --oe-margins wants IN,OUT with IN < OUT, e.g. -12,-5, "
                            "and --outliers\n");
            return 2;
        }
        cfg.oe_energy = 1, cfg.m_in = mg[0], cfg.m_out = mg[1];
    }
    if (flip_set) cfg.aug.flip_prob = flip;
    if (stroke_set) cfg.aug.max_stroke = stroke;
    if (blur_set) cfg.aug.max_blur = blur;
    if (no_aug) memset(&cfg.aug, 0, sizeof cfg.aug);
    if (cfg.sched.kind == NN_SCHED_STEP && cfg.sched.step <= 0) cfg.sched.step = 5;

    if (deskew) {
        if (layers[0].kind == NN_DESKEW || nl == NN_MAX_LAYERS) {
            fprintf(stderr, "mnist-train: --deskew: the architecture %s\n",
                    layers[0].kind == NN_DESKEW ? "already starts with deskew"
                                                : "has no room for another layer");
            return 2;
        }
        memmove(layers + 1, layers, sizeof(nn_layer) * nl++);
        memset(&layers[0], 0, sizeof layers[0]);
        layers[0].kind = NN_DESKEW;
    }
    if (dropout_set) {
        int found = 0;
        for (int i = 0; i < nl; i++)
            if (layers[i].kind == NN_DROPOUT) layers[i].p = dropout, found = 1;
        if (!found) {
            fprintf(stderr, "mnist-train: --dropout: the architecture has no dropout layer\n");
            return 2;
        }
    }
    /* From here on every exit goes through done:, which frees what exists. */
    nn_dataset *train = NULL, *test = NULL, *oe = NULL, *more = NULL;
    uint8_t *mix_x = NULL, *mix_y = NULL;
    nn_net *net = NULL, *best = NULL, *final = NULL, *start = NULL;
    nn_trainer *tr = NULL;
    FILE *csv = NULL;
    float *probs = NULL;
    int rc = 1;
    train = nn_dataset_load_dir(data, 0, 256, err, sizeof err);
    if (!train) {
        fprintf(stderr, "mnist-train: %s (run `make data`)\n", err);
        goto done;
    }
    test = nn_dataset_load_dir(data, 1, 256, err, sizeof err);
    if (!test) {
        fprintf(stderr, "mnist-train: %s (run `make data`)\n", err);
        goto done;
    }

    nn_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.nclasses = 10;
    int fashion = !strcmp(dataset, "fashion-mnist") || !strcmp(dataset, "fashion");
    snprintf(meta.dataset, sizeof meta.dataset, "%s", fashion ? "fashion-mnist" : dataset);
    /* Recorded so the server frames uploads the way this data was framed. */
    snprintf(meta.preprocess, sizeof meta.preprocess, "%s", nn_preprocess_default(meta.dataset));
    for (int i = 0; i < 10; i++) {
        if (fashion)
            snprintf(meta.labels[i], NN_LABEL_MAX, "%s", FASHION_LABELS[i]);
        else
            snprintf(meta.labels[i], NN_LABEL_MAX, "%d", i);
    }
    meta.input_mean = preset->input_mean;
    meta.input_std = preset->input_std;
    meta.test_accuracy = -1.0;
    meta.test_ece = -1.0;
    meta.seed = seed;
    meta.epochs = cfg.epochs;
    snprintf(meta.name, sizeof meta.name, "%s", name ? name : arch_arg);
    net = nn_net_create(layers, nl, 1, train->rows, train->cols, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "mnist-train: %s\n", err);
        rc = 2;
        goto done;
    }
    nn_net_init(net, seed);
    if (init) {
        /* Fine-tuning: the same layers with the given weights and batch-norm
         * statistics; this file's metadata (name, seed, recipe) is the new
         * run's. Statistics fitted on the old features (the OOD tensors) are
         * not carried over: they would not describe the new ones. */
        start = nn_net_load(init, err, sizeof err);
        if (!start) {
            fprintf(stderr, "mnist-train: --init: %s\n", err);
            rc = 2;
            goto done;
        }
        /* Dropout is a training setting (--dropout), not part of the shape. */
        for (int i = 0; i < start->nlayers && i < net->nlayers; i++)
            if (start->layers[i].kind == NN_DROPOUT && net->layers[i].kind == NN_DROPOUT)
                start->layers[i].p = net->layers[i].p;
        char *a = nn_arch_to_json(net->layers, net->nlayers),
             *b = nn_arch_to_json(start->layers, start->nlayers);
        int same = a && b && !strcmp(a, b) && start->nparams == net->nparams &&
                   start->nstats == net->nstats;
        free(a);
        free(b);
        if (!same) {
            fprintf(stderr, "mnist-train: --init: %s has another architecture than --arch %s\n",
                    init, arch_arg);
            rc = 2;
            goto done;
        }
        memcpy(net->params, start->params, sizeof(float) * net->nparams);
        memcpy(net->stats, start->stats, sizeof(float) * net->nstats);
        net->bn_batches = start->bn_batches;
    }
    best = nn_net_create(layers, nl, 1, train->rows, train->cols, &meta, err, sizeof err);
    if (!best) {
        fprintf(stderr, "mnist-train: %s\n", err);
        goto done;
    }

    int ntrain = train->n;
    if (limit > 0 && limit < ntrain) ntrain = limit;
    if (val < 0 || val >= ntrain) {
        fprintf(stderr, "mnist-train: --val must be in [0, %d)\n", ntrain);
        rc = 2;
        goto done;
    }
    ntrain -= val;
    int hw = train->rows * train->cols;
    const uint8_t *val_x = train->images + (size_t)ntrain * hw, *val_y = train->labels + ntrain;

    if (outliers) {
        oe = nn_dataset_load(outliers, NULL, 256, err, sizeof err);
        if (!oe) {
            fprintf(stderr, "mnist-train: --outliers: %s\n", err);
            rc = 2;
            goto done;
        }
        if (oe->rows != train->rows || oe->cols != train->cols || oe->n < 1) {
            fprintf(stderr, "mnist-train: --outliers: %s holds %dx%d images, the data %dx%d\n",
                    outliers, oe->rows, oe->cols, train->rows, train->cols);
            rc = 2;
            goto done;
        }
        cfg.oe_batch = oe_batch > 0 ? oe_batch : (cfg.batch + 1) / 2;
        cfg.oe_weight = oe_weight;
    }
    /* The images an epoch runs over: the training images, then the extra
     * set extra_repeat times (held-out validation images stay out). */
    const uint8_t *train_x = train->images, *train_y = train->labels;
    int nrun = ntrain;
    if (extra) {
        more = nn_dataset_load_set(extra, 0, 10, err, sizeof err);
        if (!more) {
            fprintf(stderr, "mnist-train: --extra-data: %s\n", err);
            rc = 2;
            goto done;
        }
        if (more->rows != train->rows || more->cols != train->cols) {
            fprintf(stderr, "mnist-train: --extra-data: %s holds %dx%d images, the data %dx%d\n",
                    extra, more->rows, more->cols, train->rows, train->cols);
            rc = 2;
            goto done;
        }
        size_t total = (size_t)ntrain + (size_t)more->n * extra_repeat;
        if (total > 100000000) {
            fprintf(stderr, "mnist-train: --extra-data: too many images\n");
            rc = 2;
            goto done;
        }
        mix_x = malloc(total * hw);
        mix_y = malloc(total);
        if (!mix_x || !mix_y) {
            fprintf(stderr, "mnist-train: out of memory\n");
            goto done;
        }
        memcpy(mix_x, train->images, (size_t)ntrain * hw);
        memcpy(mix_y, train->labels, (size_t)ntrain);
        for (int r = 0; r < extra_repeat; r++) {
            size_t at = (size_t)ntrain + (size_t)r * more->n;
            memcpy(mix_x + at * hw, more->images, (size_t)more->n * hw);
            memcpy(mix_y + at, more->labels, (size_t)more->n);
        }
        train_x = mix_x;
        train_y = mix_y;
        nrun = (int)total;
    }
    tr = nn_trainer_create(net, &cfg, err, sizeof err);
    if (!tr) {
        fprintf(stderr, "mnist-train: %s\n", err);
        goto done;
    }
    if (oe) nn_trainer_set_outliers(tr, oe->images, oe->n);

    char csv_path[1024];
    snprintf(csv_path, sizeof csv_path, "%s.csv", out);
    csv = fopen(csv_path, "w");
    if (!csv) {
        fprintf(stderr, "mnist-train: cannot write %s: %s\n", csv_path, strerror(errno));
        goto done;
    }
    fprintf(csv, "epoch,loss,accuracy,val_accuracy,lr,seconds\n");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char summary[512];
    nn_net_summary(net, summary, sizeof summary);
    int nthreads = threads > 0 ? threads : nn_cpu_count();
    fprintf(stderr, "model: %s\nparameters: %zu, %.2f M multiply-adds per image\n", summary,
            net->nparams, nn_net_macs(net) / 1e6);
    fprintf(stderr,
            "training on %d images (%d held out), batch %d, %d epochs, seed %llu, %d threads\n",
            ntrain, val, cfg.batch, cfg.epochs, seed, nthreads);
    if (oe)
        fprintf(stderr, "outlier exposure: %d of %d outlier images per step, weight %g%s\n",
                cfg.oe_batch, oe->n, (double)cfg.oe_weight,
                cfg.oe_energy ? ", energy margins" : ", uniform target");
    if (init) fprintf(stderr, "starting from the weights of %s\n", init);
    if (more)
        fprintf(stderr, "extra data: %d images of %s, %d times per epoch\n", more->n, extra,
                extra_repeat);

    probs = malloc(sizeof(float) * 10 * (size_t)(test->n > val ? test->n : val));
    if (!probs) {
        fprintf(stderr, "mnist-train: out of memory\n");
        goto done;
    }
    double best_val = -1.0, t_start = now_s();
    int best_epoch = 0, ran = 0;
    prog_t pg = {0, quiet, isatty(2), 0};
    for (int e = 0; e < cfg.epochs && !g_stop; e++) {
        if (!quiet) fprintf(stderr, "Epoch %d/%d\n", e + 1, cfg.epochs);
        pg.t0 = now_s();
        pg.last = 0;
        double loss, acc;
        int stopped = nn_trainer_epoch(tr, train_x, train_y, nrun, e, progress, &pg, &g_stop_flag,
                                       &loss, &acc);
        if (stopped) {
            fprintf(stderr, "\ninterrupted: keeping the best weights so far\n");
            break;
        }
        double secs = now_s() - pg.t0;
        /* best receives this epoch's evaluation weights; on disk only if better. */
        nn_trainer_eval_weights(tr, best);
        double va = -1.0;
        nn_net *cand = best;
        if (val > 0) {
            if (eval_net(cand, val_x, val, threads, probs)) {
                fprintf(stderr, "mnist-train: out of memory\n");
                goto done;
            }
            va = nn_accuracy(probs, val_y, val, 10, NULL);
        }
        ran = e + 1;
        if (pg.tty && !quiet) fprintf(stderr, "\n");
        fprintf(stderr, "%d/%d - %.1fs %.0fms/step - loss: %.4f - accuracy: %.4f", e + 1,
                cfg.epochs, secs, 1000.0 * secs / ((nrun + cfg.batch - 1) / cfg.batch), loss, acc);
        if (val > 0) fprintf(stderr, " - val_accuracy: %.4f", va);
        fprintf(stderr, " - lr: %.2e\n", nn_trainer_lr(tr));
        fprintf(csv, "%d,%.6f,%.6f,%.6f,%.6g,%.2f\n", e + 1, loss, acc, va, nn_trainer_lr(tr),
                secs);
        fflush(csv);
        if (val == 0 || va >= best_val) {
            best_val = va;
            best_epoch = e + 1;
            /* Checkpoint: the best weights so far are always on disk. */
            best->meta.epochs = e + 1;
            if (nn_net_save(best, out, err, sizeof err)) {
                fprintf(stderr, "mnist-train: %s\n", err);
                goto done;
            }
        }
    }
    fclose(csv);
    csv = NULL;
    if (ran == 0) {
        fprintf(stderr, "mnist-train: no epoch completed, nothing saved\n");
        goto done;
    }
    /* Reload the kept checkpoint, score it on the test set, store the figure. */
    final = nn_net_load(out, err, sizeof err);
    if (!final) {
        fprintf(stderr, "mnist-train: %s\n", err);
        goto done;
    }
    if (eval_net(final, test->images, test->n, threads, probs)) {
        fprintf(stderr, "mnist-train: out of memory\n");
        goto done;
    }
    double ta = nn_accuracy(probs, test->labels, test->n, 10, NULL);
    final->meta.test_accuracy = ta;
    final->meta.test_ece = nn_ece(probs, test->labels, test->n, 10, NN_ECE_BINS);
    if (nn_net_save(final, out, err, sizeof err)) {
        fprintf(stderr, "mnist-train: %s\n", err);
        goto done;
    }
    fprintf(stderr,
            "kept epoch %d%s; test accuracy %.4f (%d images); %.1f s in all\nwrote %s and %s\n",
            best_epoch, val > 0 ? " (best validation accuracy)" : "", ta, test->n,
            now_s() - t_start, out, csv_path);
    printf("{\"test_accuracy\": %.6f, \"epochs\": %d, \"best_epoch\": %d, \"seconds\": %.1f}\n", ta,
           ran, best_epoch, now_s() - t_start);
    rc = g_stop ? 130 : 0;
done:
    if (csv) fclose(csv);
    nn_net_free(final);
    nn_trainer_free(tr);
    nn_net_free(net);
    nn_net_free(best);
    nn_net_free(start);
    nn_dataset_free(oe);
    nn_dataset_free(more);
    free(mix_x);
    free(mix_y);
    nn_dataset_free(train);
    nn_dataset_free(test);
    free(probs);
    return rc;
}
