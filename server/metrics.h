/* metrics.h - request and inference metrics in Prometheus text format.
 *
 * Recording is lock-free: each thread counts into its own shard (claimed on
 * first use) with relaxed atomic adds, and GET /metrics sums the shards.
 *
 *   srv_metrics *m = srv_metrics_create(nshards);
 *   srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 153);  // microseconds
 *   srv_metrics_inference(m, slot, 80, predicted_class);
 *   srv_metrics_batch(m, slot, 8, 120);   // a batch of 8, waited 120 us
 *   srv_metrics_render(m, &buf, models, nmodels, ready, draining);
 *   srv_metrics_free(m);
 *
 * Models come and go while serving (registry.h), so counters are kept per
 * model slot (a name's stable index, 0..SRV_METRICS_MAX_MODELS-1) and what
 * is known of each model is passed in at render time.
 */
#ifndef SERVER_METRICS_H
#define SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "server/buf.h"
#include "server/route.h"

#define SRV_METRICS_MAX_MODELS 32
#define SRV_METRICS_MAX_CLASSES 64

/* What the metrics need to know about each model at render time, indexed
 * by slot: models[k] describes slot k. name NULL: slot unused. */
typedef struct {
    const char *name;
    int loaded;             /* 0: known name that serves nothing now (only
                               its load failures are shown) */
    uint64_t load_failures; /* failed loads of this name so far */
    const char *architecture;
    const char *sha256;
    int is_default;
    double params;
    double test_accuracy; /* < 0: unknown, rendered as NaN */
    int nclasses;
    const char *labels[SRV_METRICS_MAX_CLASSES];
} srv_metrics_model;

typedef struct srv_metrics srv_metrics;

/* nshards: how many threads get a shard of their own (later threads share
 * the last one, still correctly). NULL on allocation failure or bad sizes. */
srv_metrics *srv_metrics_create(int nshards);
void srv_metrics_free(srv_metrics *m);

/* A finished request: route, HTTP status (0 = none sent), total time. */
void srv_metrics_request(srv_metrics *m, srv_route route, int status, uint64_t us);
/* One image classified by the model in slot in us microseconds. */
void srv_metrics_inference(srv_metrics *m, int slot, uint64_t us, int cls);
/* Dynamic batching, per image that ran batched: batch_images > 0 once
 * per forward pass (the images in it), queue_us for every image. */
void srv_metrics_batch(srv_metrics *m, int slot, int batch_images, uint64_t queue_us);
/* Requests being handled right now: +1 when one starts, -1 when it ends. */
void srv_metrics_inflight_add(srv_metrics *m, int delta);

/* This process's resource use, as /metrics reports it (process_*). */
typedef struct {
    double cpu_seconds;    /* user + system                          */
    double resident_bytes; /* resident set                           */
    double virtual_bytes;  /* address space                          */
    double open_fds;       /* file descriptors open now              */
    double max_fds;        /* RLIMIT_NOFILE's soft limit             */
} srv_metrics_process_stats;
enum { SRV_PROC_CPU = 1, SRV_PROC_MEMORY = 2, SRV_PROC_FDS = 4, SRV_PROC_MAX_FDS = 8 };
/* Fills p; returns the SRV_PROC_* bits of what could be read (memory and
 * descriptors come from /proc, so they are missing off Linux and are then
 * left out of the exposition). */
int srv_metrics_process(srv_metrics_process_stats *p);

/* The git commit the server was built from ("" or "unknown" when not
 * known); defined in build/gen/build_info.c, which scripts/build-info.sh
 * writes at build time. */
extern const char srv_build_commit[];

/* Appends the whole exposition; models[0..nmodels) as above (nmodels up to
 * SRV_METRICS_MAX_MODELS). ready/draining are rendered as gauges;
 * mnist_build_info{version,commit,kernels} and the process_* metrics
 * follow the model metrics. */
void srv_metrics_render(srv_metrics *m, srv_buf *out, const srv_metrics_model *models, int nmodels,
                        int ready, int draining);

#endif
