/* pool.c - see pool.h. */
#include "pool.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_EXTRA 64

struct srv_pool {
    const srv_models *models;
    unsigned id;              /* tells this pool's thread-local slot apart */
    srv_ws **ws;
    int n;
    atomic_int next;
    pthread_mutex_t extra_mu;
    srv_ws *extra[MAX_EXTRA];
    int nextra;
};

static atomic_uint next_pool_id = 1;
static _Thread_local srv_ws *tls_ws;
static _Thread_local unsigned tls_owner;

srv_ws *srv_ws_create(const srv_models *ms)
{
    srv_ws *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    for (int k = 0; k < ms->n; k++) {
        w->ws[k] = pipe_ws_create(ms->m[k].ens, 1);
        if (!w->ws[k]) {
            srv_ws_free(w);
            return NULL;
        }
        w->n = k + 1;
    }
    return w;
}

void srv_ws_free(srv_ws *w)
{
    if (!w)
        return;
    for (int k = 0; k < w->n; k++)
        pipe_ws_free(w->ws[k]);
    free(w);
}

srv_pool *srv_pool_create(const srv_models *ms, int n)
{
    srv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->models = ms;
    p->id = atomic_fetch_add(&next_pool_id, 1);
    pthread_mutex_init(&p->extra_mu, NULL);
    p->ws = calloc((size_t)n, sizeof *p->ws);
    if (!p->ws) {
        srv_pool_free(p);
        return NULL;
    }
    for (; p->n < n; p->n++) {
        p->ws[p->n] = srv_ws_create(ms);
        if (!p->ws[p->n]) {
            srv_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void srv_pool_free(srv_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        srv_ws_free(p->ws[i]);
    for (int i = 0; i < p->nextra; i++)
        srv_ws_free(p->extra[i]);
    free(p->ws);
    pthread_mutex_destroy(&p->extra_mu);
    free(p);
}

srv_ws *srv_pool_get(srv_pool *p)
{
    if (tls_ws && tls_owner == p->id)
        return tls_ws;
    int i = atomic_fetch_add(&p->next, 1);
    srv_ws *w = NULL;
    if (i < p->n) {
        w = p->ws[i];
    } else {
        w = srv_ws_create(p->models);
        if (!w)
            return NULL;
        pthread_mutex_lock(&p->extra_mu);
        int ok = p->nextra < MAX_EXTRA;
        if (ok)
            p->extra[p->nextra++] = w;
        pthread_mutex_unlock(&p->extra_mu);
        if (!ok) {
            srv_ws_free(w);
            return NULL;
        }
        srv_log(SRV_WARN, "thread %d beyond the pool of %d made its own workspace", i, p->n);
    }
    tls_ws = w;
    tls_owner = p->id;
    return w;
}
