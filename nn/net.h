/* net.h - a sequential neural network: architecture, parameters, forward,
 * backward, and the safetensors weights file.
 *
 * Overview
 *   nn_net       an architecture plus its parameters (one float block) and
 *                metadata. Read-only during inference, so one nn_net can be
 *                shared by any number of threads.
 *   nn_ws        a workspace: activations (and, for training, gradients of
 *                activations) for up to max_batch images. One per thread.
 *
 *   Tensors are NCHW float32. The input is [n, C, H, W] with pixel values in
 *   0..1 (ink bright, background 0, as MNIST); the net applies its own
 *   normalisation (x - input_mean) / input_std from its metadata.
 *   The last layer produces logits [n, nclasses]; nn_net_forward returns
 *   softmax probabilities of the logits divided by the net's temperature
 *   (meta.temperature, 1 unless calibrated), and the raw logits.
 *
 *   Layer list and PyTorch correspondence: layer i of the net is module i of
 *   an equivalent torch.nn.Sequential, so tensor names are "<i>.weight",
 *   "<i>.bias", "<i>.running_mean", "<i>.running_var",
 *   "<i>.num_batches_tracked" (batch norm, I64). Layouts follow PyTorch:
 *   Conv2d weight [out, in, kh, kw], Linear weight [out, in].
 *   deskew (no parameters) has no torch.nn module; a model starting with
 *   it maps onto torch only after deskewing the input the same way.
 *
 * Errors: functions that can fail return 0 on success and -1 on failure and
 * write a one-line message into err (errlen bytes, always NUL-terminated).
 * The library never prints and never exits.
 */
#ifndef NN_NET_H
#define NN_NET_H

#include <stddef.h>
#include <stdint.h>

#define NN_FORMAT_ID "mnist-c-nn"
#define NN_FORMAT_VERSION 1
#define NN_MAX_LAYERS 64
#define NN_MAX_CLASSES 64
#define NN_LABEL_MAX 48

typedef enum {
    NN_DENSE = 0, /* out features; weight [out,in], bias [out]           */
    NN_CONV2D,    /* out channels, k, stride, pad; weight [out,in,k,k]   */
    NN_MAXPOOL,   /* k, stride (pad 0)                                    */
    NN_RELU,
    NN_DROPOUT, /* p: drop probability during training, identity else  */
    NN_FLATTEN,
    NN_BATCHNORM, /* per channel (2d) or per feature (1d); eps, momentum */
    NN_DESKEW,    /* shear each plane upright by its ink's moments; no
                      parameters; only as the first layer                 */
    NN_LAYER_KINDS
} nn_kind;

typedef struct {
    nn_kind kind;
    int out;             /* dense: features; conv: channels                  */
    int k, stride, pad;  /* conv and pool                                    */
    float p;             /* dropout probability                              */
    float eps, momentum; /* batch norm (PyTorch meaning of momentum)       */
    /* derived by nn_net_create: */
    int in_c, in_h, in_w;    /* input shape of this layer (C,H,W)         */
    int out_c, out_h, out_w; /* output shape                              */
    size_t w_off, nw;        /* weight: offset into params and count (0 if none) */
    size_t b_off, nb;        /* bias (batch norm: w = gamma, b = beta)           */
    size_t s_off;            /* batch norm: running mean at stats[s_off],
                          running var at stats[s_off + out_c]              */
} nn_layer;

/* The temperatures a net may carry: positive, and far inside float's
 * range, so that logits / T is finite and T itself is never rounded to
 * 0 or infinity when the forward pass divides in float. */
#define NN_TEMPERATURE_MIN 1e-6
#define NN_TEMPERATURE_MAX 1e6

/* Metadata carried in the weights file's __metadata__. */
typedef struct {
    char dataset[64]; /* "mnist", "fashion-mnist", ...               */
    int nclasses;
    char labels[NN_MAX_CLASSES][NN_LABEL_MAX];
    float input_mean, input_std;
    double test_accuracy; /* -1 when unknown                             */
    double test_ece;      /* expected calibration error on the test set
                             (nn_ece, 15 bins), a share; 0 or below when
                             unknown (a measured one is never exactly 0),
                             so that a zeroed nn_meta states none        */
    double temperature;   /* softmax temperature T > 0: probabilities are
                             softmax(logits / T) (Guo et al., 2017), fitted
                             after training to calibrate them; 1 = none.
                             0 in a zeroed nn_meta means 1 (nn_net_create) */
    uint64_t seed;
    int epochs;
    char name[64];       /* preset or model name, informational         */
    char preprocess[16]; /* how callers turn an image into the input:
                               "mnist" (fit 20 px, centre of mass) or "fit"
                               (longer side 28 px, box centred). nn/ only
                               stores it; image/ implements both. Empty in
                               nn_net_create's meta: derived from dataset. */
} nn_meta;

