/* test_batch.c - dynamic batching (pipeline/batch.h): a batch's answers
 * are exactly the forward pass of that batch, each request gets its own
 * images' answers, in order; batches respect max_size, a batch waits for
 * announced images no longer than the delay, close() releases waiters,
 * and one image's failure stays its own.
 *
 * Batched against single answers: the kernels may sum in another order
 * for another batch size (nn/gemm.h: batch-1 dense layers take a
 * dot-product path), so those agree within TOL_PROB, not bit for bit.
 * Reordering a float sum of K products moves it by at most gamma(K) of
 * the sum of the products' magnitudes (tests/unit/tol.h); the largest
 * fan-in of the shipped models is 64*5*5 = 1600, gamma(1600) = 9.5e-5.
 * Probabilities lie in 0..1 and softmax moves each by at most half the
 * largest change of a logit, so 1e-4 bounds what reordering does to
 * well-conditioned final sums; the answer of another image differs by
 * orders of magnitude more. Within one batch composition the forward is
 * deterministic: there the answers are compared bit for bit. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/batch.h"
#include "pipeline/pipeline.h"
#include "tol.h"

#define TOL_PROB 1e-4
#define NIMG 24

static uint8_t images[NIMG][PIPE_PIXELS];

/* Distinct images: a stroke whose place and slant depend on i, plus a
 * sprinkle of noise, so every image gets its own probabilities. */
static void make_images(void)
{
    uint32_t s = 12345;
    for (int i = 0; i < NIMG; i++) {
        memset(images[i], 0, PIPE_PIXELS);
        for (int y = 5; y < 23; y++) {
            int x = 8 + i % 12 + (y * (i % 5)) / 9;
            for (int d = 0; d < 3; d++)
                if (x + d < PIPE_SIDE) images[i][y * PIPE_SIDE + x + d] = 255;
        }
        for (int q = 0; q < 40; q++) {
            s = s * 1103515245u + 12345u;
            images[i][(s >> 8) % PIPE_PIXELS] = (uint8_t)(s >> 24);
        }
    }
}

static nn_ensemble *load(const char *path)
{
    char err[256];
    nn_ensemble *e = pipe_model_load(path, err, sizeof err);
    if (!e) fail_msg("%s", err);
    return e;
}

/* Answers of images[first..first+n) as one forward pass of n. */
static void reference(const nn_ensemble *e, int first, int n, pipe_result *out)
{
    pipe_ws *ws = pipe_ws_create(e, n);
    assert_non_null(ws);
    float *x = malloc(sizeof *x * PIPE_PIXELS * (size_t)n);
    assert_non_null(x);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < PIPE_PIXELS; q++)
            x[(size_t)i * PIPE_PIXELS + q] = images[first + i][q] / 255.0f;
        memset(&out[i], 0, sizeof out[i]);
    }
    pipe_forward(e, ws, x, n, out);
    free(x);
    pipe_ws_free(ws);
}

static void assert_same_answer(const pipe_result *got, const pipe_result *want, int exact)
{
    assert_int_equal(got->status, PIPE_OK);
    assert_int_equal(got->nclasses, want->nclasses);
    assert_int_equal(got->prediction, want->prediction);
    assert_string_equal(got->label, want->label);
    for (int c = 0; c < want->nclasses; c++) {
        if (exact) {
            if (memcmp(&got->probs[c], &want->probs[c], sizeof(float)) != 0)
                fail_msg("class %d: %.9g, forward of the same batch %.9g", c, (double)got->probs[c],
                         (double)want->probs[c]);
        } else if (!(fabs((double)got->probs[c] - (double)want->probs[c]) <= TOL_PROB)) {
            fail_msg("class %d: %.9g, alone %.9g", c, (double)got->probs[c],
                     (double)want->probs[c]);
        }
    }
    assert_int_equal(got->has_ood, want->has_ood);
    if (exact && got->has_ood)
        assert_memory_equal(&got->ood_score, &want->ood_score, sizeof(float));
}

/* One request of 8 images with max_size 3 runs as chunks of 3, 3, 2 in
 * order: each answer is bit for bit the forward pass of its chunk. The
 * default CNN, the model the server runs by default. */
