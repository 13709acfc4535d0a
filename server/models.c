/* models.c - see models.h. */
#include "models.h"
#include "sha256.h"
#include "pipeline/pipeline.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_model(srv_models *ms, const char *name, const char *paths,
                     double accuracy_override, const char *source, char *err,
                     size_t errlen)
{
    if (!srv_config_valid_name(name)) {
        snprintf(err, errlen, "%s: model name '%s' must be letters, digits, "
                 "'.', '_' or '-'", source, name);
        return -1;
    }
    if (srv_models_find(ms, name) >= 0) {
        snprintf(err, errlen, "%s: model name '%s' is already taken", source,
                 name);
        return -1;
    }
    if (ms->n >= SRV_MAX_MODELS) {
        snprintf(err, errlen, "%s: too many models (max %d)", source,
                 SRV_MAX_MODELS);
        return -1;
    }
    srv_model *m = &ms->m[ms->n];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->source, sizeof m->source, "%s", source);
    char nerr[1200];
    /* Loaded and checked servable (1x28x28 input, classes, preprocessing):
     * a request never meets a model it cannot feed. */
    m->ens = pipe_model_load(paths, nerr, sizeof nerr);
    if (!m->ens) {
        snprintf(err, errlen, "model '%s' (%s): %s", name, source, nerr);
        return -1;
    }
    ms->n++;   /* from here on srv_models_free releases it */
    m->nmembers = m->ens->n;
    for (int i = 0; i < m->nmembers; i++) {
        if (srv_sha256_file(m->ens->paths[i], m->member_sha256[i], nerr,
                            sizeof nerr) < 0) {
            snprintf(err, errlen, "model '%s': %s", name, nerr);
            return -1;
        }
        m->macs += nn_net_macs(m->ens->nets[i]);
    }
    if (m->nmembers == 1) {
        memcpy(m->sha256, m->member_sha256[0], 65);
    } else {
        char joined[NN_MAX_MEMBERS * 65];
        size_t o = 0;
        for (int i = 0; i < m->nmembers; i++) {
            if (i)
                joined[o++] = ',';
            memcpy(joined + o, m->member_sha256[i], 64);
            o += 64;
        }
        srv_sha256_hex(joined, o, m->sha256);
    }
    nn_net_summary(m->ens->nets[0], m->architecture, sizeof m->architecture);
    m->params = nn_ensemble_params(m->ens);
    const nn_meta *meta = nn_ensemble_meta(m->ens);
    m->nclasses = nn_ensemble_classes(m->ens);
    if (m->nclasses < 1 || m->nclasses > SRV_METRICS_MAX_CLASSES) {
        snprintf(err, errlen, "model '%s': %d classes is outside 1..%d", name,
                 m->nclasses, SRV_METRICS_MAX_CLASSES);
        return -1;
    }
    for (int c = 0; c < m->nclasses; c++)
        m->labels[c] = meta->labels[c];
    /* An ensemble's accuracy is not its first member's: unknown unless the
     * .ensemble file states it. */
    if (accuracy_override >= 0)
        m->test_accuracy = accuracy_override;
    else
        m->test_accuracy = m->nmembers == 1 ? meta->test_accuracy : -1;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_dir(srv_models *ms, const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "models directory %s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (!nn_model_stem(de->d_name, NULL))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **p = realloc(names, sizeof *names * (size_t)cap);
            if (!p) {
                snprintf(err, errlen, "out of memory listing %s", dir);
                rc = -1;
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(de->d_name))) {
            snprintf(err, errlen, "out of memory listing %s", dir);
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, (size_t)n, sizeof names[0], cmp_str);
    for (int i = 0; i < n && rc == 0; i++) {
        char stem[SRV_NAME_MAX + 16], source[1100];
        int ens;
        size_t slen = nn_model_stem(names[i], &ens);
        snprintf(source, sizeof source, "%s/%s", dir, names[i]);
        if (slen >= SRV_NAME_MAX) {
            snprintf(err, errlen, "%s: file name too long for a model name",
                     source);
            rc = -1;
            break;
        }
        memcpy(stem, names[i], slen);
        stem[slen] = '\0';
        if (ens) {
            char paths[SRV_PATHS_MAX * 2];
            double acc;
            rc = nn_ensemble_list_read(source, paths, sizeof paths, &acc, err,
                                       errlen);
            if (rc == 0)
                rc = add_model(ms, stem, paths, acc, source, err, errlen);
        } else {
            rc = add_model(ms, stem, source, -1, source, err, errlen);
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static char *render_json(const srv_models *ms, size_t *len)
{
    cJSON *root = cJSON_CreateObject(), *arr;
    if (!root)
        return NULL;
    cJSON_AddStringToObject(root, "default", ms->m[ms->default_idx].name);
    arr = cJSON_AddArrayToObject(root, "models");
    for (int k = 0; arr && k < ms->n; k++) {
        const srv_model *m = &ms->m[k];
        const nn_meta *meta = nn_ensemble_meta(m->ens);
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", m->name);
        cJSON_AddBoolToObject(o, "default", m->is_default);
        cJSON_AddStringToObject(o, "architecture", m->architecture);
        cJSON_AddNumberToObject(o, "parameters", (double)m->params);
        cJSON_AddNumberToObject(o, "macs", (double)m->macs);
        if (m->test_accuracy >= 0)
            cJSON_AddNumberToObject(o, "test_accuracy", m->test_accuracy);
        else
            cJSON_AddNullToObject(o, "test_accuracy");
        cJSON_AddStringToObject(o, "dataset", meta->dataset);
        cJSON_AddStringToObject(o, "preprocess", meta->preprocess);
        cJSON_AddStringToObject(o, "sha256", m->sha256);
        cJSON_AddNumberToObject(o, "classes", m->nclasses);
        cJSON *labels = cJSON_AddArrayToObject(o, "labels");
        for (int c = 0; labels && c < m->nclasses; c++)
            cJSON_AddItemToArray(labels, cJSON_CreateString(m->labels[c]));
        cJSON *files = cJSON_AddArrayToObject(o, "members");
        for (int i = 0; files && i < m->nmembers; i++) {
            const nn_net *net = m->ens->nets[i];
            char arch[512];
            cJSON *f = cJSON_CreateObject();
            if (!f)
                break;
            cJSON_AddItemToArray(files, f);
            cJSON_AddStringToObject(f, "path", m->ens->paths[i]);
            cJSON_AddStringToObject(f, "sha256", m->member_sha256[i]);
            nn_net_summary(net, arch, sizeof arch);
            cJSON_AddStringToObject(f, "architecture", arch);
            cJSON_AddNumberToObject(f, "parameters", (double)net->nparams);
            if (net->meta.test_accuracy >= 0)
                cJSON_AddNumberToObject(f, "test_accuracy",
                                        net->meta.test_accuracy);
            else
                cJSON_AddNullToObject(f, "test_accuracy");
        }
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (s)
        *len = strlen(s);
    return s;
}

srv_models *srv_models_load(const srv_config *c, char *err, size_t errlen)
{
    srv_models *ms = calloc(1, sizeof *ms);
    if (!ms) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < c->nmodels; i++) {
        char source[SRV_NAME_MAX + 16];
        snprintf(source, sizeof source, "--model %s", c->models[i].name);
        if (add_model(ms, c->models[i].name, c->models[i].paths, -1, source,
                      err, errlen) < 0)
            goto fail;
    }
    if (c->models_dir[0] && load_dir(ms, c->models_dir, err, errlen) < 0)
        goto fail;
    if (ms->n == 0) {
        snprintf(err, errlen, "no models to serve: %s%s has no *.safetensors "
                 "(train some with 'make train' or pass --model NAME=PATH)",
                 c->models_dir[0] ? "directory " : "",
                 c->models_dir[0] ? c->models_dir : "configuration");
        goto fail;
    }
    if (c->default_model[0]) {
        ms->default_idx = srv_models_find(ms, c->default_model);
        if (ms->default_idx < 0) {
            snprintf(err, errlen, "--default-model %s: no such model loaded",
                     c->default_model);
            goto fail;
        }
    } else {
        pipe_candidate cand[SRV_MAX_MODELS];
        for (int k = 0; k < ms->n; k++)
            cand[k] = (pipe_candidate){
                .nmembers = ms->m[k].nmembers,
                .test_accuracy = ms->m[k].test_accuracy,
                .dataset = nn_ensemble_meta(ms->m[k].ens)->dataset};
        ms->default_idx = pipe_default_pick(cand, ms->n);
    }
    ms->m[ms->default_idx].is_default = 1;
    for (int k = 0; k < ms->n; k++) {
        srv_model *m = &ms->m[k];
        srv_metrics_model *in = &ms->info[k];
        in->name = m->name;
        in->architecture = m->architecture;
        in->sha256 = m->sha256;
        in->is_default = m->is_default;
        in->params = (double)m->params;
        in->test_accuracy = m->test_accuracy;
        in->nclasses = m->nclasses;
        for (int cl = 0; cl < m->nclasses; cl++)
            in->labels[cl] = m->labels[cl];
    }
    ms->json = render_json(ms, &ms->json_len);
    if (!ms->json) {
        snprintf(err, errlen, "out of memory rendering the model list");
        goto fail;
    }
    return ms;
fail:
    srv_models_free(ms);
    return NULL;
}

void srv_models_free(srv_models *ms)
{
    if (!ms)
        return;
    for (int k = 0; k < ms->n; k++)
        nn_ensemble_free(ms->m[k].ens);
    if (ms->json)
        cJSON_free(ms->json);
    free(ms);
}

int srv_models_find(const srv_models *ms, const char *name)
{
    for (int k = 0; k < ms->n; k++)
        if (strcmp(ms->m[k].name, name) == 0)
            return k;
    return -1;
}
