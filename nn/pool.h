/* pool.h - a fixed set of worker threads that run one function in parallel.
 *
 *   nn_pool *p = nn_pool_create(2);
 *   nn_pool_run(p, fn, arg);   // calls fn(arg, t, 2) for t = 0, 1; waits
 *   nn_pool_free(p);
 *
 * The calling thread runs task 0 itself, so a pool of one has no threads.
 */
#ifndef NN_POOL_H
#define NN_POOL_H

typedef struct nn_pool nn_pool;
typedef void (*nn_pool_fn)(void *arg, int t, int nthreads);

/* NULL on failure (threads or memory). */
nn_pool *nn_pool_create(int nthreads);
void nn_pool_free(nn_pool *p);
void nn_pool_run(nn_pool *p, nn_pool_fn fn, void *arg);

/* Number of online CPUs (at least 1). */
int nn_cpu_count(void);

#endif