static void test_chunks_are_their_forward_pass(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/cnn.safetensors");
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 3, .delay_us = 100000, .executors = 1});
    assert_non_null(b);
    pipe_result res[8], want[8];
    memset(res, 0, sizeof res);
    pipe_batcher_run(b, PIPE_U8, images, 8, res, 0);
    reference(e, 0, 3, want);
    reference(e, 3, 3, want + 3);
    reference(e, 6, 2, want + 6);
    static const int size[8] = {3, 3, 3, 3, 3, 3, 2, 2};
    for (int i = 0; i < 8; i++) {
        assert_same_answer(&res[i], &want[i], 1);
        assert_int_equal(res[i].batch_size, size[i]);
        assert_int_equal(res[i].batch_first, i % 3 == 0);
    }
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.batches, 3);
    assert_int_equal(st.images, 8);
    assert_int_equal(st.max_seen, 3);
    assert_int_equal(st.queued, 0);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* The float entrance through a workspace's batcher: a failing image
 * (not 0..1) keeps its own error, the others in the same request are
 * answered as a forward pass of all of them (the failing one as zeros). */
static void test_failure_stays_its_own(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    pipe_batcher *b =
        pipe_batcher_create(e, &(pipe_batch_opts){.max_size = 4, .delay_us = 1000, .executors = 1});
    pipe_ws *ws = pipe_ws_create(e, 1);
    assert_non_null(b);
    assert_non_null(ws);
    pipe_ws_set_batcher(ws, b);
    float x[3][PIPE_PIXELS];
    for (int i = 0; i < 3; i++)
        for (int q = 0; q < PIPE_PIXELS; q++) x[i][q] = images[i][q] / 255.0f;
    x[1][100] = NAN;
    pipe_result res[3];
    pipe_run_tensors(e, ws, PIPE_F32, x, 3, res);
    assert_int_equal(res[1].status, PIPE_INVALID_TENSOR);
    assert_non_null(strstr(res[1].msg, "pixel 100"));
    assert_int_equal(res[1].batch_size, 0);
    /* The reference: the same batch with image 1 zeroed. */
    pipe_ws *w3 = pipe_ws_create(e, 3);
    pipe_result want[3];
    memset(want, 0, sizeof want);
    memset(x[1], 0, sizeof x[1]);
    pipe_forward(e, w3, &x[0][0], 3, want);
    assert_same_answer(&res[0], &want[0], 1);
    assert_same_answer(&res[2], &want[2], 1);
    assert_int_equal(res[0].batch_size, 3);
    pipe_ws_free(w3);
    pipe_ws_free(ws);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* ---- many threads --------------------------------------------------------- */

typedef struct {
    pipe_batcher *b;
    int first, n; /* images[first .. first+n) */
    int announced;
    pipe_result res[4];
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    memset(j->res, 0, sizeof j->res);
    pipe_batcher_run(j->b, PIPE_U8, images[j->first], j->n, j->res, j->announced);
    return NULL;
}

/* Concurrent requests of one and two images, all announced up front:
 * each request gets the answers of its own images in its own order (the
 * same prediction as alone, probabilities within TOL_PROB), in batches of
 * at most max_size. With one executor the batches wait for the announced
 * images, so the batches are full but for a few; with two, an idle
 * executor never waits (test_idle_executor_runs_at_once), so how the
 * images group depends on the threads' timing and only the totals are
 * checked. */
static void concurrent_requests(int executors)
{
    nn_ensemble *e = load("models/lenet.safetensors");
    enum { NJOBS = 12, MAX = 5 };
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = MAX, .delay_us = 1000000, .executors = executors});
    assert_non_null(b);
    job jobs[NJOBS];
    pthread_t th[NJOBS];
    int first = 0, total = 0;
    for (int k = 0; k < NJOBS; k++) {
        jobs[k] = (job){.b = b, .first = first, .n = 1 + k % 2, .announced = 1 + k % 2};
        first += jobs[k].n;
        total += jobs[k].n;
    }
    assert_true(first <= NIMG);
    pipe_batcher_expect(b, total);
    for (int k = 0; k < NJOBS; k++)
        assert_int_equal(pthread_create(&th[k], NULL, run_job, &jobs[k]), 0);
    for (int k = 0; k < NJOBS; k++) pthread_join(th[k], NULL);
    pipe_result alone[NIMG];
    for (int i = 0; i < first; i++) reference(e, i, 1, &alone[i]);
    int firsts = 0;
    for (int k = 0; k < NJOBS; k++)
        for (int i = 0; i < jobs[k].n; i++) {
            const pipe_result *r = &jobs[k].res[i];
            assert_same_answer(r, &alone[jobs[k].first + i], r->batch_size == 1);
            assert_in_range(r->batch_size, 1, MAX);
            assert_true(r->queue_us < 1000000); /* never the whole delay */
            firsts += r->batch_first;
        }
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.images, (uint64_t)total);
    assert_int_equal(st.batches, (uint64_t)firsts);
    assert_int_equal(st.queued, 0);
    assert_in_range(st.max_seen, 1, MAX);
    if (executors == 1) {
        assert_in_range(st.max_seen, 2, MAX); /* batching happened */
        /* Every image was announced: the batches are full but the last,
         * or cut short by a request that did not fit whole. */
        assert_true(st.batches <= (uint64_t)(total + MAX - 1) / MAX + NJOBS / 2);
    }
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

