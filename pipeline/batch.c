/* batch.c - see batch.h. One mutex guards the queue and the counters.
 * Every waiting request sleeps on a condition variable of its own (on
 * CLOCK_MONOTONIC), so each change wakes exactly the thread it concerns:
 * a finished batch wakes its requests' owners, a queued image or a freed
 * executor wakes the leader. No broadcast: at a few thousand requests a
 * second a herd of threads waking to re-check the queue costs more than
 * the batch saves.
 *
 * The leader is always the owner of the request at the head of the
 * queue: the first request to find no leader leads and is the head (the
 * queue is empty then, or its head's owner was made leader); a leader
 * takes its batch from the head, so its own request is always in it, and
 * hands the role to the owner of the new head, if any. */
#include "pipeline/batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One request's chunk of images, queued until a leader takes it. Lives on
 * the requesting thread's stack, and so does its condition variable. */
typedef struct item {
    struct item *next;
    pipe_dtype dtype;
    const void *x; /* [n, 784] */
    int n;
    pipe_result *res;
    uint64_t t_enq; /* us, CLOCK_MONOTONIC */
    int lead;       /* its owner leads (it is the head of the queue) */
    int done;
    pthread_cond_t cv; /* its owner sleeps here */
} item;

/* One batch running at a time in each: a workspace of max_size images. */
typedef struct {
    pipe_ws *ws;
    float *x;         /* [max_size, 784] the packed inputs */
    pipe_result *res; /* [max_size] their answers */
    item **items;     /* [max_size] the requests in the batch */
    int busy;
} executor;

struct pipe_batcher {
    const nn_ensemble *e;
    pipe_batch_opts o;
    pthread_mutex_t mu;
    pthread_condattr_t ca; /* CLOCK_MONOTONIC, for every item's cv */
    item *head, *tail;     /* queued, not yet taken */
    int queued;            /* images queued */
    int incoming;          /* images announced, not yet queued */
    int running;           /* batches running */
    int closed;
    int waiting; /* the leader sleeps: 1 to fill, 2 for an executor */
    executor *ex;
    pipe_batch_stats st;
};

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

pipe_batcher *pipe_batcher_create(const nn_ensemble *e, const pipe_batch_opts *o)
{
    if (!e || !o || o->max_size < 1 || o->max_size > PIPE_BATCH_MAX_SIZE ||
        o->delay_us > PIPE_BATCH_MAX_DELAY_US || o->executors < 1)
        return NULL;
    pipe_batcher *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->e = e;
    b->o = *o;
    if (pthread_condattr_init(&b->ca) != 0) {
        free(b);
        return NULL;
    }
    if (pthread_condattr_setclock(&b->ca, CLOCK_MONOTONIC) != 0 ||
        pthread_mutex_init(&b->mu, NULL) != 0) {
        pthread_condattr_destroy(&b->ca);
        free(b);
        return NULL;
    }
    b->ex = calloc((size_t)o->executors, sizeof *b->ex);
    if (!b->ex) {
        pipe_batcher_free(b);
        return NULL;
    }
    size_t m = (size_t)o->max_size;
    for (int i = 0; i < o->executors; i++) {
        executor *x = &b->ex[i];
        x->ws = pipe_ws_create(e, o->max_size);
        x->x = malloc(sizeof *x->x * PIPE_PIXELS * m);
        x->res = malloc(sizeof *x->res * m);
        x->items = malloc(sizeof *x->items * m);
        if (!x->ws || !x->x || !x->res || !x->items) {
            pipe_batcher_free(b);
            return NULL;
        }
    }
    return b;
}

void pipe_batcher_free(pipe_batcher *b)
{
    if (!b) return;
    for (int i = 0; b->ex && i < b->o.executors; i++) {
        pipe_ws_free(b->ex[i].ws);
        free(b->ex[i].x);
        free(b->ex[i].res);
        free(b->ex[i].items);
    }
    free(b->ex);
    pthread_condattr_destroy(&b->ca);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* The leader, if it sleeps (to fill its batch, or for an executor),
 * re-checks. mu held. */
static void wake_leader(pipe_batcher *b)
{
    if (b->waiting) pthread_cond_signal(&b->head->cv);
}

/* A leader waiting to fill stops when the batch is full or no announced
 * image is still on its way. */
static void wake_filled(pipe_batcher *b)
{
    if (b->waiting == 1 && (b->queued >= b->o.max_size || b->incoming == 0)) wake_leader(b);
}

void pipe_batcher_expect(pipe_batcher *b, int delta)
{
    pthread_mutex_lock(&b->mu);
    b->incoming += delta;
    if (b->incoming < 0) b->incoming = 0;
    if (delta < 0) wake_filled(b);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_close(pipe_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    wake_leader(b);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_stats(pipe_batcher *b, pipe_batch_stats *st)
{
    pthread_mutex_lock(&b->mu);
    *st = b->st;
    st->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}

static void wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_us)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_us / 1000000u),
                          .tv_nsec = (long)(deadline_us % 1000000u) * 1000};
    int rc = pthread_cond_timedwait(cv, mu, &ts);
    (void)rc; /* ETIMEDOUT or a wake-up: the caller re-checks either way */
}

/* Packs the inputs of the batch's items into x->x and their entry states
 * into x->res; returns the images. */
