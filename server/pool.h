/* pool.h - worker slots: each request thread gets a slot number, the same
 * on every call, from a pool sized at start-up. Every loaded model carries
 * one workspace per slot (srv_model_ws in registry.h), made when the model
 * loads, so no request allocates forward-pass memory and none takes a
 * lock, however often models are reloaded.
 *
 *   srv_pool *p = srv_pool_create(threads + 1);
 *   ... on a request thread:
 *   int slot = srv_pool_slot(p);            // -1 beyond the pool
 *   pipe_ws *ws = srv_model_ws(m, slot);    // NULL for -1
 *   ... after every thread that used it has stopped:
 *   srv_pool_free(p);
 *
 * A thread beyond the pool (not expected: the pool is sized to the
 * daemon's threads) gets -1 and the caller makes a workspace for the
 * request (srv_pool_slot logs this once).
 */
#ifndef SERVER_POOL_H
#define SERVER_POOL_H

typedef struct srv_pool srv_pool;

/* n slots. NULL when out of memory or n < 1. srv_pool_free(NULL) does
 * nothing. */
srv_pool *srv_pool_create(int n);
void srv_pool_free(srv_pool *p);

/* Slots in the pool. */
int srv_pool_size(const srv_pool *p);

/* The calling thread's slot 0..n-1, or -1 beyond the pool. */
int srv_pool_slot(srv_pool *p);

#endif
