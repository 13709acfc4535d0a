/* nets.h - small nets for the unit tests, built from an architecture
 * string, and the check that a weights file is refused. Include after
 * <cmocka.h> (failures go through fail_msg).
 *
 *   nn_net *net = nets_make("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]",
 *                           1, 2, 2, 7);
 *   ... nn_net_free(net);
 */
#ifndef TESTS_NETS_H
#define TESTS_NETS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nn/layers.h"
#include "nn/net.h"
#include "nn/rng.h"

/* v[0..n) uniform in [-scale, scale], from seed. */
static inline void nets_fill(float *v, size_t n, uint64_t seed, float scale)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) v[i] = (2.0f * nn_rng_uniform(&r) - 1.0f) * scale;
}

/* The net arch describes over a [c,h,w] input, parameters as created
 * (not initialised); the test fails if arch or the shape is refused. */
static inline nn_net *nets_create(const char *arch, int c, int h, int w)
{
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("arch %s: %s", arch, err);
    nn_net *net = nn_net_create(L, nl, c, h, w, NULL, err, sizeof err);
    if (!net) fail_msg("create %s: %s", arch, err);
    return net;
}

/* nets_create, initialised from seed, with non-trivial biases and
 * batch-norm scales (so their gradients matter). */
static inline nn_net *nets_make(const char *arch, int c, int h, int w, uint64_t seed)
{
    nn_net *net = nets_create(arch, c, h, w);
    nn_net_init(net, seed);
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *ly = &net->layers[i];
        if (ly->nb) nets_fill(net->params + ly->b_off, ly->nb, seed + 100 + i, 0.1f);
        if (ly->kind == NN_BATCHNORM)
            for (size_t j = 0; j < ly->nw; j++)
                net->params[ly->w_off + j] = 1.0f + 0.3f * (float)j / ly->nw;
    }
    return net;
}

/* The weights file at path must be refused with a message containing
 * needle. */
static inline void nets_refused(const char *path, const char *needle)
{
    char err[512] = "";
    nn_net *n = nn_net_load(path, err, sizeof err);
    if (n) {
        nn_net_free(n);
        fail_msg("%s: loaded, expected refusal with '%s'", path, needle);
    }
    if (!strstr(err, needle)) fail_msg("%s: message '%s' lacks '%s'", path, err, needle);
}

#endif
