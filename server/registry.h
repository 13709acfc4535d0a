/* registry.h - the models the server answers with, by name and version,
 * and how that set changes while the server runs.
 *
 * Sources (scanned in this order; names are unique across them):
 *   --model NAME=PATH[,PATH...]   version 1 of NAME
 *   DIR/NAME.safetensors          version 1 of NAME (a single model)
 *   DIR/NAME.ensemble             version 1 of NAME (an ensemble list, see
 *                                 nn_ensemble_list_read)
 *   DIR/NAME/N.safetensors        version N of NAME (N: 1..999999999, no
 *   DIR/NAME/N.ensemble           leading zero); other files in DIR/NAME/
 *                                 are ignored (ensemble members may live
 *                                 there). DIR/NAME/1.* wins over a flat
 *                                 DIR/NAME.* beside it.
 * The --keep-versions K highest versions present are served; a request
 * without a version gets the highest that serves.
 *
 * Reloads (srv_registry_reload, _load, _unload; SIGHUP, the poller and the
 * repository API end here, one at a time) build every new or changed
 * version off to the side: two looks at its files (size, mtime, SHA-256)
 * a settle time apart, then the load, the servability check (1x28x28
 * input, classes; the class count must match the version already served
 * under that name), a warm-up forward whose probabilities must sum to 1,
 * and a final look that the files did not change meanwhile. Only then is
 * a new snapshot published. A version that fails keeps whatever served
 * before it (an older version, or the same version's previous content):
 * failures are logged, counted per name and listed as UNAVAILABLE with
 * their reason; a file is never replaced or removed by a failing one.
 *
 * Snapshots: readers work on an immutable srv_snapshot (the served models,
 * the default, the rendered /v1/models and repository index documents).
 *   srv_snapshot *v = srv_registry_acquire(reg);       // lock-free
 *   const srv_model *m = srv_snapshot_find(v, "cnn", 0);  // 0: highest
 *   ... pipe_run_png(m->ens, srv_model_ws(m, slot), ...) ...
 *   srv_snapshot_release(v);                            // any thread
 * A snapshot holds a reference on each of its models; a model is freed
 * when the last snapshot (and srv_model_acquire holder) lets go, so a
 * request finishes on the model it started with and no lock is held
 * across a forward pass. Publishing swaps one pointer; acquire is an
 * atomic counter round trip (see registry.c for the argument).
 *
 * Default model: --default-model when it serves, else pipe_default_pick
 * among the served names' highest versions, re-chosen on every publish
 * among models that loaded only.
 */
#ifndef SERVER_REGISTRY_H
#define SERVER_REGISTRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h"
#include "server/metrics.h"
#include "nn/ensemble.h"
#include "pipeline/batch.h"
#include "pipeline/pipeline.h"

#define SRV_MAX_VERSIONS 16 /* versions of one name tracked at once */
#define SRV_REASON_MAX 512

/* One loaded, checked and warmed-up model version. Immutable once
 * published; freed by the last reference. */
typedef struct srv_model {
    char name[SRV_NAME_MAX];
    int version;      /* >= 1 */
    int slot;         /* the name's stable index, for metrics */
    nn_ensemble *ens; /* owned */
    int nmembers;
    char sha256[65]; /* the file; ensembles: SHA-256 of the
                                    members' hex digests joined by ',' */
    char member_sha256[NN_MAX_MEMBERS][65];
    char architecture[512]; /* first member's summary */
    char source[1100];      /* where it came from, for messages */
    size_t params;          /* all members together */
    uint64_t macs;          /* per image, all members together */
    double test_accuracy;   /* < 0 when unknown */
    double test_ece;        /* the weights file's test_ece; <= 0 when unknown
                               (and for an ensemble, whose own differs)   */
    int nclasses;
    const char *labels[SRV_METRICS_MAX_CLASSES]; /* into the first member */
    pipe_ws **ws;                                /* one workspace per worker slot */
    int nws;
    pipe_batcher *batch; /* its dynamic batching (the workspaces use it),
                            or NULL when off */
    atomic_int refs;
} srv_model;

/* State of one (name, version) in the index documents. */
typedef enum { SRV_MODEL_READY, SRV_MODEL_UNAVAILABLE } srv_model_state;

typedef struct {
    char name[SRV_NAME_MAX];
    int version;
    srv_model_state state;
    char reason[SRV_REASON_MAX]; /* "" when there is nothing to report */
} srv_index_entry;

/* A name that serves: its models, highest version first. */
typedef struct {
    srv_model *ver[SRV_MAX_VERSIONS];
    int nver;
} srv_served;

