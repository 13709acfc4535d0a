/* batch.c - see batch.h. One mutex guards the queue, the executors and
 * the counters. Runner threads sleep on one condition variable (a queued
 * image, a freed executor, an announcement taken back, close, stop); a
 * request that waits for its answers (pipe_batcher_run) sleeps on a
 * condition variable of its own, so a finished batch wakes exactly the
 * threads it answered.
 *
 * Who runs a batch: the submitting thread itself when its images are the
 * whole queue and may run at once (no hand-off, no context switch: a
 * lone request at low load costs what it costs unbatched); otherwise one
 * of the runner threads, one per executor. */
#include "pipeline/batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One request's chunk of images, queued until a batch takes it. A waiting
 * request's item lives on its stack (done and cv: its owner sleeps on
 * cv until done); a submitted one is malloc'ed and freed by whoever runs
 * it, after calling done_fn. */
typedef struct item {
    struct item *next;
    pipe_dtype dtype;
    const void *x; /* [n, 784] */
    int n;
    pipe_result *res;
    uint64_t t_enq;          /* us, CLOCK_MONOTONIC */
    pipe_batch_done done_fn; /* NULL: its owner waits on cv */
    void *ctx;
    int done;
    pthread_cond_t cv;
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
    pthread_condattr_t ca; /* CLOCK_MONOTONIC, for every cv */
    pthread_cond_t work;   /* the runners sleep here */
    item *head, *tail;     /* queued, not yet taken */
    int queued;            /* images queued */
    int incoming;          /* images announced, not yet queued */
    int running;           /* batches running */
    int closed, stop;
    executor *ex;
    pthread_t *runner;
    int nrunners; /* started */
    pipe_batch_stats st;
};

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void *runner_main(void *arg);

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
    if (pthread_cond_init(&b->work, &b->ca) != 0) {
        pthread_mutex_destroy(&b->mu);
        pthread_condattr_destroy(&b->ca);
        free(b);
        return NULL;
    }
    b->ex = calloc((size_t)o->executors, sizeof *b->ex);
    b->runner = calloc((size_t)o->executors, sizeof *b->runner);
    if (!b->ex || !b->runner) {
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
    for (int i = 0; i < o->executors; i++) {
        if (pthread_create(&b->runner[i], NULL, runner_main, b) != 0) {
            pipe_batcher_free(b);
            return NULL;
        }
        b->nrunners++;
    }
    return b;
}