static int pack(executor *x, int nitems)
{
    int k = 0;
    for (int j = 0; j < nitems; j++) {
        const item *it = x->items[j];
        for (int i = 0; i < it->n; i++, k++) {
            float *dst = x->x + (size_t)k * PIPE_PIXELS;
            x->res[k] = it->res[i]; /* its status on entry */
            if (it->res[i].status != PIPE_OK) {
                memset(dst, 0, sizeof *dst * PIPE_PIXELS);
                continue;
            }
            size_t at = (size_t)i * PIPE_PIXELS;
            if (it->dtype == PIPE_U8) {
                const uint8_t *src = (const uint8_t *)it->x + at;
                for (int q = 0; q < PIPE_PIXELS; q++) dst[q] = src[q] / 255.0f;
            } else {
                memcpy(dst, (const float *)it->x + at, sizeof *dst * PIPE_PIXELS);
            }
        }
    }
    return k;
}

/* The leader's turn (mu held, me = b->head with me->lead set): gathers,
 * runs and answers one batch that holds me. Returns with mu held and
 * me->done set.
 *
 * Work first: a batch waits to fill only when it takes the last free
 * executor - while another one is idle, a core would idle with images
 * queued, which costs more than any batch saves on a CPU (a batch of 4
 * saves a sixth to a quarter of the per-image time, measured in
 * bench/README.md). Likewise, with k executors free it takes only its
 * share, ceil(queued / k) images, and the next leader takes the rest to
 * another core. */
static void lead(pipe_batcher *b, item *me)
{
    for (;;) {
        int free_ex = b->o.executors - b->running;
        if (free_ex < 1) { /* an executor; the queue grows meanwhile */
            b->waiting = 2;
            pthread_cond_wait(&me->cv, &b->mu);
            b->waiting = 0;
            continue;
        }
        if (b->closed || b->queued >= b->o.max_size || b->incoming == 0 || free_ex > 1) break;
        uint64_t deadline = me->t_enq + b->o.delay_us;
        if (now_us() >= deadline) break;
        b->waiting = 1;
        wait_until(&me->cv, &b->mu, deadline);
        b->waiting = 0;
    }
    int free_ex = b->o.executors - b->running;
    executor *x = NULL;
    for (int i = 0; i < b->o.executors; i++)
        if (!b->ex[i].busy) {
            x = &b->ex[i];
            break;
        }
    /* Whole items from the front (me first: it is the head), up to its
     * share of the queue and max_size images. */
    int share = (b->queued + free_ex - 1) / free_ex;
    if (share > b->o.max_size) share = b->o.max_size;
    int nitems = 0, images = 0;
    uint64_t t = now_us();
    while (b->head && (nitems == 0 || images + b->head->n <= share)) {
        item *it = b->head;
        b->head = it->next;
        if (!b->head) b->tail = NULL;
        images += it->n;
        b->queued -= it->n;
        x->items[nitems++] = it;
    }
    me->lead = 0;
    x->busy = 1;
    b->running++;
    b->st.batches++;
    b->st.images += (uint64_t)images;
    if (images > b->st.max_seen) b->st.max_seen = images;
    if (b->head) { /* the next leader starts gathering */
        b->head->lead = 1;
        pthread_cond_signal(&b->head->cv);
    }
    pthread_mutex_unlock(&b->mu);

    /* Outside the lock: the taken items belong to this thread now, their
     * owners only wait for done. */
    int k = pack(x, nitems);
    pipe_forward(b->e, x->ws, x->x, k, x->res);
    k = 0;
    int first = 1;
    for (int j = 0; j < nitems; j++) {
        item *it = x->items[j];
        uint64_t wait = t - it->t_enq;
        for (int i = 0; i < it->n; i++, k++) {
            pipe_result *r = &it->res[i];
            if (r->status != PIPE_OK) continue; /* failed before it came */
            uint64_t decode = r->decode_us, prep = r->prep_us;
            *r = x->res[k];
            r->decode_us = decode;
            r->prep_us = prep;
            r->batch_size = images;
            r->batch_first = first;
            first = 0;
            r->queue_us = wait;
        }
    }

    pthread_mutex_lock(&b->mu);
    for (int j = 0; j < nitems; j++) {
        item *it = x->items[j];
        it->done = 1;
        if (it != me) pthread_cond_signal(&it->cv);
    }
    x->busy = 0;
    b->running--;
    wake_leader(b); /* if it waits for an executor */
}

void pipe_batcher_run(pipe_batcher *b, pipe_dtype dtype, const void *x, int n, pipe_result *res,
                      int announced)
{
    size_t esize = dtype == PIPE_U8 ? sizeof(uint8_t) : sizeof(float);
    for (int i0 = 0; i0 < n; i0 += b->o.max_size) {
        int m = n - i0 < b->o.max_size ? n - i0 : b->o.max_size;
        item it = {.dtype = dtype,
                   .x = (const uint8_t *)x + (size_t)i0 * PIPE_PIXELS * esize,
                   .n = m,
                   .res = res + i0};
        /* Cannot fail on Linux with a valid attribute; without it, the
         * thread could not wait at all. */
        if (pthread_cond_init(&it.cv, &b->ca) != 0) abort();
        pthread_mutex_lock(&b->mu);
        if (i0 == 0) {
            b->incoming -= announced;
            if (b->incoming < 0) b->incoming = 0;
        }
        it.t_enq = now_us();
        if (b->tail) {
            b->tail->next = &it;
        } else {
            b->head = &it;
            it.lead = 1; /* no queue, so no leader: lead */
        }
        b->tail = &it;
        b->queued += m;
        wake_filled(b);
        while (!it.done) {
            if (it.lead)
                lead(b, &it);
            else
                pthread_cond_wait(&it.cv, &b->mu);
        }
        pthread_mutex_unlock(&b->mu);
        pthread_cond_destroy(&it.cv);
    }
}