static void test_concurrent_requests_get_their_answers(void **state)
{
    (void)state;
    concurrent_requests(1);
    concurrent_requests(2);
}

/* Work first: with another executor idle, a batch does not wait for
 * announced images (a core would idle with an image queued); it runs at
 * once, alone. With its executor the last free one, it waits. */
static void test_idle_executor_runs_at_once(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    const uint64_t delay = PIPE_BATCH_MAX_DELAY_US;
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 8, .delay_us = delay, .executors = 2});
    assert_non_null(b);
    pipe_result res;
    memset(&res, 0, sizeof res);
    pipe_batcher_expect(b, 3); /* two more are on their way */
    pipe_batcher_run(b, PIPE_U8, images[0], 1, &res, 1);
    assert_int_equal(res.status, PIPE_OK);
    assert_int_equal(res.batch_size, 1);
    assert_true(res.queue_us < delay);
    pipe_batcher_expect(b, -2);
    pipe_batcher_free(b);

    /* One executor: the same request waits the delay for the others. */
    b = pipe_batcher_create(e,
                            &(pipe_batch_opts){.max_size = 8, .delay_us = 20000, .executors = 1});
    assert_non_null(b);
    memset(&res, 0, sizeof res);
    pipe_batcher_expect(b, 3);
    pipe_batcher_run(b, PIPE_U8, images[0], 1, &res, 1);
    assert_true(res.queue_us >= 20000);
    pipe_batcher_expect(b, -2);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* A batch waits for an announced image that never comes only until the
 * delay has passed (the delay is a lower bound of its wait: a correctness
 * property, not a speed measurement); alone and unannounced it waits for
 * nobody, so its wait stays far below a long delay. */
static void test_delay_bounds_the_wait(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    const uint64_t delay = 30000;
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 8, .delay_us = delay, .executors = 1});
    assert_non_null(b);
    pipe_result res, alone;
    memset(&res, 0, sizeof res);
    pipe_batcher_expect(b, 2); /* two announced, one comes */
    pipe_batcher_run(b, PIPE_U8, images[0], 1, &res, 1);
    assert_true(res.queue_us >= delay);
    assert_int_equal(res.batch_size, 1);
    reference(e, 0, 1, &alone);
    assert_same_answer(&res, &alone, 1);
    pipe_batcher_expect(b, -1); /* the other failed to decode */
    pipe_batcher_free(b);

    b = pipe_batcher_create(e,
                            &(pipe_batch_opts){.max_size = 8, .delay_us = 1000000, .executors = 1});
    assert_non_null(b);
    memset(&res, 0, sizeof res);
    pipe_batcher_run(b, PIPE_U8, images[0], 1, &res, 0);
    assert_true(res.queue_us < 1000000);
    assert_same_answer(&res, &alone, 1);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* Shutdown with waiters: requests waiting for images that will never come
 * (announced, a delay of a second) are answered once the batcher closes,
 * before the delay; requests after close are answered too. */
static void test_close_releases_waiters(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 16, .delay_us = PIPE_BATCH_MAX_DELAY_US, .executors = 1});
    assert_non_null(b);
    pipe_batcher_expect(b, 100);
    enum { N = 3 };
    job jobs[N];
    pthread_t th[N];
    for (int k = 0; k < N; k++) {
        jobs[k] = (job){.b = b, .first = k, .n = 1, .announced = 1};
        assert_int_equal(pthread_create(&th[k], NULL, run_job, &jobs[k]), 0);
    }
    pipe_batch_stats st;
    for (;;) { /* until all three wait in the queue */
        pipe_batcher_stats(b, &st);
        if (st.queued == N) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    assert_int_equal(st.batches, 0);
    pipe_batcher_close(b);
    for (int k = 0; k < N; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < N; k++) {
        assert_int_equal(jobs[k].res[0].status, PIPE_OK);
        assert_true(jobs[k].res[0].queue_us < PIPE_BATCH_MAX_DELAY_US);
    }
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.images, N);
    job late = {.b = b, .first = 5, .n = 1, .announced = 0};
    run_job(&late);
    assert_int_equal(late.res[0].status, PIPE_OK);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* The PNG entrance through a batcher answers as without one (alone: the
 * same batch of one, so bit for bit). */
