/* mkweights.c - writes small valid weights files, the seeds of the
 * safetensors and weights fuzzers (tests/fuzz/make_seeds.sh runs it).
 *
 *   mkweights DIR    writes DIR/{dense,conv,bn,deskew}.safetensors
 *
 * Tiny on purpose (a few KB each): a fuzzer mutates every byte. Together
 * they hold every layer kind, both dtypes (batch norm's I64 counter) and
 * input shapes other than 1x28x28. */
#include "nn/net.h"

#include <stdio.h>
#include <string.h>

static int write_net(const char *dir, const char *name, const char *arch, int c, int h, int w,
                     const char *dataset)
{
    nn_layer layers[NN_MAX_LAYERS];
    int nl;
    char err[256], path[1024];
    if (nn_arch_parse(arch, layers, &nl, err, sizeof err)) {
        fprintf(stderr, "mkweights: %s: %s\n", name, err);
        return 1;
    }
    nn_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.dataset, sizeof meta.dataset, "%s", dataset);
    meta.input_mean = 0.1307f;
    meta.input_std = 0.3081f;
    meta.test_accuracy = 0.5;
    snprintf(meta.name, sizeof meta.name, "%s", name);
    /* class count from the last dense layer */
    meta.nclasses = layers[nl - 1].out;
    for (int i = 0; i < meta.nclasses; i++) snprintf(meta.labels[i], NN_LABEL_MAX, "%c", 'a' + i);
    nn_net *net = nn_net_create(layers, nl, c, h, w, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "mkweights: %s: %s\n", name, err);
        return 1;
    }
    nn_net_init(net, 7);
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    int rc = nn_net_save(net, path, err, sizeof err);
    if (rc) fprintf(stderr, "mkweights: %s\n", err);
    nn_net_free(net);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkweights DIR\n");
        return 2;
    }
    int bad = 0;
    bad |= write_net(argv[1], "dense", "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":3}]", 1,
                     4, 4, "mnist");
    bad |= write_net(argv[1], "conv",
                     "[{\"type\":\"conv2d\",\"out\":2,\"k\":3,\"pad\":1},"
                     "{\"type\":\"relu\"},{\"type\":\"maxpool\",\"k\":2},"
                     "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.5},"
                     "{\"type\":\"dense\",\"out\":4}]",
                     1, 8, 8, "fashion-mnist");
    bad |= write_net(argv[1], "bn",
                     "[{\"type\":\"conv2d\",\"out\":2,\"k\":3,\"stride\":2},"
                     "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
                     "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":5},"
                     "{\"type\":\"batchnorm\",\"eps\":0.001,\"momentum\":0.2},"
                     "{\"type\":\"dense\",\"out\":2}]",
                     1, 7, 7, "mnist");
    bad |= write_net(argv[1], "deskew",
                     "[{\"type\":\"deskew\"},{\"type\":\"flatten\"},"
                     "{\"type\":\"dense\",\"out\":10}]",
                     1, 8, 8, "mnist");
    return bad;
}
