/* pool.c - see pool.h. */
#include "server/pool.h"
#include "server/log.h"

#include <stdatomic.h>
#include <stdlib.h>

struct srv_pool {
    unsigned id; /* tells this pool's thread-local slot apart */
    int n;
    atomic_int next;
};

static atomic_uint next_pool_id = 1;
static _Thread_local int tls_slot;
static _Thread_local unsigned tls_owner;

srv_pool *srv_pool_create(int n)
{
    if (n < 1) return NULL;
    srv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->id = atomic_fetch_add(&next_pool_id, 1);
    p->n = n;
    return p;
}

void srv_pool_free(srv_pool *p) { free(p); }

int srv_pool_size(const srv_pool *p) { return p->n; }

int srv_pool_slot(srv_pool *p)
{
    if (tls_owner == p->id) return tls_slot;
    int i = atomic_fetch_add(&p->next, 1);
    if (i >= p->n) {
        srv_log(SRV_WARN,
                "thread %d beyond the pool of %d: its requests "
                "make their own workspace",
                i, p->n);
        i = -1;
    }
    tls_slot = i;
    tls_owner = p->id;
    return i;
}