/* The preprocessing a dataset's images were framed with: "fit" for
 * "fashion-mnist", "mnist" for anything else (dataset may be NULL). */
const char *nn_preprocess_default(const char *dataset);

/* Nonzero when s is a preprocessing name this build knows ("mnist", "fit"). */
int nn_preprocess_valid(const char *s);

typedef struct nn_net {
    int nlayers;
    nn_layer layers[NN_MAX_LAYERS];
    int in_c, in_h, in_w;
    float *params; /* all trainable parameters, one block (owned)      */
    size_t nparams;
    float *stats; /* batch-norm running mean/var, one block (owned)   */
    size_t nstats;
    int64_t bn_batches; /* num_batches_tracked, for PyTorch compatibility   */
    nn_meta meta;
    struct nn_ood *ood;   /* out-of-distribution statistics (nn/ood.h), owned;
                          NULL when the weights file carries none          */
    struct nn_plan *plan; /* inference plan (nn_net_plan), owned; NULL: none */
} nn_net;

/* Parses an architecture from its JSON text: an array of layer objects,
 * e.g. [{"type":"conv2d","out":6,"k":5,"pad":2},{"type":"relu"},
 *       {"type":"maxpool","k":2},{"type":"flatten"},{"type":"dense","out":10}]
 * Types: dense, conv2d, maxpool, relu, dropout (p), flatten,
 * batchnorm (eps=1e-5, momentum=0.1), deskew (first layer only; see
 * nn_deskew_forward in layers.h). conv2d stride defaults to 1, pad to 0;
 * maxpool stride defaults to k. Fills layers[0..*nlayers). */
int nn_arch_parse(const char *json, nn_layer *layers, int *nlayers, char *err, size_t errlen);

/* Writes the architecture as JSON text (caller frees with free()).
 * Returns NULL on allocation failure. Round-trips with nn_arch_parse. */
char *nn_arch_to_json(const nn_layer *layers, int nlayers);

/* Creates a net for inputs [C,H,W]: checks the layer sequence (shapes,
 * dense after flatten or on a 1x1 map, positive sizes), computes shapes and
 * offsets, allocates parameters (zeroed) and batch-norm stats (mean 0, var 1).
 * meta may be NULL (defaults: 10 classes "0".."9", mean 0, std 1, dataset
 * "mnist", preprocess "mnist", temperature 1). An empty meta->preprocess
 * becomes nn_preprocess_default(meta->dataset); an unknown one is an
 * error. A temperature of 0 becomes 1; one outside [NN_TEMPERATURE_MIN,
 * NN_TEMPERATURE_MAX] (or not a number) is an error.
 * Returns NULL and fills err on failure. Free with nn_net_free. */
nn_net *nn_net_create(const nn_layer *layers, int nlayers, int c, int h, int w, const nn_meta *meta,
                      char *err, size_t errlen);
void nn_net_free(nn_net *net);

/* He (ReLU-followed) / Glorot initialisation of all parameters, seeded. */
void nn_net_init(nn_net *net, uint64_t seed);

/* Number of multiply-adds of one image's forward pass. */
uint64_t nn_net_macs(const nn_net *net);

/* Short human summary like "conv2d(6,5x5,p2)-relu-maxpool(2)-...", into buf. */
void nn_net_summary(const nn_net *net, char *buf, size_t buflen);

/* Logits size per image (nclasses of the last layer). */
int nn_net_outputs(const nn_net *net);

/* ---- workspaces -------------------------------------------------------- */

typedef struct nn_ws nn_ws;

/* A workspace for batches of up to max_batch images. training != 0 also
 * allocates what backward needs (saved activations, their gradients, masks).
 * All memory is allocated here; forward and backward never allocate.
 * Returns NULL on allocation failure. */
nn_ws *nn_ws_create(const nn_net *net, int max_batch, int training);
void nn_ws_free(nn_ws *ws);

/* Inference forward: x [n,C,H,W] pixels 0..1 -> probs [n,nclasses],
 * softmax(logits / meta.temperature): every program's probabilities come
 * from here, so a calibrated file answers calibrated everywhere.
 * logits may be NULL; if not, receives the raw logits [n,nclasses]
 * (before the temperature: scores defined on the logits, such as the
 * energy score and its stored threshold, do not move with it).
 * Uses running batch-norm statistics, dropout off. n <= max_batch.
 * Thread-safe for distinct workspaces on the same net. */
void nn_net_forward(const nn_net *net, nn_ws *ws, const float *x, int n, float *probs,
                    float *logits);