void pipe_batcher_free(pipe_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->nrunners; i++) pthread_join(b->runner[i], NULL);
    for (int i = 0; b->ex && i < b->o.executors; i++) {
        pipe_ws_free(b->ex[i].ws);
        free(b->ex[i].x);
        free(b->ex[i].res);
        free(b->ex[i].items);
    }
    free(b->ex);
    free(b->runner);
    pthread_cond_destroy(&b->work);
    pthread_condattr_destroy(&b->ca);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void pipe_batcher_expect(pipe_batcher *b, int delta)
{
    pthread_mutex_lock(&b->mu);
    b->incoming += delta;
    if (b->incoming < 0) b->incoming = 0;
    /* A runner waiting to fill may stop waiting. */
    if (delta < 0 && b->head) pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_close(pipe_batcher *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
}

void pipe_batcher_stats(pipe_batcher *b, pipe_batch_stats *st)
{
    pthread_mutex_lock(&b->mu);
    *st = b->st;
    st->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}

/* Whether the head of the queue may run now (mu held, head and a free
 * executor present). Work first: a batch waits to fill only when it would
 * take the last free executor - while another one is idle, a core would
 * idle with images queued, which costs more than any batch saves on a
 * CPU (bench/README.md: a batch of 16 saves at most a sixth of the
 * per-image time). Then it waits until max_size images are queued, or no
 * announced image is still on its way, or the head has waited delay_us
 * (*deadline, for the caller's timed wait), or the batcher closes. */
static int may_run(pipe_batcher *b, uint64_t *deadline)
{
    int free_ex = b->o.executors - b->running;
    if (b->closed || b->stop || b->queued >= b->o.max_size || b->incoming == 0 || free_ex > 1)
        return 1;
    *deadline = b->head->t_enq + b->o.delay_us;
    return now_us() >= *deadline;
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

/* Takes one batch from the head of the queue onto a free executor and
 * runs it (mu held on entry and on return; released while the batch
 * runs). With k executors free it takes only its share, ceil(queued / k)
 * images, so the next batch can take the rest to another core; always
 * whole items, at least one, at most max_size images. Answers every item
 * it took: a waiting owner is woken, a submitted item's done_fn is
 * called (without mu) and the item freed. */
static void run_batch(pipe_batcher *b)
{
    int free_ex = b->o.executors - b->running;
    executor *x = NULL;
    for (int i = 0; i < b->o.executors; i++)
        if (!b->ex[i].busy) {
            x = &b->ex[i];
            break;
        }
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
    x->busy = 1;
    b->running++;
    b->st.batches++;
    b->st.images += (uint64_t)images;
    if (images > b->st.max_seen) b->st.max_seen = images;
    /* Another runner may take what is left to another executor. */
    if (b->head) pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);

    /* Outside the lock: the taken items belong to this thread now. */
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
    /* Submitted items first, without the lock: done_fn may take the
     * caller's own locks (a web server resuming a connection). */
    for (int j = 0; j < nitems; j++) {
        item *it = x->items[j];
        if (!it->done_fn) continue;
        it->done_fn(it->ctx);
        free(it);
        x->items[j] = NULL;
    }

    pthread_mutex_lock(&b->mu);
    for (int j = 0; j < nitems; j++) {
        item *it = x->items[j];
        if (!it) continue;
        it->done = 1;
        pthread_cond_signal(&it->cv);
    }
    x->busy = 0;
    b->running--;
    if (b->head) pthread_cond_signal(&b->work); /* a freed executor */
}

static void *runner_main(void *arg)
{
    pipe_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (!b->head || b->running >= b->o.executors) {
            pthread_cond_wait(&b->work, &b->mu);
            continue;
        }
        uint64_t deadline = 0;
        if (!may_run(b, &deadline)) {
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000u),
                                  .tv_nsec = (long)(deadline % 1000000u) * 1000};
            int rc = pthread_cond_timedwait(&b->work, &b->mu, &ts);
            (void)rc; /* ETIMEDOUT or a wake-up: re-check either way */
            continue;
        }
        run_batch(b);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Queues it (mu held). */
static void enqueue(pipe_batcher *b, item *it)
{
    it->t_enq = now_us();
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->queued += it->n;
}

/* Whether the submitting thread may run its own item now (mu held, it
 * just queued): when the batcher is idle (its item the whole queue, no
 * batch running) and it may run at once - what a runner would do next,
 * without the hand-off. While a batch runs, the image queues instead, so
 * that under load the queue builds up and a runner takes it as a batch;
 * a thread that ran its own image would run it alone. */
static int own_turn(pipe_batcher *b, const item *it)
{
    uint64_t deadline;
    return b->head == it && !it->next && b->running == 0 && may_run(b, &deadline);
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
        enqueue(b, &it);
        if (own_turn(b, &it)) {
            run_batch(b);
        } else {
            pthread_cond_signal(&b->work);
            while (!it.done) pthread_cond_wait(&it.cv, &b->mu);
        }
        pthread_mutex_unlock(&b->mu);
        pthread_cond_destroy(&it.cv);
    }
}

int pipe_batcher_submit(pipe_batcher *b, pipe_dtype dtype, const void *x, int n, pipe_result *res,
                        int announced, pipe_batch_done done, void *ctx)
{
    if (n < 1 || n > b->o.max_size || !done) return -1;
    item *it = calloc(1, sizeof *it);
    if (!it) return -1;
    *it = (item){.dtype = dtype, .x = x, .n = n, .res = res, .done_fn = done, .ctx = ctx};
    pthread_mutex_lock(&b->mu);
    b->incoming -= announced;
    if (b->incoming < 0) b->incoming = 0;
    enqueue(b, it);
    if (own_turn(b, it)) {
        /* Run it here, answered before return: done is not called. */
        it->done_fn = NULL;
        if (pthread_cond_init(&it->cv, &b->ca) != 0) abort();
        run_batch(b);
        pthread_mutex_unlock(&b->mu);
        pthread_cond_destroy(&it->cv);
        free(it);
        return 1;
    }
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    return 0;
}
