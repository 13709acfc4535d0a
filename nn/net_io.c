/* net_io.c - a net to and from a safetensors weights file.
 *
 * Tensor names and layouts are those of the equivalent torch.nn.Sequential
 * (layer i is module i), so the file loads there with load_state_dict.
 * The checksum is FNV-1a 64 over the whole data block.
 */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/err.h"
#include "nn/net.h"
#include "nn/safetensors.h"
#include "nn/ood.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "weights files are little-endian; this build assumes a little-endian host"
#endif

/* Expected tensors of layer L (index i): name suffix, shape, data. */
typedef struct {
    char name[32];
    int ndim;
    int64_t shape[4];
    float *data; /* into params or stats; NULL for num_batches_tracked */
    size_t n;
} want_t;

static int layer_tensors(nn_net *net, int i, want_t *w)
{
    nn_layer *L = &net->layers[i];
    int k = 0;
    switch (L->kind) {
    case NN_DENSE:
        snprintf(w[k].name, sizeof w[k].name, "%d.weight", i);
        w[k].ndim = 2;
        w[k].shape[0] = L->out;
        w[k].shape[1] = L->in_c;
        w[k].data = net->params + L->w_off;
        w[k].n = L->nw;
        k++;
        snprintf(w[k].name, sizeof w[k].name, "%d.bias", i);
        w[k].ndim = 1;
        w[k].shape[0] = L->out;
        w[k].data = net->params + L->b_off;
        w[k].n = L->nb;
        k++;
        break;
    case NN_CONV2D:
        snprintf(w[k].name, sizeof w[k].name, "%d.weight", i);
        w[k].ndim = 4;
        w[k].shape[0] = L->out;
        w[k].shape[1] = L->in_c;
        w[k].shape[2] = L->k;
        w[k].shape[3] = L->k;
        w[k].data = net->params + L->w_off;
        w[k].n = L->nw;
        k++;
        snprintf(w[k].name, sizeof w[k].name, "%d.bias", i);
        w[k].ndim = 1;
        w[k].shape[0] = L->out;
        w[k].data = net->params + L->b_off;
        w[k].n = L->nb;
        k++;
        break;
    case NN_BATCHNORM: {
        const char *nm[4] = {"weight", "bias", "running_mean", "running_var"};
        float *d[4] = {net->params + L->w_off, net->params + L->b_off, net->stats + L->s_off,
                       net->stats + L->s_off + L->out_c};
        for (int j = 0; j < 4; j++) {
            snprintf(w[k].name, sizeof w[k].name, "%d.%s", i, nm[j]);
            w[k].ndim = 1;
            w[k].shape[0] = L->out_c;
            w[k].data = d[j];
            w[k].n = (size_t)L->out_c;
            k++;
        }
        snprintf(w[k].name, sizeof w[k].name, "%d.num_batches_tracked", i);
        w[k].ndim = 0;
        w[k].data = NULL;
        w[k].n = 1;
        k++;
        break;
    }
    default: break;
    }
    return k;
}

/* A trained out-of-distribution head's tensors, in file order:
 * norm [2,D], w1 [H,D], b1 [H], w2 [1,H], b2 [1] (nn/ood.h). */
static const char *const head_tensors[5] = {"ood.head.norm", "ood.head.w1", "ood.head.b1",
                                            "ood.head.w2", "ood.head.b2"};

