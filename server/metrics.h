/* metrics.h - request and inference metrics in Prometheus text format.
 *
 * Recording is lock-free: each thread counts into its own shard (claimed on
 * first use) with relaxed atomic adds, and GET /metrics sums the shards.
 *
 *   srv_metrics *m = srv_metrics_create(models, nmodels, nshards);
 *   srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 153);  // microseconds
 *   srv_metrics_inference(m, model, 80, predicted_class);
 *   srv_metrics_render(m, &buf, ready, draining);
 *   srv_metrics_free(m);
 */
#ifndef SERVER_METRICS_H
#define SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "route.h"

#define SRV_METRICS_MAX_MODELS 32
#define SRV_METRICS_MAX_CLASSES 64

/* What the metrics need to know about each served model; the strings must
 * outlive the srv_metrics. */
typedef struct {
    const char *name;
    const char *architecture;
    const char *sha256;
    int is_default;
    double params;
    double test_accuracy;   /* < 0: unknown, rendered as NaN */
    int nclasses;
    const char *labels[SRV_METRICS_MAX_CLASSES];
} srv_metrics_model;

typedef struct srv_metrics srv_metrics;

/* nshards: how many threads get a shard of their own (later threads share
 * the last one, still correctly). NULL on allocation failure or bad sizes. */
srv_metrics *srv_metrics_create(const srv_metrics_model *models, int nmodels,
                                int nshards);
void srv_metrics_free(srv_metrics *m);

/* A finished request: route, HTTP status (0 = none sent), total time. */
void srv_metrics_request(srv_metrics *m, srv_route route, int status,
                         uint64_t us);
/* One image classified by model (index into models) in us microseconds. */
void srv_metrics_inference(srv_metrics *m, int model, uint64_t us, int cls);
/* Requests being handled right now: +1 when one starts, -1 when it ends. */
void srv_metrics_inflight_add(srv_metrics *m, int delta);

/* Appends the whole exposition. ready/draining are rendered as gauges. */
void srv_metrics_render(srv_metrics *m, srv_buf *out, int ready, int draining);

#endif
