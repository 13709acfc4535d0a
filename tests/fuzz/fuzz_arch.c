/* fuzz_arch.c - nn_arch_parse (the "arch" JSON of a weights file) and
 * nn_net_create on what it accepts, for a 1x28x28 input.
 *
 * Invariants: at most NN_MAX_LAYERS layers, each of a known kind; a
 * created net's layer shapes chain (each layer's input is the previous
 * one's output), every size is positive, parameter offsets stay inside
 * the one block; nn_arch_to_json round-trips to the same layers. */
#include "fuzz.h"
#include "nn/net.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    char *json = fuzz_cstr(data, size);
    nn_layer layers[NN_MAX_LAYERS];
    int nl = -1;
    char err[256] = "";
    if (nn_arch_parse(json, layers, &nl, err, sizeof err) != 0) {
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        free(json);
        return 0;
    }
    free(json);
    FUZZ_CHECK(nl >= 0 && nl <= NN_MAX_LAYERS);
    for (int i = 0; i < nl; i++) FUZZ_CHECK(layers[i].kind >= 0 && layers[i].kind < NN_LAYER_KINDS);
    char *back = nn_arch_to_json(layers, nl);
    FUZZ_CHECK(back != NULL);
    nn_layer again[NN_MAX_LAYERS];
    int nl2 = -1;
    FUZZ_CHECK(nn_arch_parse(back, again, &nl2, err, sizeof err) == 0);
    FUZZ_CHECK(nl2 == nl);
    for (int i = 0; i < nl; i++) {
        FUZZ_CHECK(again[i].kind == layers[i].kind);
        FUZZ_CHECK(again[i].out == layers[i].out && again[i].k == layers[i].k);
        FUZZ_CHECK(again[i].stride == layers[i].stride && again[i].pad == layers[i].pad);
    }
    free(back);
    nn_net *net = nn_net_create(layers, nl, 1, 28, 28, NULL, err, sizeof err);
    if (!net) {
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        return 0;
    }
    int c = net->in_c, h = net->in_h, w = net->in_w;
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        FUZZ_CHECK(L->in_c == c && L->in_h == h && L->in_w == w);
        FUZZ_CHECK(L->out_c > 0 && L->out_h > 0 && L->out_w > 0);
        FUZZ_CHECK(L->w_off + L->nw <= net->nparams);
        FUZZ_CHECK(L->b_off + L->nb <= net->nparams);
        c = L->out_c, h = L->out_h, w = L->out_w;
    }
    FUZZ_CHECK(nn_net_outputs(net) > 0);
    char summary[512];
    nn_net_summary(net, summary, sizeof summary);
    FUZZ_CHECK(memchr(summary, '\0', sizeof summary) != NULL);
    nn_net_free(net);
    return 0;
}