typedef struct srv_snapshot {
    atomic_int refs;
    uint64_t generation; /* 1 for the first snapshot, +1 each publish */
    int n;               /* served names, in source order */
    srv_served s[SRV_MAX_MODELS];
    int default_idx;        /* into s[], -1 when nothing serves */
    srv_index_entry *index; /* every known version, sorted by name then
                                    version: served ones and failures */
    int nindex;
    char *models_json; /* GET /v1/models */
    size_t models_json_len;
    char *index_json; /* POST /v2/repository/index */
    size_t index_json_len;
    /* Per name ever seen (index = slot): what /metrics shows. */
    srv_metrics_model info[SRV_MAX_MODELS];
    int ninfo;
} srv_snapshot;

typedef struct srv_registry srv_registry;

typedef struct {
    const srv_config *cfg; /* models, models_dir, default_model,
                                    keep_versions; must outlive the registry */
    int nslots;            /* workspaces per model (worker slots) */
    double settle_s;       /* between the two looks; < 0: 0.1 s */
    pipe_batch_opts batch; /* each model's batcher; delay_us 0: none */
} srv_registry_opts;

/* Loads every source strictly: any file that fails, a duplicate name, no
 * model at all or an unknown --default-model refuse the start (NULL and a
 * one-line err naming the file). Logs nothing; see srv_registry_log_all. */
srv_registry *srv_registry_create(const srv_registry_opts *o, char *err, size_t errlen);
/* Stops the poller if running, drops the current snapshot. Snapshots and
 * models still held elsewhere stay valid until released. NULL: no-op. */
void srv_registry_free(srv_registry *r);

/* The start-up line naming the default model (each model's own "loaded"
 * line came when it loaded). */
void srv_registry_log_all(srv_registry *r);

/* The current snapshot, with a reference the caller must release. Never
 * NULL once created. Lock-free; callable from any thread. */
srv_snapshot *srv_registry_acquire(srv_registry *r);
void srv_snapshot_release(srv_snapshot *v);

/* The served model NAME at version (0: the highest served), or NULL.
 * Valid while v is held. */
srv_model *srv_snapshot_find(const srv_snapshot *v, const char *name, int version);
/* The default model (highest version of the default name), or NULL when
 * nothing serves. */
srv_model *srv_snapshot_default(const srv_snapshot *v);

/* A reference to one model that outlives the snapshot it came from:
 * srv_registry_acquire_model finds NAME at version (0: highest) in the
 * current snapshot; NULL when it does not serve. Release with
 * srv_model_release (NULL: no-op). */
srv_model *srv_registry_acquire_model(srv_registry *r, const char *name, int version);
void srv_model_release(srv_model *m);

/* Worker slot's workspace, or NULL when slot is out of range (the caller
 * then makes a temporary one with pipe_ws_create). */
pipe_ws *srv_model_ws(const srv_model *m, int slot);

/* "NAME" or "NAME:N" -> name and version (0 when not given). 0, or -1 when
 * the name is not a valid model name or N is not 1..999999999. */
int srv_model_spec_parse(const char *spec, char name[SRV_NAME_MAX], int *version);
/* "N" -> version; 0 or -1 as above. */
int srv_model_version_parse(const char *s, int *version);

/* ---- changing what is served (one at a time; blocking) ------------------ */

typedef enum {
    SRV_REG_OK = 0,
    SRV_REG_NOT_FOUND,  /* no file for that name */
    SRV_REG_FAILED,     /* at least one version failed to load */
    SRV_REG_LAST_MODEL, /* unload would leave nothing to serve */
} srv_reg_result;

/* Rescans every source and publishes. why ("SIGHUP", "poll") goes into the
 * log lines. A file identical (size, mtime) to one that failed before is
 * not retried unless force. Returns SRV_REG_OK or SRV_REG_FAILED. */
srv_reg_result srv_registry_reload(srv_registry *r, const char *why, int force);
/* Repository API: loads NAME's files anew (forcing) and serves NAME again
 * if it was unloaded. err says why when not SRV_REG_OK. */
srv_reg_result srv_registry_load(srv_registry *r, const char *name, char *err, size_t errlen);
/* Repository API: stops serving NAME (every version) until loaded again;
 * scans leave it alone meanwhile. */
srv_reg_result srv_registry_unload(srv_registry *r, const char *name, char *err, size_t errlen);

/* ---- background reloads ---------------------------------------------- */

/* Starts the reloader thread: it rescans every poll_s seconds (0: never
 * on its own) and whenever srv_registry_request_reload asks. 0 or -1. */
int srv_registry_start(srv_registry *r, double poll_s);
/* Asks the reloader thread for a forced rescan (e.g. on SIGHUP) and
 * returns at once. Without a reloader thread, rescans in the caller. */
void srv_registry_request_reload(srv_registry *r, const char *why);
/* Stops and joins the reloader thread (a rescan under way finishes). */
void srv_registry_stop(srv_registry *r);

/* Shutting down: the served models' batchers stop waiting to fill a
 * batch (pipe_batcher_close); queued requests are answered at once. */
void srv_registry_close_batchers(srv_registry *r);

/* Reloads finished (any kind), for tests and logs. */
uint64_t srv_registry_reloads(srv_registry *r);

#endif
