/* mnist-predict - classifies PNG files with the same decode, preprocessing
 * and forward path as the server, printing one JSON object per image. */
#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image/image.h"
#include "nn/ensemble.h"
#include "nn/eval.h"

#define VERSION "1.0.0"
#define MAX_FILE (64u << 20)

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mnist-predict [options] IMAGE.png [IMAGE.png...]\n"
        "Prints one JSON object per image (one per line), as POST /predict answers.\n"
        "  --model PATH[,PATH...]  weights file, or several averaged as an ensemble\n"
        "                          (or a NAME.ensemble list file)\n"
        "                          (default: the most accurate *.safetensors in --models-dir)\n"
        "  --models-dir DIR        default models/\n"
        "  --max-pixels N          refuse larger images (default 16777216)\n"
        "  --dump-input FILE       write the 28x28 network input of the last image as PGM\n"
        "  --help, --version\n"
        "Exit status: 0 if every image was classified, 1 otherwise, 2 on usage errors.\n");
}

/* The most accurate model in dir by its recorded test accuracy. */
static int pick_default(const char *dir, char *out, size_t outlen, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) { snprintf(err, errlen, "%s: %s", dir, strerror(errno)); return -1; }
    double best = -2.0;
    struct dirent *de;
    out[0] = 0;
    while ((de = readdir(d))) {
        int is_list;
        if (!nn_model_stem(de->d_name, &is_list) || is_list) continue;
        char path[1024], e2[256];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        nn_net *net = nn_net_load(path, e2, sizeof e2);
        if (!net) continue;
        /* Digit models only: the default answers digits. */
        if (!strcmp(net->meta.dataset, "mnist") &&
            (net->meta.test_accuracy > best ||
             (net->meta.test_accuracy == best && strcmp(path, out) < 0))) {
            best = net->meta.test_accuracy;
            snprintf(out, outlen, "%s", path);
        }
        nn_net_free(net);
    }
    closedir(d);
    if (!out[0]) { snprintf(err, errlen, "%s: no loadable MNIST *.safetensors model", dir); return -1; }
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open: %s", strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        fclose(f);
        return NULL;
    }
    if ((uint64_t)st.st_size > MAX_FILE) {
        snprintf(err, errlen, "file is %lld bytes, more than the %u-byte limit", (long long)st.st_size, MAX_FILE);
        fclose(f);
        return NULL;
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) { snprintf(err, errlen, "out of memory"); fclose(f); return NULL; }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n != (size_t)st.st_size) { snprintf(err, errlen, "read error"); free(buf); return NULL; }
    *len = n;
    return buf;
}

static void print_error(const char *file, const char *code, const char *msg)
{
    cJSON *o = cJSON_CreateObject(), *e;
    cJSON_AddStringToObject(o, "file", file);
    e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    char *s = cJSON_PrintUnformatted(o);
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *dir = "models", *dump = NULL;
    unsigned long long max_pixels = 0;
    int first = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--version")) { printf("mnist-predict %s\n", VERSION); return 0; }
        if (!strcmp(a, "--model") || !strcmp(a, "--models-dir") || !strcmp(a, "--max-pixels") ||
            !strcmp(a, "--dump-input")) {
            if (i + 1 >= argc) { fprintf(stderr, "mnist-predict: %s needs a value\n", a); return 2; }
            const char *v = argv[++i];
            if (!strcmp(a, "--model")) model = v;
            else if (!strcmp(a, "--models-dir")) dir = v;
            else if (!strcmp(a, "--dump-input")) dump = v;
            else {
                char *end;
                max_pixels = strtoull(v, &end, 10);
                if (*end || !max_pixels) { fprintf(stderr, "mnist-predict: bad --max-pixels %s\n", v); return 2; }
            }
            continue;
        }
        if (!strcmp(a, "--")) { first = i + 1; break; }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "mnist-predict: unknown option %s (see --help)\n", a); return 2; }
        first = i;
        break;
    }
    if (!first || first >= argc) { usage(stderr); return 2; }
    char err[512], path[1024];
    if (!model) {
        if (pick_default(dir, path, sizeof path, err, sizeof err)) { fprintf(stderr, "mnist-predict: %s\n", err); return 1; }
        model = path;
    }
    nn_ensemble *e = nn_ensemble_load(model, err, sizeof err);
    if (!e) { fprintf(stderr, "mnist-predict: %s\n", err); return 1; }
    const nn_net *n0 = e->nets[0];
    if (n0->in_c != 1 || n0->in_h != 28 || n0->in_w != 28) {
        fprintf(stderr, "mnist-predict: %s takes %dx%dx%d inputs, not 1x28x28 images\n", model, n0->in_c,
                n0->in_h, n0->in_w);
        return 1;
    }
    /* The model's name, as the server would call it: the file's stem (of
     * the weights file or the .ensemble list); a comma list has none. */
    char name[256];
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    size_t stem = nn_model_stem(base, NULL);
    snprintf(name, sizeof name, "%.*s", (int)(stem && stem < 200 ? stem : 200), base);
    if (strchr(model, ',')) snprintf(name, sizeof name, "ensemble(%d)", e->n);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 1);
    if (!ws) { fprintf(stderr, "mnist-predict: out of memory\n"); return 1; }
    img_limits lim;
    img_limits_default(&lim);
    if (max_pixels) lim.max_pixels = max_pixels;
    const nn_meta *m = nn_ensemble_meta(e);
    int k = nn_ensemble_classes(e), failed = 0;
    float x[784], probs[NN_MAX_CLASSES];
    for (int i = first; i < argc; i++) {
        size_t len = 0;
        uint8_t *buf = read_file(argv[i], &len, err, sizeof err), *gray = NULL;
        uint32_t w = 0, h = 0;
        if (!buf) { print_error(argv[i], "unreadable", err); failed = 1; continue; }
        img_status st = img_png_decode(buf, len, &lim, &gray, &w, &h, err, sizeof err);
        free(buf);
        if (st == IMG_OK) st = img_prep_by_name(m->preprocess, gray, w, h, x, err, sizeof err);
        free(gray);
        if (st != IMG_OK) { print_error(argv[i], img_status_name(st), err); failed = 1; continue; }
        if (dump) {
            FILE *f = fopen(dump, "wb");
            if (f) {
                fprintf(f, "P5\n28 28\n255\n");
                for (int q = 0; q < 784; q++) fputc((int)(x[q] * 255.0f + 0.5f), f);
                fclose(f);
            }
        }
        nn_ensemble_forward(e, ws, x, 1, probs);
        int p = nn_argmax(probs, k);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", argv[i]);
        cJSON_AddNumberToObject(o, "prediction", p);
        cJSON_AddStringToObject(o, "label", m->labels[p]);
        cJSON_AddNumberToObject(o, "confidence", probs[p]);
        cJSON *pa = cJSON_AddArrayToObject(o, "probabilities");
        for (int j = 0; j < k; j++) cJSON_AddItemToArray(pa, cJSON_CreateNumber(probs[j]));
        cJSON_AddStringToObject(o, "model", name);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
    return failed;
}
