/* mnist-predict - classifies PNG files through the serving pipeline
 * (pipeline.h), the one the server runs, printing one JSON object per
 * image: the server's answer, or its error code (pipe_status_name). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/opt.h"
#include "nn/amx.h"
#include "nn/gemm.h"
#include "pipeline/pipeline.h"

#define VERSION "1.0.0"

/* The file's bytes (caller frees), or NULL with *st and err saying why. */
static uint8_t *read_file(const char *path, size_t max, size_t *len, pipe_status *st, char *err,
                          size_t errlen)
{
    *st = PIPE_UNREADABLE;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        fclose(f);
        return NULL;
    }
    if ((uint64_t)sb.st_size > max) {
        *st = PIPE_PAYLOAD_TOO_LARGE;
        snprintf(err, errlen, "file of %lld bytes is over the limit of %zu bytes",
                 (long long)sb.st_size, max);
        fclose(f);
        return NULL;
    }
    uint8_t *buf = malloc(sb.st_size ? (size_t)sb.st_size : 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)sb.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n != (size_t)sb.st_size) {
        snprintf(err, errlen, "read error");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void print_error(const char *file, pipe_status st, const char *msg)
{
    const char *code = pipe_status_name(st);
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
    size_t max_bytes = PIPE_MAX_BYTES_DEFAULT;
    img_limits lim;
    img_limits_default(&lim);
    max_pixels = lim.max_pixels;
    const cli_opt opts[] = {
        {"model", CLI_STRING, &model, 0, 0, "PATH[,PATH...]",
         "weights file, several averaged as an ensemble, or a NAME.ensemble list",
         .def = "the server's default model of --models-dir"},
        {"models-dir", CLI_STRING, &dir, 0, 0, "DIR", "where the default model is looked for",
         .def = NULL},
        {"max-pixels", CLI_U64, &max_pixels, 1, 4294967296.0, "N",
         "refuse images larger than N pixels (width*height)", .def = NULL},
        {"max-bytes", CLI_SIZE, &max_bytes, 1, 1073741824.0, "N",
         "refuse files larger than N bytes (the server's --body-limit default)", .def = NULL},
        {"dump-input", CLI_STRING, &dump, 0, 0, "FILE",
         "write the 28x28 network input of the last image as PGM", .def = ""},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[1200], path[4096];
    const char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    if (!files) {
        fprintf(stderr, "mnist-predict: out of memory\n");
        return 1;
    }
    switch (cli_parse(opts, nopts, argc, argv, files, &nfiles, err, sizeof err)) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-predict [options] IMAGE.png [IMAGE.png...]\n"
                  "Prints one JSON object per image (one per line), as POST /predict answers,\n"
                  "with the server's error codes.\n"
                  "Exit status: 0 if every image was classified, 1 otherwise, 2 on usage errors.",
                  opts, nopts);
        free(files);
        return 0;
    case CLI_VERSION:
        printf("mnist-predict %s\n", VERSION);
        free(files);
        return 0;
    case CLI_ERROR:
        fprintf(stderr, "mnist-predict: %s\n", err);
        free(files);
        return 2;
    case CLI_RUN: break;
    }
    if (nn_gemm_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-predict: %s\n", err);
        free(files);
        return 2;
    }
    if (nn_precision_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-predict: %s\n", err);
        free(files);
        return 2;
    }
    if (nfiles == 0) {
        fprintf(stderr, "mnist-predict: no IMAGE.png given (see --help)\n");
        free(files);
        return 2;
    }
    if (!model) {
        if (pipe_default_in_dir(dir, path, sizeof path, err, sizeof err)) {
            fprintf(stderr, "mnist-predict: %s\n", err);
            free(files);
            return 1;
        }
        model = path;
    }
    nn_ensemble *e = pipe_model_load(model, err, sizeof err);
    if (!e) {
        fprintf(stderr, "mnist-predict: %s\n", err);
        free(files);
        return 1;
    }
    /* The model's name, as the server would call it: the file's stem (of
     * the weights file or the .ensemble list); a comma list has none. */
    char name[256];
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    size_t stem = nn_model_stem(base, NULL);
    snprintf(name, sizeof name, "%.*s", (int)(stem && stem < 200 ? stem : 200), base);
    if (strchr(model, ',')) snprintf(name, sizeof name, "ensemble(%d)", nn_ensemble_size(e));
    pipe_ws *ws = pipe_ws_create(e, 1);
    if (!ws) {
        fprintf(stderr, "mnist-predict: out of memory\n");
        nn_ensemble_free(e);
        free(files);
        return 1;
    }
    lim.max_pixels = max_pixels;
    int failed = 0;
    float x[PIPE_PIXELS];
    for (int i = 0; i < nfiles; i++) {
        size_t len = 0;
        pipe_status st;
        uint8_t *buf = read_file(files[i], max_bytes, &len, &st, err, sizeof err);
        if (!buf) {
            print_error(files[i], st, err);
            failed = 1;
            continue;
        }
        pipe_result res;
        pipe_run_png(e, ws, buf, len, &lim, dump ? x : NULL, &res);
        free(buf);
        if (res.status != PIPE_OK) {
            print_error(files[i], res.status, res.msg);
            failed = 1;
            continue;
        }
        if (dump) {
            FILE *f = fopen(dump, "wb");
            if (f) {
                fprintf(f, "P5\n28 28\n255\n");
                for (int q = 0; q < PIPE_PIXELS; q++) fputc((int)(x[q] * 255.0f + 0.5f), f);
                fclose(f);
            }
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", files[i]);
        cJSON_AddNumberToObject(o, "prediction", res.prediction);
        cJSON_AddStringToObject(o, "label", res.label);
        cJSON_AddNumberToObject(o, "confidence", res.probs[res.prediction]);
        cJSON *pa = cJSON_AddArrayToObject(o, "probabilities");
        for (int j = 0; j < res.nclasses; j++)
            cJSON_AddItemToArray(pa, cJSON_CreateNumber(res.probs[j]));
        if (res.has_ood) {
            cJSON_AddNumberToObject(o, "ood_score", res.ood_score);
            cJSON_AddBoolToObject(o, "in_distribution", res.in_distribution);
        } else {
            cJSON_AddNullToObject(o, "ood_score");
            cJSON_AddNullToObject(o, "in_distribution");
        }
        cJSON_AddStringToObject(o, "model", name);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    pipe_ws_free(ws);
    nn_ensemble_free(e);
    free(files);
    return failed;
}