static void test_png_through_batcher(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    uint16_t px[PIPE_PIXELS];
    for (int q = 0; q < PIPE_PIXELS; q++) px[q] = images[3][q];
    img_png_spec spec = {
        .width = PIPE_SIDE, .height = PIPE_SIDE, .color_type = 0, .bit_depth = 8, .samples = px};
    uint8_t *png = NULL;
    size_t len = 0;
    char err[128];
    assert_int_equal(img_png_encode(&spec, &png, &len, err, sizeof err), IMG_OK);
    pipe_ws *plain = pipe_ws_create(e, 1), *ws = pipe_ws_create(e, 1);
    pipe_batcher *b =
        pipe_batcher_create(e, &(pipe_batch_opts){.max_size = 4, .delay_us = 1000, .executors = 1});
    assert_non_null(b);
    pipe_ws_set_batcher(ws, b);
    pipe_result want, got, bad;
    pipe_run_png(e, plain, png, len, NULL, NULL, &want);
    pipe_run_png(e, ws, png, len, NULL, NULL, &got);
    assert_same_answer(&got, &want, 1);
    assert_int_equal(got.batch_size, 1);
    assert_int_equal(got.batch_first, 1);
    pipe_run_png(e, ws, (const uint8_t *)"not a png", 9, NULL, NULL, &bad);
    assert_int_equal(bad.status, PIPE_NOT_PNG);
    /* The failed decode took its announcement back: a lone request does
     * not wait for it. */
    pipe_run_png(e, ws, png, len, NULL, NULL, &got);
    assert_true(got.queue_us < 1000000);
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.batches, 2);
    pipe_ws_set_batcher(ws, NULL);
    pipe_run_png(e, ws, png, len, NULL, NULL, &got);
    assert_int_equal(got.batch_size, 0);
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.batches, 2);
    free(png);
    pipe_ws_free(plain);
    pipe_ws_free(ws);
    pipe_batcher_free(b);
    nn_ensemble_free(e);
}

/* Several PNGs of one request (/predict/batch): decoded first, then one
 * request in the batches - the answers are the forward pass of all of
 * them, failed ones as zeros, each failure its own. Without a batcher
 * each image runs alone, as pipe_run_png runs it. */
static void test_pngs_run_together(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    uint8_t *png[2];
    size_t len[2];
    for (int k = 0; k < 2; k++) {
        uint16_t px[PIPE_PIXELS];
        for (int q = 0; q < PIPE_PIXELS; q++) px[q] = images[k + 4][q];
        img_png_spec spec = {.width = PIPE_SIDE,
                             .height = PIPE_SIDE,
                             .color_type = 0,
                             .bit_depth = 8,
                             .samples = px};
        char err[128];
        assert_int_equal(img_png_encode(&spec, &png[k], &len[k], err, sizeof err), IMG_OK);
    }
    const uint8_t *in[4] = {png[0], (const uint8_t *)"junk", png[1], NULL};
    size_t inlen[4] = {len[0], 4, len[1], 0};
    pipe_ws *ws = pipe_ws_create(e, 1), *w4 = pipe_ws_create(e, 4);
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 8, .delay_us = 1000000, .executors = 1});
    assert_non_null(b);
    float x[4 * PIPE_PIXELS];
    pipe_result res[4], want[4], alone;
    for (int pass = 0; pass < 2; pass++) { /* batched, then not */
        pipe_ws_set_batcher(ws, pass == 0 ? b : NULL);
        memset(res, 0, sizeof res);
        res[3].status = PIPE_INVALID_BASE64; /* the caller's own failure */
        pipe_run_pngs(e, ws, 4, in, inlen, NULL, x, res);
        assert_int_equal(res[1].status, PIPE_NOT_PNG);
        assert_int_equal(res[3].status, PIPE_INVALID_BASE64);
        for (int q = 0; q < PIPE_PIXELS; q++) assert_true(x[PIPE_PIXELS + q] == 0.0f);
        if (pass == 0) {
            memset(want, 0, sizeof want);
            pipe_forward(e, w4, x, 4, want);
            assert_same_answer(&res[0], &want[0], 1);
            assert_same_answer(&res[2], &want[2], 1);
            assert_int_equal(res[0].batch_size, 4);
            assert_int_equal(res[0].batch_first, 1);
            assert_int_equal(res[2].batch_first, 0);
            assert_true(res[0].queue_us < 1000000); /* nothing announced is missing */
        } else {
            for (int k = 0; k < 2; k++) {
                pipe_run_png(e, ws, png[k], len[k], NULL, NULL, &alone);
                assert_same_answer(&res[2 * k], &alone, 1);
                assert_int_equal(res[2 * k].batch_size, 0);
            }
        }
    }
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.images, 4);
    pipe_ws_free(ws);
    pipe_ws_free(w4);
    pipe_batcher_free(b);
    free(png[0]);
    free(png[1]);
    nn_ensemble_free(e);
}

