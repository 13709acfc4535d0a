/* pool.h - per-thread workspaces: each request thread gets one srv_ws
 * (pipeline scratch for every served model) from a pool made at start-up,
 * so no request allocates forward-pass memory and none takes a lock.
 *
 *   srv_pool *p = srv_pool_create(models, threads + 1);
 *   ... on a request thread:
 *   srv_ws *w = srv_pool_get(p);          // the same one on every call
 *   pipe_run_png(models->m[k].ens, w->ws[k], ...);
 *   ... after every thread that used it has stopped:
 *   srv_pool_free(p);
 *
 * A thread beyond the pool (not expected: the pool is sized to the
 * daemon's threads) makes its own workspace once, owned by the pool.
 */
#ifndef SERVER_POOL_H
#define SERVER_POOL_H

#include "models.h"
#include "pipeline/pipeline.h"

/* One thread's scratch: ws[k] for model k of the srv_models it was made
 * for (batches of one image). */
typedef struct {
    int n;
    pipe_ws *ws[SRV_MAX_MODELS];
} srv_ws;

/* A workspace of its own (e.g. for the warm-up). NULL when out of memory.
 * srv_ws_free(NULL) does nothing. */
srv_ws *srv_ws_create(const srv_models *ms);
void srv_ws_free(srv_ws *w);

typedef struct srv_pool srv_pool;

/* n workspaces for ms (which must outlive the pool). NULL when out of
 * memory. srv_pool_free(NULL) does nothing. */
srv_pool *srv_pool_create(const srv_models *ms, int n);
void srv_pool_free(srv_pool *p);

/* The calling thread's workspace, or NULL when out of memory. */
srv_ws *srv_pool_get(srv_pool *p);

#endif