/* After nn_net_forward on ws: the penultimate features of those n images,
 * [n, D] with D = nn_ood_dim(net) (the input of the last layer, which
 * must be dense), read from the forward's own activations (no second
 * pass). Owned by ws; valid until its next forward. */
const float *nn_ws_features(const nn_ws *ws);

/* Training step pieces (ws created with training != 0).
 * nn_net_forward_train: forward in training mode (batch statistics, dropout
 * with the given seed); returns the mean softmax cross-entropy over the batch
 * with the labels y[n] and label smoothing ls (0 for none), writes
 * probabilities into probs if not NULL. Updates running BN statistics in
 * net->stats only if update_stats != 0.
 * nn_net_backward: accumulates (+=) parameter gradients of that mean loss into
 * grad (nparams floats) using what the last forward_train saved. */
float nn_net_forward_train(nn_net *net, nn_ws *ws, const float *x, const uint8_t *y, int n,
                           float ls, uint64_t seed, int update_stats, float *probs);

/* Outlier exposure: an image labelled NN_LABEL_OUTLIER is not of any class;
 * its target is the uniform distribution (cross-entropy to uniform, the
 * loss of Hendrycks et al., "Deep Anomaly Detection with Outlier Exposure",
 * 2019). A batch with m such images of n has the loss
 *     mean over the n - m others of their cross-entropy
 *   + weight * mean over the m outliers of theirs,
 * which is the plain mean cross-entropy when m = 0 (bit for bit). The
 * weight (default 1) stays with ws until set again. */
#define NN_LABEL_OUTLIER 255
void nn_ws_set_outlier_weight(nn_ws *ws, float weight);

/* Outlier exposure by energy margins instead (Liu et al., "Energy-based
 * Out-of-distribution Detection", 2020): with E(x) = -logsumexp of the
 * logits (the score nn/ood.h thresholds), a batch costs
 *     mean over the n - m digits of (cross-entropy + weight * max(0, E - m_in)^2)
 *   + weight * mean over the m outliers of max(0, m_out - E)^2:
 * every digit, the faint ones too, is pulled below m_in and every outlier
 * pushed above m_out, where the uniform target only lowers the outliers'
 * logits relative to each other. m_in < m_out; on = 0 goes back to the
 * uniform target. */
void nn_ws_set_energy_margins(nn_ws *ws, int on, float m_in, float m_out);
void nn_net_backward(const nn_net *net, nn_ws *ws, float *grad);

/* Gradient of the loss with respect to the input of the last backward
 * [n,C,H,W] (normalised input space), for gradient checks: computed only
 * after nn_ws_want_input_grad(ws, 1) (training has no use for it, and for
 * a first convolution it costs as much as the weight gradient); NULL
 * otherwise. */
void nn_ws_want_input_grad(nn_ws *ws, int on);
const float *nn_ws_input_grad(const nn_ws *ws);

/* Per-layer timing for benchmarks: while t is not NULL, forward adds layer
 * i's thread CPU seconds to t[i] and backward to t[NN_MAX_LAYERS + i]
 * (t holds 2 * NN_MAX_LAYERS doubles, owned by the caller). NULL stops it. */
void nn_ws_set_timer(nn_ws *ws, double *t);

/* Training workspaces run the convolutions nn_wino_fits takes by
 * Winograd (nn/wino.h): the forward, the input gradient where
 * nn_wino_dx_fits, and then the weight gradient where nn_wino_dw_fits,
 * transforming the weights each step. on == 0 makes them direct (tests
 * and benchmarks compare the two). Default on. */
void nn_ws_use_wino(nn_ws *ws, int on);
/* Workspaces training one net side by side need the same transformed
 * weights each step: after nn_ws_wino_share(ws, from), ws reads from's
 * and no longer transforms them itself, and before each step's forward
 * nn_ws_wino_weights(net, from, part, nparts) must have run for every
 * part (threads may run the parts at once; each writes its own rows). */
void nn_ws_wino_share(nn_ws *ws, const nn_ws *from);
void nn_ws_wino_weights(const nn_net *net, nn_ws *ws, int part, int nparts);

/* Inference of a batch runs its first layers depth-first, a few images at
 * a time, where their activations are large and their weights small (net.c,
 * depth_first_plan), and the rest layer by layer over the batch. The
 * answers are the same to rounding. nn_ws_depth_first: that prefix's
 * length in layers (0: none) and, in *sub, how many images at a time.
 * nn_ws_set_depth_first(ws, 0) runs every layer over the batch (tests and
 * benchmarks compare the two). Default on. */