/* ---- answered later: pipe_batcher_submit -------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int other_thread; /* calls made on a thread other than the test's */
    pthread_t self;
} callbacks;

static void on_done(void *ctx)
{
    callbacks *cb = ctx;
    pthread_mutex_lock(&cb->mu);
    cb->calls++;
    cb->other_thread += !pthread_equal(pthread_self(), cb->self);
    pthread_cond_signal(&cb->cv);
    pthread_mutex_unlock(&cb->mu);
}

static void wait_calls(callbacks *cb, int n)
{
    pthread_mutex_lock(&cb->mu);
    while (cb->calls < n) pthread_cond_wait(&cb->cv, &cb->mu);
    pthread_mutex_unlock(&cb->mu);
}

/* An idle batcher runs a submitted image on the calling thread: answered
 * before return (1), the callback never called. Queued images (0) are
 * answered by a runner thread, which then calls back, once each, on its
 * own thread: two images submitted while a third is announced wait for
 * it (one executor, a long delay) and run as one batch of three when it
 * comes, their answers bit for bit that batch's forward pass. Bad calls
 * queue nothing (-1). The default CNN, what the server batches. */
static void test_submit_answers_later(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/cnn.safetensors");
    callbacks cb = {.self = pthread_self()};
    pthread_mutex_init(&cb.mu, NULL);
    pthread_cond_init(&cb.cv, NULL);
    pipe_batcher *b = pipe_batcher_create(
        e, &(pipe_batch_opts){.max_size = 4, .delay_us = PIPE_BATCH_MAX_DELAY_US, .executors = 1});
    assert_non_null(b);
    uint8_t x[3][PIPE_PIXELS];
    for (int i = 0; i < 3; i++) memcpy(x[i], images[i], PIPE_PIXELS);
    pipe_result res[3], want[3];
    memset(res, 0, sizeof res);

    /* Idle: run here. */
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[0], 1, &res[0], 0, on_done, &cb), 1);
    reference(e, 0, 1, want);
    assert_same_answer(&res[0], &want[0], 1);
    assert_int_equal(res[0].batch_size, 1);
    assert_int_equal(cb.calls, 0);

    /* Three announced; two come, then the third. */
    memset(res, 0, sizeof res);
    pipe_batcher_expect(b, 3);
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[0], 1, &res[0], 1, on_done, &cb), 0);
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[1], 1, &res[1], 1, on_done, &cb), 0);
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.queued, 2); /* waiting for the third */
    assert_int_equal(cb.calls, 0);
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[2], 1, &res[2], 1, on_done, &cb), 0);
    wait_calls(&cb, 3);
    reference(e, 0, 3, want);
    for (int i = 0; i < 3; i++) {
        assert_same_answer(&res[i], &want[i], 1);
        assert_int_equal(res[i].batch_size, 3);
        assert_int_equal(res[i].batch_first, i == 0);
    }
    assert_int_equal(cb.other_thread, 3);
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.images, 4);
    assert_int_equal(st.queued, 0);

    /* Nothing queued on a bad call. */
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[0], 0, res, 0, on_done, &cb), -1);
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[0], 5, res, 0, on_done, &cb), -1);
    assert_int_equal(pipe_batcher_submit(b, PIPE_U8, x[0], 1, res, 0, NULL, NULL), -1);
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.batches, 2);
    pipe_batcher_free(b);
    assert_int_equal(cb.calls, 3);
    pthread_cond_destroy(&cb.cv);
    pthread_mutex_destroy(&cb.mu);
    nn_ensemble_free(e);
}