int nn_net_save(const nn_net *cnet, const char *path, char *err, size_t errlen)
{
    nn_net *net = (nn_net *)cnet; /* layer_tensors hands out pointers; nothing is written */
    nn_st_writer *w = nn_st_writer_create();
    char *arch = nn_arch_to_json(net->layers, net->nlayers);
    cJSON *labels = cJSON_CreateArray();
    char *labels_s = NULL;
    int rc = -1;
    if (!w || !arch || !labels) {
        nn_errf(err, errlen, "save: out of memory");
        goto done;
    }
    uint64_t h = NN_ST_FNV_INIT;
    int64_t nbt = net->bn_batches;
    for (int i = 0; i < net->nlayers; i++) {
        want_t t[5];
        int k = layer_tensors(net, i, t);
        for (int j = 0; j < k; j++) {
            const void *d = t[j].data ? (const void *)t[j].data : (const void *)&nbt;
            size_t nb = t[j].data ? t[j].n * sizeof(float) : sizeof(int64_t);
            if (nn_st_writer_add(w, t[j].name, t[j].data ? NN_ST_F32 : NN_ST_I64, t[j].ndim,
                                 t[j].shape, d)) {
                nn_errf(err, errlen, "save: out of memory");
                goto done;
            }
            h = nn_st_fnv1a64(d, nb, h);
        }
    }
    if (net->ood && net->ood->method == NN_OOD_MAHALANOBIS) {
        const nn_ood *o = net->ood;
        int64_t ms[2] = {o->k, o->d}, cs[2] = {o->d, o->d};
        if (nn_st_writer_add(w, "ood.means", NN_ST_F32, 2, ms, o->means) ||
            nn_st_writer_add(w, "ood.chol", NN_ST_F32, 2, cs, o->chol)) {
            nn_errf(err, errlen, "save: out of memory");
            goto done;
        }
        h = nn_st_fnv1a64(o->means, sizeof(float) * (size_t)o->k * o->d, h);
        h = nn_st_fnv1a64(o->chol, sizeof(float) * (size_t)o->d * o->d, h);
    }
    if (net->ood && net->ood->method == NN_OOD_HEAD) {
        const nn_ood *o = net->ood;
        int64_t sn[2] = {2, o->d}, s1[2] = {o->h, o->d}, sb[1] = {o->h}, s2[2] = {1, o->h},
                sc[1] = {1};
        const struct {
            int ndim;
            const int64_t *shape;
            const float *data;
            size_t n;
        } t[5] = {{2, sn, o->norm, 2 * (size_t)o->d},
                  {2, s1, o->w1, (size_t)o->h * o->d},
                  {1, sb, o->b1, (size_t)o->h},
                  {2, s2, o->w2, (size_t)o->h},
                  {1, sc, &o->b2, 1}};
        for (int j = 0; j < 5; j++) {
            if (nn_st_writer_add(w, head_tensors[j], NN_ST_F32, t[j].ndim, t[j].shape, t[j].data)) {
                nn_errf(err, errlen, "save: out of memory");
                goto done;
            }
            h = nn_st_fnv1a64(t[j].data, sizeof(float) * t[j].n, h);
        }
    }
    for (int i = 0; i < net->meta.nclasses; i++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(net->meta.labels[i]));
    labels_s = cJSON_PrintUnformatted(labels);
    if (!labels_s) {
        nn_errf(err, errlen, "save: out of memory");
        goto done;
    }
    char buf[128];
    int ok = 0;
    ok |= nn_st_writer_meta(w, "format", NN_FORMAT_ID);
    snprintf(buf, sizeof buf, "%d", NN_FORMAT_VERSION);
    ok |= nn_st_writer_meta(w, "format_version", buf);
    ok |= nn_st_writer_meta(w, "arch", arch);
    snprintf(buf, sizeof buf, "[%d,%d,%d]", net->in_c, net->in_h, net->in_w);
    ok |= nn_st_writer_meta(w, "input_shape", buf);
    snprintf(buf, sizeof buf, "%.9g", net->meta.input_mean);
    ok |= nn_st_writer_meta(w, "input_mean", buf);
    snprintf(buf, sizeof buf, "%.9g", net->meta.input_std);
    ok |= nn_st_writer_meta(w, "input_std", buf);
    ok |= nn_st_writer_meta(w, "input_range", "pixels/255, ink bright on a dark background");
    ok |= nn_st_writer_meta(w, "labels", labels_s);
    ok |= nn_st_writer_meta(w, "dataset", net->meta.dataset);
    ok |= nn_st_writer_meta(w, "preprocess",
                            net->meta.preprocess[0] ? net->meta.preprocess
                                                    : nn_preprocess_default(net->meta.dataset));
    snprintf(buf, sizeof buf, "%.6f", net->meta.test_accuracy);
    ok |= nn_st_writer_meta(w, "test_accuracy", buf);
    if (net->meta.test_ece > 0) {
        snprintf(buf, sizeof buf, "%.6f", net->meta.test_ece);
        ok |= nn_st_writer_meta(w, "test_ece", buf);
    }
    if (net->meta.temperature != 1.0) {
        /* %.9g: the float the forward pass divides by reads back exactly. */
        snprintf(buf, sizeof buf, "%.9g", net->meta.temperature);
        ok |= nn_st_writer_meta(w, "temperature", buf);
    }
    snprintf(buf, sizeof buf, "%zu", net->nparams);
    ok |= nn_st_writer_meta(w, "params", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)net->meta.seed);
    ok |= nn_st_writer_meta(w, "seed", buf);
    snprintf(buf, sizeof buf, "%d", net->meta.epochs);
    ok |= nn_st_writer_meta(w, "epochs", buf);
    ok |= nn_st_writer_meta(w, "name", net->meta.name);
    if (net->ood) {
        ok |= nn_st_writer_meta(w, "ood_method", nn_ood_method_name(net->ood->method));
        snprintf(buf, sizeof buf, "%.9g", net->ood->threshold);
        ok |= nn_st_writer_meta(w, "ood_threshold", buf);
    }
    snprintf(buf, sizeof buf, "fnv1a64:%016llx", (unsigned long long)h);
    ok |= nn_st_writer_meta(w, "checksum", buf);
    if (ok) {
        nn_errf(err, errlen, "save: out of memory");
        goto done;
    }
    rc = nn_st_writer_write(w, path, err, errlen);
