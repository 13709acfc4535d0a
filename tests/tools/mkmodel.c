/* mkmodel - writes small valid weights files of any input shape, for tests
 * of what loaders accept and refuse.
 *
 *   mkmodel OUT.safetensors C H W [CLASSES]
 *       a net flatten -> dense(CLASSES, default 10) for inputs [C,H,W],
 *       initialised with seed 1, dataset "mnist", test_accuracy 0.5.
 *
 * Exit status: 0 written, 1 failure (message on stderr), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>

#include "nn/net.h"

static int arg(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int c, h, w, k = 10;
    if ((argc != 5 && argc != 6) || arg(argv[2], 1, 64, &c) || arg(argv[3], 1, 1024, &h) ||
        arg(argv[4], 1, 1024, &w) || (argc == 6 && arg(argv[5], 1, NN_MAX_CLASSES, &k))) {
        fprintf(stderr, "usage: mkmodel OUT.safetensors C H W [CLASSES]\n");
        return 2;
    }
    char arch[128], err[512];
    snprintf(arch, sizeof arch, "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":%d}]", k);
    nn_layer layers[NN_MAX_LAYERS];
    int nl;
    if (nn_arch_parse(arch, layers, &nl, err, sizeof err)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    nn_meta meta = {.nclasses = k, .input_mean = 0, .input_std = 1, .test_accuracy = 0.5};
    snprintf(meta.dataset, sizeof meta.dataset, "mnist");
    snprintf(meta.name, sizeof meta.name, "mkmodel");
    for (int i = 0; i < k; i++) snprintf(meta.labels[i], sizeof meta.labels[i], "%d", i);
    nn_net *net = nn_net_create(layers, nl, c, h, w, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    nn_net_init(net, 1);
    int rc = nn_net_save(net, argv[1], err, sizeof err);
    if (rc) fprintf(stderr, "mkmodel: %s\n", err);
    nn_net_free(net);
    return rc ? 1 : 0;
}