/* Many threads submitting at once, a shared runner pool answering: every
 * image gets its own answer (as alone, within rounding), exactly one
 * callback each, nothing left queued. Batches form only while another
 * runs, so their sizes depend on the threads' timing: only totals are
 * checked. */
typedef struct {
    pipe_batcher *b;
    callbacks *cb;
    int first, n;
    pipe_result res[4];
    int inline_answers, bad_returns; /* checked on the test's thread */
} submitter;

static void *run_submitter(void *arg)
{
    submitter *sb = arg;
    memset(sb->res, 0, sizeof sb->res);
    for (int i = 0; i < sb->n; i++) {
        int rc = pipe_batcher_submit(sb->b, PIPE_U8, images[sb->first + i], 1, &sb->res[i], 0,
                                     on_done, sb->cb);
        sb->inline_answers += rc == 1;
        sb->bad_returns += rc != 0 && rc != 1;
    }
    return NULL;
}

static void test_submit_from_many_threads(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    enum { NT = 6, PER = 4 };
    callbacks cb = {.self = pthread_self()};
    pthread_mutex_init(&cb.mu, NULL);
    pthread_cond_init(&cb.cv, NULL);
    pipe_batcher *b =
        pipe_batcher_create(e, &(pipe_batch_opts){.max_size = 8, .delay_us = 2000, .executors = 2});
    assert_non_null(b);
    submitter sb[NT];
    pthread_t th[NT];
    for (int k = 0; k < NT; k++) {
        sb[k] = (submitter){.b = b, .cb = &cb, .first = k * PER, .n = PER};
        assert_int_equal(pthread_create(&th[k], NULL, run_submitter, &sb[k]), 0);
    }
    int inline_answers = 0;
    for (int k = 0; k < NT; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(sb[k].bad_returns, 0);
        inline_answers += sb[k].inline_answers;
    }
    wait_calls(&cb, NT * PER - inline_answers);
    pipe_result alone[NIMG];
    for (int i = 0; i < NT * PER; i++) reference(e, i, 1, &alone[i]);
    for (int k = 0; k < NT; k++)
        for (int i = 0; i < PER; i++) {
            const pipe_result *r = &sb[k].res[i];
            assert_same_answer(r, &alone[sb[k].first + i], r->batch_size == 1);
            assert_in_range(r->batch_size, 1, 8);
        }
    pipe_batch_stats st;
    pipe_batcher_stats(b, &st);
    assert_int_equal(st.images, NT * PER);
    assert_int_equal(st.queued, 0);
    pipe_batcher_free(b);
    assert_int_equal(cb.calls, NT * PER - inline_answers); /* no callback twice */
    pthread_cond_destroy(&cb.cv);
    pthread_mutex_destroy(&cb.mu);
    nn_ensemble_free(e);
}

static void test_bad_options(void **state)
{
    (void)state;
    nn_ensemble *e = load("models/lenet.safetensors");
    pipe_batch_opts o = {.max_size = 4, .delay_us = 100, .executors = 1};
    pipe_batcher *b = pipe_batcher_create(e, &o);
    assert_non_null(b);
    pipe_batcher_free(b);
    pipe_batcher_free(NULL);
    pipe_batcher_close(NULL);
    assert_null(pipe_batcher_create(NULL, &o));
    assert_null(pipe_batcher_create(e, NULL));
    o.max_size = 0;
    assert_null(pipe_batcher_create(e, &o));
    o.max_size = PIPE_BATCH_MAX_SIZE + 1;
    assert_null(pipe_batcher_create(e, &o));
    o.max_size = 4;
    o.delay_us = PIPE_BATCH_MAX_DELAY_US + 1;
    assert_null(pipe_batcher_create(e, &o));
    o.delay_us = 100;
    o.executors = 0;
    assert_null(pipe_batcher_create(e, &o));
    nn_ensemble_free(e);
}

int main(void)
{
    make_images();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunks_are_their_forward_pass),
        cmocka_unit_test(test_failure_stays_its_own),
        cmocka_unit_test(test_concurrent_requests_get_their_answers),
        cmocka_unit_test(test_idle_executor_runs_at_once),
        cmocka_unit_test(test_delay_bounds_the_wait),
        cmocka_unit_test(test_close_releases_waiters),
        cmocka_unit_test(test_png_through_batcher),
        cmocka_unit_test(test_pngs_run_together),
        cmocka_unit_test(test_submit_answers_later),
        cmocka_unit_test(test_submit_from_many_threads),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