done:
    free(arch);
    free(labels_s);
    cJSON_Delete(labels);
    nn_st_writer_free(w);
    return rc;
}

static int parse_num(const char *s, double *out)
{
    char *end;
    if (!s || !*s) return -1;
    *out = strtod(s, &end);
    return (*end || !isfinite(*out)) ? -1 : 0;
}

/* A trained head's five tensors (nn/ood.h) with the threshold t. */
static int read_ood_head(const nn_st_file *f, nn_net *net, const char *what, double t,
                         int *expected, char *err, size_t errlen)
{
    const nn_st_tensor *T[5];
    for (int j = 0; j < 5; j++) T[j] = nn_st_find(f, head_tensors[j]);
    int d = nn_ood_dim(net), h = T[2] && T[2]->ndim == 1 ? (int)T[2]->shape[0] : 0;
    int ok = d > 0 && h >= 1 && h <= NN_OOD_MAX_HIDDEN;
    for (int j = 0; j < 5 && ok; j++) ok = T[j] && T[j]->dtype == NN_ST_F32;
    ok = ok && T[0]->ndim == 2 && T[0]->shape[0] == 2 && T[0]->shape[1] == d && T[1]->ndim == 2 &&
         T[1]->shape[0] == h && T[1]->shape[1] == d && T[3]->ndim == 2 && T[3]->shape[0] == 1 &&
         T[3]->shape[1] == h && T[4]->ndim == 1 && T[4]->shape[0] == 1;
    if (!ok) {
        nn_errf(err, errlen,
                "%s: \"ood_method\" head needs F32 tensors \"ood.head.norm\" [2,D], "
                "\"ood.head.w1\" [H,D], \"ood.head.b1\" [H], \"ood.head.w2\" [1,H] and "
                "\"ood.head.b2\" [1], D the net's %d features",
                what, d);
        return -1;
    }
    /* Tensor data need not be aligned in a file from elsewhere: copy. */
    size_t sz[5] = {2 * (size_t)d, (size_t)h * d, (size_t)h, (size_t)h, 1}, off[6] = {0};
    for (int j = 0; j < 5; j++) off[j + 1] = off[j] + sz[j];
    float *buf = malloc(sizeof(float) * off[5]);
    if (!buf) {
        nn_errf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    for (int j = 0; j < 5; j++) memcpy(buf + off[j], T[j]->data, sizeof(float) * sz[j]);
    char e2[256];
    net->ood = nn_ood_create_head(d, h, buf + off[0], buf + off[1], buf + off[2], buf + off[3],
                                  buf[off[4]], t, e2, sizeof e2);
    free(buf);
    if (!net->ood) {
        nn_errf(err, errlen, "%s: %s", what, e2);
        return -1;
    }
    *expected += 5;
    return 0;
}

/* The optional out-of-distribution statistics: "ood.means" and "ood.chol"
 * with "ood_method" "mahalanobis" and "ood_threshold", all four or none;
 * "ood_method" "energy" and "ood_threshold" alone; or "ood_method" "head",
 * "ood_threshold" and the five "ood.head.*" tensors. Adds the
 * tensors found to *expected (so that any other extra tensor is still
 * refused by the count). 0, or -1 + err. */
static int read_ood(const nn_st_file *f, nn_net *net, const char *what, int *expected, char *err,
                    size_t errlen)
{
    const nn_st_tensor *m = nn_st_find(f, "ood.means"), *c = nn_st_find(f, "ood.chol");
    const char *meth = nn_st_meta(f, "ood_method"), *thr = nn_st_meta(f, "ood_threshold");
    if (!m && !c && !meth && !thr) return 0;
    nn_ood_method method;
    if (meth && nn_ood_method_parse(meth, &method)) {
        nn_errf(err, errlen,
                "%s: metadata \"ood_method\" is \"%.40s\"; this build knows \"%s\", \"energy\" "
                "and \"head\"",
                what, meth, NN_OOD_METHOD);
        return -1;
    }
    if (meth && method != NN_OOD_MAHALANOBIS) {
        /* energy and head: a threshold, no Mahalanobis statistics */
        double t;
        if (m || c) {
            nn_errf(err, errlen, "%s: \"ood_method\" %s takes no \"ood.means\" or \"ood.chol\"",
                    what, nn_ood_method_name(method));
            return -1;
        }
        if (!thr || parse_num(thr, &t)) {
            nn_errf(err, errlen, "%s: metadata \"ood_threshold\" must be a finite number", what);
            return -1;
        }
        if (method == NN_OOD_HEAD) return read_ood_head(f, net, what, t, expected, err, errlen);
        char e2[256];
        if (!(net->ood = nn_ood_create_energy(t, e2, sizeof e2))) {
            nn_errf(err, errlen, "%s: %s", what, e2);
            return -1;
        }
        return 0;
    }
    if (!m || !c || !meth || !thr) {
        nn_errf(err, errlen,
                "%s: out-of-distribution data needs tensors \"ood.means\", \"ood.chol\" and "
                "metadata \"ood_method\", \"ood_threshold\" together",
                what);
        return -1;
    }
    double t;
    if (parse_num(thr, &t) || t < 0) {
        nn_errf(err, errlen, "%s: metadata \"ood_threshold\" must be a finite number >= 0", what);
        return -1;
    }
    int k = nn_net_outputs(net), d = nn_ood_dim(net);
    if (!d) {
        nn_errf(err, errlen,
                "%s: out-of-distribution data on a net whose last layer is not dense "
                "with at most %d inputs",
                what, NN_OOD_MAX_DIM);
        return -1;
    }
    if (m->dtype != NN_ST_F32 || m->ndim != 2 || m->shape[0] != k || m->shape[1] != d ||
        c->dtype != NN_ST_F32 || c->ndim != 2 || c->shape[0] != d || c->shape[1] != d) {
        nn_errf(err, errlen, "%s: \"ood.means\" must be F32 [%d,%d] and \"ood.chol\" F32 [%d,%d]",
                what, k, d, d, d);
        return -1;
    }
    /* Tensor data need not be aligned in a file from elsewhere: copy. */
    float *mb = malloc(sizeof(float) * (size_t)k * d), *cb = malloc(sizeof(float) * (size_t)d * d);
    char e2[256];
    int rc = -1;
    if (!mb || !cb) {
        nn_errf(err, errlen, "%s: out of memory", what);
        goto done;
    }
    memcpy(mb, m->data, sizeof(float) * (size_t)k * d);
    memcpy(cb, c->data, sizeof(float) * (size_t)d * d);
    if (!(net->ood = nn_ood_create(k, d, mb, cb, t, e2, sizeof e2))) {
        nn_errf(err, errlen, "%s: %s", what, e2);
        goto done;
    }
    *expected += 2;
    rc = 0;
done:
    free(mb);
    free(cb);
    return rc;
}

static nn_net *from_st(const nn_st_file *f, const char *what, char *err, size_t errlen)
{
    const char *fmt = nn_st_meta(f, "format"), *ver = nn_st_meta(f, "format_version");
    const char *arch = nn_st_meta(f, "arch"), *shape = nn_st_meta(f, "input_shape");
    char e2[256];
    double v;
    if (!fmt || strcmp(fmt, NN_FORMAT_ID)) {
        nn_errf(err, errlen, "%s: not a %s weights file (metadata \"format\" is %s%s%s)", what,
                NN_FORMAT_ID, fmt ? "\"" : "missing", fmt ? fmt : "", fmt ? "\"" : "");
        return NULL;
    }
    if (parse_num(ver, &v) || v != floor(v) || v < 1 || v > NN_FORMAT_VERSION) {
        nn_errf(err, errlen, "%s: unsupported format_version %s (this build reads 1..%d)", what,
                ver ? ver : "(missing)", NN_FORMAT_VERSION);
        return NULL;
    }
    if (!arch) {
        nn_errf(err, errlen, "%s: metadata has no \"arch\"", what);
        return NULL;
    }
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    if (nn_arch_parse(arch, layers, &nl, e2, sizeof e2)) {
        nn_errf(err, errlen, "%s: %s", what, e2);
        return NULL;
    }
    int c = 0, h = 0, w = 0, used = 0;
    /* %n after the closing bracket: "[1,1,1,1]" or "[1,1,1" stop short of it. */
    if (!shape || sscanf(shape, " [ %d , %d , %d ] %n", &c, &h, &w, &used) != 3 || !used ||
        shape[used]) {
        nn_errf(err, errlen, "%s: metadata \"input_shape\" must be [C,H,W]", what);
        return NULL;
    }
    nn_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.input_mean = 0.0f;
    meta.input_std = 1.0f;
    meta.test_accuracy = -1.0;
    meta.test_ece = -1.0;
    if (nn_st_meta(f, "input_mean")) {
        if (parse_num(nn_st_meta(f, "input_mean"), &v)) {
            nn_errf(err, errlen, "%s: bad input_mean", what);
            return NULL;
        }
        meta.input_mean = (float)v;
    }
    if (nn_st_meta(f, "input_std")) {
        if (parse_num(nn_st_meta(f, "input_std"), &v) || !(v > 0)) {
            nn_errf(err, errlen, "%s: bad input_std", what);
            return NULL;
        }
        meta.input_std = (float)v;
    }
    if (nn_st_meta(f, "test_accuracy") && !parse_num(nn_st_meta(f, "test_accuracy"), &v))
        meta.test_accuracy = v;
    /* Informational like test_accuracy: an unreadable figure is unknown. */
    if (nn_st_meta(f, "test_ece") && !parse_num(nn_st_meta(f, "test_ece"), &v) && v > 0 && v <= 1)
        meta.test_ece = v;
    /* Not informational: it changes every probability, so a value that
     * cannot be used is an error, not a silent 1. */
    meta.temperature = 1.0;
    if (nn_st_meta(f, "temperature")) {
        if (parse_num(nn_st_meta(f, "temperature"), &v) || !(v >= NN_TEMPERATURE_MIN) ||
            !(v <= NN_TEMPERATURE_MAX)) {
            nn_errf(err, errlen,
                    "%s: metadata \"temperature\" is \"%.40s\"; expected a number in [%g, %g]",
                    what, nn_st_meta(f, "temperature"), NN_TEMPERATURE_MIN, NN_TEMPERATURE_MAX);
            return NULL;
        }
        meta.temperature = v;
    }
    if (nn_st_meta(f, "seed") && !parse_num(nn_st_meta(f, "seed"), &v) && v >= 0)
        meta.seed = (uint64_t)v;
    if (nn_st_meta(f, "epochs") && !parse_num(nn_st_meta(f, "epochs"), &v) && v >= 0 && v < 1e6)
        meta.epochs = (int)v;
    snprintf(meta.dataset, sizeof meta.dataset, "%s",
             nn_st_meta(f, "dataset") ? nn_st_meta(f, "dataset") : "");
    snprintf(meta.name, sizeof meta.name, "%s", nn_st_meta(f, "name") ? nn_st_meta(f, "name") : "");
    /* Absent in files written before the key existed: nn_net_create then
     * derives it from the dataset. Present, it must be a known name, or
     * the server would feed the model the wrong input distribution. */
    const char *pre = nn_st_meta(f, "preprocess");
    if (pre) {
        if (!nn_preprocess_valid(pre)) {
            nn_errf(err, errlen,
                    "%s: metadata \"preprocess\" is \"%.40s\"; expected \"mnist\" or \"fit\"", what,
                    pre);
            return NULL;
        }
        snprintf(meta.preprocess, sizeof meta.preprocess, "%s", pre);
    }
    const char *lab = nn_st_meta(f, "labels");
    cJSON *la = lab ? cJSON_Parse(lab) : NULL;
    if (!la || !cJSON_IsArray(la) || cJSON_GetArraySize(la) < 2 ||
        cJSON_GetArraySize(la) > NN_MAX_CLASSES) {
        cJSON_Delete(la);
        nn_errf(err, errlen, "%s: metadata \"labels\" must be a JSON array of 2..%d strings", what,
                NN_MAX_CLASSES);
        return NULL;
    }
    meta.nclasses = cJSON_GetArraySize(la);
    for (int i = 0; i < meta.nclasses; i++) {
        const cJSON *s = cJSON_GetArrayItem(la, i);
        if (!cJSON_IsString(s) || strlen(s->valuestring) >= NN_LABEL_MAX) {
            cJSON_Delete(la);
            nn_errf(err, errlen, "%s: label %d must be a string shorter than %d bytes", what, i,
                    NN_LABEL_MAX);
            return NULL;
        }
        snprintf(meta.labels[i], NN_LABEL_MAX, "%s", s->valuestring);
    }
    cJSON_Delete(la);
    nn_net *net = nn_net_create(layers, nl, c, h, w, &meta, e2, sizeof e2);
    if (!net) {
        nn_errf(err, errlen, "%s: %s", what, e2);
        return NULL;
    }
    int expected = 0;
    for (int i = 0; i < net->nlayers; i++) {
        want_t t[5];
        int k = layer_tensors(net, i, t);
        for (int j = 0; j < k; j++) {
            expected++;
            const nn_st_tensor *s = nn_st_find(f, t[j].name);
            if (!s) {
                nn_errf(err, errlen, "%s: missing tensor \"%s\"", what, t[j].name);
                goto bad;
            }
            nn_st_dtype want_dt = t[j].data ? NN_ST_F32 : NN_ST_I64;
            if (s->dtype != want_dt) {
                nn_errf(err, errlen, "%s: tensor \"%s\" has dtype %s, expected %s", what, t[j].name,
                        s->dtype == NN_ST_F32 ? "F32" : "I64",
                        want_dt == NN_ST_F32 ? "F32" : "I64");
                goto bad;
            }
            int same = s->ndim == t[j].ndim;
            for (int d = 0; same && d < s->ndim; d++) same = s->shape[d] == t[j].shape[d];
            if (!same) {
                char got[96] = "", exp[96] = "";
                size_t gu = 0, eu = 0;
                for (int d = 0; d < s->ndim && gu < sizeof got; d++)
                    gu += (size_t)snprintf(got + gu, sizeof got - gu, "%s%lld", d ? "," : "",
                                           (long long)s->shape[d]);
                for (int d = 0; d < t[j].ndim && eu < sizeof exp; d++)
                    eu += (size_t)snprintf(exp + eu, sizeof exp - eu, "%s%lld", d ? "," : "",
                                           (long long)t[j].shape[d]);
                nn_errf(err, errlen,
                        "%s: tensor \"%s\" has shape [%s], the architecture needs [%s]", what,
                        t[j].name, got, exp);
                goto bad;
            }
            if (t[j].data) {
                memcpy(t[j].data, s->data, t[j].n * sizeof(float));
                for (size_t q = 0; q < t[j].n; q++)
                    if (!isfinite(t[j].data[q])) {
                        nn_errf(err, errlen, "%s: tensor \"%s\" holds a NaN or infinity", what,
                                t[j].name);
                        goto bad;
                    }
            } else {
                memcpy(&net->bn_batches, s->data, sizeof(int64_t));
            }
        }
    }
    if (read_ood(f, net, what, &expected, err, errlen)) goto bad;
    if (f->ntensors != expected) {
        nn_errf(err, errlen, "%s: %d tensors in the file, the architecture has %d", what,
                f->ntensors, expected);
        goto bad;
    }
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind != NN_BATCHNORM) continue;
        for (int j = 0; j < L->out_c; j++)
            if (!(net->stats[L->s_off + L->out_c + j] >= 0.0f)) {
                nn_errf(err, errlen, "%s: layer %d: negative running_var", what, i);
                goto bad;
            }
    }
    const char *ck = nn_st_meta(f, "checksum");
    char want[64];
    snprintf(want, sizeof want, "fnv1a64:%016llx",
             (unsigned long long)nn_st_fnv1a64(f->data, f->data_len, NN_ST_FNV_INIT));
    if (!ck) {
        nn_errf(err, errlen, "%s: metadata has no \"checksum\"", what);
        goto bad;
    }
    if (strcmp(ck, want)) {
        nn_errf(err, errlen,
                "%s: checksum mismatch (file says %.40s, data gives %s): the file is corrupt", what,
                ck, want);
        goto bad;
    }
    return net;
bad:
    nn_net_free(net);
    return NULL;
}

nn_net *nn_net_load(const char *path, char *err, size_t errlen)
{
    char e2[512];
    nn_st_file *f = nn_st_read(path, e2, sizeof e2);
    if (!f) {
        /* nn_st_read's messages name the file already. */
        if (strncmp(e2, path, strlen(path)))
            nn_errf(err, errlen, "%s: %s", path, e2);
        else
            nn_errf(err, errlen, "%s", e2);
        return NULL;
    }
    nn_net *net = from_st(f, path, err, errlen);
    nn_st_free(f);
    return net;
}

nn_net *nn_net_load_mem(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    char e2[512];
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        nn_errf(err, errlen, "weights: out of memory");
        return NULL;
    }
    memcpy(copy, buf, len);
    nn_st_file *f = nn_st_parse(copy, len, e2, sizeof e2);
    if (!f) {
        nn_errf(err, errlen, "weights: %s", e2);
        return NULL;
    }
    nn_net *net = from_st(f, "weights", err, errlen);
    nn_st_free(f);
    return net;
}
