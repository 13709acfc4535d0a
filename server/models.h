/* models.h - the set of models the server answers with, loaded once at
 * start-up from --model specs and the models directory.
 *
 * Directory rules: every NAME.safetensors is a model NAME; every
 * NAME.ensemble is a model NAME averaging the members it lists (one weights
 * file per line, relative to the directory; '#' starts a comment; an
 * optional line "test_accuracy=0.9981" records the ensemble's own figure).
 * Names are unique across flags and directory; files are sorted by name so
 * start-up is deterministic.
 *
 * Every model is checked servable when loaded (pipe_model_check: 1x28x28
 * input, class count, preprocessing); a file that is not refuses start-up
 * with a message naming it.
 *
 * Default model: --default-model if given, else pipe_default_pick's rule
 * (the most accurate single digit model; ties: first in load order), the
 * same rule mnist-predict uses.
 */
#ifndef SERVER_MODELS_H
#define SERVER_MODELS_H

#include "config.h"
#include "metrics.h"
#include "nn/ensemble.h"

typedef struct {
    char name[SRV_NAME_MAX];
    nn_ensemble *ens;            /* owned */
    int nmembers;
    char sha256[65];             /* the file; ensembles: see srv_models_load */
    char member_sha256[NN_MAX_MEMBERS][65];
    char architecture[512];      /* first member's summary */
    char source[1100];           /* where it came from, for messages */
    size_t params;               /* all members together */
    uint64_t macs;               /* per image, all members together */
    double test_accuracy;        /* < 0 when unknown */
    int nclasses;
    const char *labels[SRV_METRICS_MAX_CLASSES]; /* into the first member */
    int is_default;
} srv_model;

typedef struct {
    int n;
    srv_model m[SRV_MAX_MODELS];
    int default_idx;
    char *json;                  /* GET /v1/models body, built once */
    size_t json_len;
    srv_metrics_model info[SRV_MAX_MODELS];  /* views for srv_metrics */
} srv_models;

/* Loads every model the configuration names, hashes the files, picks the
 * default and renders the /v1/models document. An ensemble's sha256 is the
 * SHA-256 of its members' hex digests joined by ','. Returns NULL with a
 * one-line err on any failure (missing or corrupt file, no models at all,
 * duplicate names, unknown --default-model). */
srv_models *srv_models_load(const srv_config *c, char *err, size_t errlen);
void srv_models_free(srv_models *ms);

/* Index of the model called name, or -1. */
int srv_models_find(const srv_models *ms, const char *name);

#endif
