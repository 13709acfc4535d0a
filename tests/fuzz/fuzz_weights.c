/* fuzz_weights.c - nn_net_load_mem, a whole weights file (safetensors +
 * metadata + architecture + tensors), and a forward pass of what loads.
 *
 * Invariants: a loaded net's parameter count equals the sum of its
 * layers', its metadata strings are terminated and its preprocess name is
 * one the image code knows; one forward pass on a blank input reads and
 * writes only what the workspace holds (ASan), and when the probabilities
 * are finite they sum to 1. */
#include "fuzz.h"
#include "nn/net.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    nn_net *net = nn_net_load_mem(data, size, err, sizeof err);
    if (!net) {
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        return 0;
    }
    size_t np = 0;
    for (int i = 0; i < net->nlayers; i++) np += net->layers[i].nw + net->layers[i].nb;
    FUZZ_CHECK(np == net->nparams);
    FUZZ_CHECK(nn_preprocess_valid(net->meta.preprocess));
    FUZZ_CHECK(memchr(net->meta.dataset, '\0', sizeof net->meta.dataset));
    FUZZ_CHECK(memchr(net->meta.name, '\0', sizeof net->meta.name));
    int k = nn_net_outputs(net);
    FUZZ_CHECK(k >= 1 && k <= NN_MAX_CLASSES);
    FUZZ_CHECK(net->meta.nclasses == k);
    for (int c = 0; c < k; c++) FUZZ_CHECK(memchr(net->meta.labels[c], '\0', NN_LABEL_MAX));
    /* A forward pass, unless the net is too big to be worth the time. */
    size_t in = (size_t)net->in_c * net->in_h * net->in_w;
    if (nn_net_macs(net) < 20u * 1000 * 1000 && in <= 1u << 16) {
        nn_ws *ws = nn_ws_create(net, 1, 0);
        float *x = calloc(in, sizeof *x);
        float probs[NN_MAX_CLASSES];
        if (ws && x) {
            nn_net_forward(net, ws, x, 1, probs, NULL);
            double sum = 0;
            int finite = 1;
            for (int c = 0; c < k; c++) {
                finite &= isfinite(probs[c]);
                sum += probs[c];
            }
            if (finite) FUZZ_CHECK(fabs(sum - 1) < 1e-3);
        }
        free(x);
        nn_ws_free(ws);
    }
    nn_net_free(net);
    return 0;
}