int nn_ws_depth_first(const nn_ws *ws, int *sub);
void nn_ws_set_depth_first(nn_ws *ws, int on);

/* ---- inference-only transforms ---------------------------------------- */

/* A copy of net for inference in which every batch norm directly after a
 * conv2d or dense layer is folded into that layer's weights and bias (with
 * its running statistics) and removed; other batch norms stay. Outputs
 * match nn_net_forward on net up to float rounding (about 1e-6 relative).
 * Layer indices shift, so the copy is for forward passes, not training;
 * net is unchanged. Metadata is copied. NULL + err on failure (memory).
 * Free with nn_net_free. */
nn_net *nn_net_fold_bn(const nn_net *net, char *err, size_t errlen);

/* An inference plan for net, computed once: the Winograd-transformed
 * weights (nn/wino.h) of every convolution that takes them (3x3 stride 1,
 * and 4x4 to 6x6 stride 2 by space-to-depth),
 * which nn_net_forward then runs by Winograd instead of directly, and
 * the packed weights of those it runs directly by a kernel that packs
 * them (nn_conv2d_pack_weights). Training
 * (nn_net_forward_train, nn_net_backward) ignores the plan: its weights
 * change every step, and training workspaces transform them per step
 * (nn_ws_use_wino). The plan
 * copies the weights: after changing net->params, call nn_net_plan again
 * (it replaces the old plan) or nn_net_unplan. Workspaces size their
 * scratch for the plan they see at nn_ws_create: one created before runs
 * the net directly. Not thread-safe against forwards on the same net
 * (plan before sharing the net). nn_net_fold_bn's
 * copies come with a plan. Returns 0, or -1 with err (out of memory: the
 * net is left without a plan, and runs as before). */
int nn_net_plan(nn_net *net, char *err, size_t errlen);
/* The L2 size (bytes a core) nn_net_plan plans for; 0 (the default):
 * what the system reports. For tests and tools that compare the plans
 * of other CPUs; set it before planning, not while other threads plan. */
void nn_net_plan_set_l2(size_t bytes);
/* Drops the plan (if any): forward runs every convolution directly. */
void nn_net_unplan(nn_net *net);
/* Number of convolutions the plan runs by Winograd (0 without a plan),
 * and how it runs layer i: 0 directly, m by F(mxm,3x3) (2 or 4). */
int nn_net_plan_wino_layers(const nn_net *net);
int nn_net_plan_wino(const nn_net *net, int i);
/* Number of convolutions the plan keeps weights packed for, for the
 * direct kernel that runs them (nn_conv2d_pack_weights): packed for the
 * kernel path at nn_net_plan, used while that path runs. */
int nn_net_plan_packed_layers(const nn_net *net);
/* Number of convolutions the plan runs in BF16 on AMX (nn/amx.h): made
 * by nn_net_plan while nn_precision_get() is NN_PREC_BF16 on a CPU with
 * AMX; 0 otherwise. */
int nn_net_plan_bf16_layers(const nn_net *net);

/* ---- weights file (safetensors) --------------------------------------- */

/* Saves the net: tensors in PyTorch layout and naming, __metadata__ with
 * format, format_version, arch (JSON string), input_shape, input_mean,
 * input_std, labels, dataset, preprocess, test_accuracy, test_ece (when
 * known), temperature (when not 1: files without calibration are written
 * exactly as before it existed), params, seed,
 * epochs, name, and checksum (FNV-1a 64 of the tensor data, hex).
 * A net with ood statistics also gets the tensors "ood.means" and
 * "ood.chol" (after the layers') and the metadata "ood_method" and
 * "ood_threshold"; without, the file is exactly as before they existed. */
int nn_net_save(const nn_net *net, const char *path, char *err, size_t errlen);

/* Loads and validates a weights file (header bounds, JSON, format id and
 * version, dtypes, shapes against the architecture, offsets in range and
 * non-overlapping, checksum, "preprocess" if present must be "mnist" or
 * "fit"; absent (older files): derived from "dataset"; "temperature" if
 * present must be a number in [NN_TEMPERATURE_MIN, NN_TEMPERATURE_MAX],
 * absent means 1). The only tensors
 * accepted beyond the architecture's are "ood.means" [classes, D] and
 * "ood.chol" [D, D], both or neither, with "ood_method" "mahalanobis" and
 * a finite "ood_threshold" >= 0 (see nn/ood.h); net->ood is NULL without.
 * Returns NULL and fills err on failure. */
nn_net *nn_net_load(const char *path, char *err, size_t errlen);

/* Same from a memory buffer (len bytes). */
nn_net *nn_net_load_mem(const uint8_t *buf, size_t len, char *err, size_t errlen);

#endif
