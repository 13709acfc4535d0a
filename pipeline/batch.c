/* batch.c - see batch.h. One mutex guards the queue and the counters; one
 * condition variable (on CLOCK_MONOTONIC) is broadcast on every change a
 * waiter may be waiting for: an item queued, the collecting role handed
 * on, a batch finished, the batcher closed. The waiters are the request
 * threads of one model, a few dozen at most, so a broadcast costs little
 * and keeps the protocol simple. */
#include "pipeline/batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One request's chunk of images, queued until a leader takes it. Lives on
 * the requesting thread's stack. */
typedef struct item {
    struct item *next;
    pipe_dtype dtype;
    const void *x; /* [n, 784] */
    int n;
    pipe_result *res;
    uint64_t t_enq; /* us, CLOCK_MONOTONIC */
    int taken, done;
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
    pthread_cond_t cv;
    item *head, *tail; /* queued, not yet taken */
    int queued;        /* images queued */
    int incoming;      /* images announced, not yet queued */
    int collecting;    /* a leader is gathering the next batch */
    int running;       /* batches running */
    int closed;
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
    pthread_condattr_t ca;
    int cv_ok = pthread_condattr_init(&ca) == 0;
    if (cv_ok) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&b->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!cv_ok) {
        free(b);
        return NULL;
    }
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        pthread_cond_destroy(&b->cv);
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
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void pipe_batcher_expect(pipe_batcher *b, int delta)
{
    pthread_mutex_lock(&b->mu);
    b->incoming += delta;
    if (b->incoming < 0) b->incoming = 0;
    /* Fewer on their way: a leader may stop waiting. */
    if (delta < 0) pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_close(pipe_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_stats(pipe_batcher *b, pipe_batch_stats *st)
{
    pthread_mutex_lock(&b->mu);
    *st = b->st;
    st->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}

static void wait_until(pipe_batcher *b, uint64_t deadline_us)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_us / 1000000u),
                          .tv_nsec = (long)(deadline_us % 1000000u) * 1000};
    int rc = pthread_cond_timedwait(&b->cv, &b->mu, &ts);
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

/* The leader's turn (mu held, b->collecting set by the caller): gathers,
 * runs and answers one batch. Returns with mu held. */
static void lead(pipe_batcher *b)
{
    for (;;) { /* gather */
        if (b->closed || b->queued >= b->o.max_size || b->incoming == 0) break;
        uint64_t deadline = b->head->t_enq + b->o.delay_us;
        if (now_us() >= deadline) break;
        wait_until(b, deadline);
    }
    while (b->running >= b->o.executors) /* a free executor; the queue grows */
        pthread_cond_wait(&b->cv, &b->mu);
    executor *x = NULL;
    for (int i = 0; i < b->o.executors; i++)
        if (!b->ex[i].busy) {
            x = &b->ex[i];
            break;
        }
    /* Whole items from the front, up to max_size images (the first always
     * fits: items are at most max_size). */
    int nitems = 0, images = 0;
    uint64_t t = now_us();
    while (b->head && images + b->head->n <= b->o.max_size) {
        item *it = b->head;
        b->head = it->next;
        if (!b->head) b->tail = NULL;
        it->taken = 1;
        images += it->n;
        b->queued -= it->n;
        x->items[nitems++] = it;
    }
    x->busy = 1;
    b->running++;
    b->collecting = 0;
    b->st.batches++;
    b->st.images += (uint64_t)images;
    if (images > b->st.max_seen) b->st.max_seen = images;
    pthread_cond_broadcast(&b->cv); /* the next leader may start gathering */
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
    for (int j = 0; j < nitems; j++) x->items[j]->done = 1;
    x->busy = 0;
    b->running--;
    pthread_cond_broadcast(&b->cv);
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
        pthread_mutex_lock(&b->mu);
        if (i0 == 0) {
            b->incoming -= announced;
            if (b->incoming < 0) b->incoming = 0;
        }
        it.t_enq = now_us();
        if (b->tail)
            b->tail->next = &it;
        else
            b->head = &it;
        b->tail = &it;
        b->queued += m;
        pthread_cond_broadcast(&b->cv);
        while (!it.done) {
            if (!it.taken && !b->collecting) {
                b->collecting = 1;
                lead(b);
            } else {
                pthread_cond_wait(&b->cv, &b->mu);
            }
        }
        pthread_mutex_unlock(&b->mu);
    }
}
