/* archs.h - the presets of tools/mnist-train.c, for the benchmarks (kept
 * in step by hand: the benchmarks must time what the trainer trains). */
#ifndef BENCH_ARCHS_H
#define BENCH_ARCHS_H

#include <string.h>

#define BENCH_CBR(out, k, s, p)                                                             \
    "{\"type\":\"conv2d\",\"out\":" #out ",\"k\":" #k ",\"stride\":" #s ",\"pad\":" #p "}," \
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"

static const char *bench_arch(const char *name)
{
    if (!strcmp(name, "mlp"))
        return "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":128},{\"type\":\"relu\"},"
               "{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"dense\",\"out\":10}]";
    if (!strcmp(name, "lenet"))
        return "[{\"type\":\"conv2d\",\"out\":6,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
               "{\"type\":\"maxpool\",\"k\":2},"
               "{\"type\":\"conv2d\",\"out\":16,\"k\":5},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"k\":2},"
               "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":120},{\"type\":\"relu\"},"
               "{\"type\":\"dense\",\"out\":84},{\"type\":\"relu\"},{\"type\":\"dense\",\"out\":10}]";
    if (!strcmp(name, "cnn"))
        return "[" BENCH_CBR(32, 3, 1, 0) BENCH_CBR(32, 3, 1, 0) BENCH_CBR(32, 5, 2, 2)
               "{\"type\":\"dropout\",\"p\":0.4},"
               BENCH_CBR(64, 3, 1, 0) BENCH_CBR(64, 3, 1, 0) BENCH_CBR(64, 5, 2, 2)
               "{\"type\":\"dropout\",\"p\":0.4},"
               BENCH_CBR(128, 4, 1, 0) "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.4},"
               "{\"type\":\"dense\",\"out\":10}]";
    return NULL;
}

#endif
