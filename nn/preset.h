/* preset.h - the named architectures and their training recipes, defined
 * once: the trainer trains them, the benchmarks time them, and the MNIST
 * normalisation constants live here and nowhere else.
 *
 *   const nn_preset *p = nn_arch_preset("cnn");     // NULL if unknown
 *   nn_train_cfg cfg;
 *   nn_preset_train_cfg(p, &cfg);                     // its defaults
 *   nn_arch_parse(p->arch, layers, &nl, err, n);
 *   meta.input_mean = p->input_mean; meta.input_std = p->input_std;
 *
 * An architecture read from a JSON file has no preset; it trains with
 * nn_arch_preset_file()'s defaults (arch NULL).
 */
#ifndef NN_PRESET_H
#define NN_PRESET_H

#include "nn/train.h"

/* Mean and standard deviation of MNIST's training pixels (0..1 scale):
 * normalised models compute (x - mean) / std on their input. */
#define NN_MNIST_MEAN 0.1307f
#define NN_MNIST_STD 0.3081f

/* The preset names, for messages and --help. */
#define NN_PRESET_NAMES "mlp, lenet, cnn"

typedef struct {
    const char *name;  /* "mlp", "lenet", "cnn"; "file" for a JSON file */
    const char *arch;  /* JSON text for nn_arch_parse; NULL for "file" */
    int epochs, batch; /* training defaults ... */
    nn_sched sched;
    nn_aug_cfg aug;
    float ema;                   /* weights' moving average, 0 = off */
    float input_mean, input_std; /* the net's input normalisation */
} nn_preset;

/* The preset called name, or NULL. Static storage: never freed. */
const nn_preset *nn_arch_preset(const char *name);

/* The defaults for an architecture from a file (short, constant-rate
 * training on normalised input). */
const nn_preset *nn_arch_preset_file(void);

/* The architecture JSON that --arch ARG names: a preset's (*preset = it)
 * or the contents of the JSON file ARG (*preset = nn_arch_preset_file(),
 * at most 1 MiB). Malloc'ed text the caller frees, or NULL + err ("ARG:
 * not a preset (mlp, lenet, cnn) and not a readable file: REASON"). */
char *nn_arch_text(const char *arg, const nn_preset **preset, char *err, size_t errlen);

/* cfg = the preset's training defaults: Adam, its schedule, augmentation,
 * moving average, epochs, batch; threads 0 (all CPUs), seed 1, no label
 * smoothing. Callers then apply their own overrides. */
void nn_preset_train_cfg(const nn_preset *p, nn_train_cfg *cfg);

#endif
