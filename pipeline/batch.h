/* batch.h - dynamic batching: the forward step of the serving pipeline,
 * shared by the threads that serve one model.
 *
 * Requests for the same loaded model (one pipe_batcher per model version,
 * so a reload never mixes versions in a batch) that arrive close together
 * are run as one forward pass of up to max_size images and answered
 * separately:
 *
 *   pipe_batch_opts o = {.max_size = 16, .delay_us = 500, .executors = 2};
 *   pipe_batcher *b = pipe_batcher_create(ens, &o);   // when the model loads
 *   pipe_ws_set_batcher(ws, b);     // each thread's workspace (pipeline.h):
 *                                   // pipe_run_png/_tensors now batch
 *   pipe_batcher_submit(b, ..., done, ctx);  // or answer later: done(ctx)
 *   ...
 *   pipe_batcher_close(b);          // shutting down: stop waiting to fill
 *   pipe_batcher_free(b);           // no request may still be inside
 *
 * How a batch forms (a queue, executors, and a runner thread for each):
 *   - A request queues its images. When they are the whole queue and
 *     may run at once (below), the submitting thread runs them itself:
 *     no hand-off, so a lone request at low load costs what it costs
 *     unbatched. Otherwise a runner thread takes them.
 *   - Work first: a batch runs at once while another executor (batches
 *     running at once, normally one per core) is idle, taking only its
 *     share of the queue (ceil(queued / free executors)) so that the
 *     rest can go to another core - a core idling with images queued
 *     costs more than batching saves on a CPU.
 *   - When it would take the last free executor it waits to fill: until
 *     the queue holds max_size images, or the oldest queued image has
 *     waited delay_us, or no other image for this model is on its way
 *     (pipe_batcher_expect: decoding or preprocessing on another
 *     thread), or until pipe_batcher_close. When every executor is busy
 *     the queue grows until one is free.
 *   - A batch takes whole requests from the front of the queue, runs the
 *     forward pass in the executor's workspace and answers every request
 *     in it: pipe_batcher_run's caller wakes, pipe_batcher_submit's
 *     callback is called.
 * Two ways in: pipe_batcher_run blocks its thread until its images are
 * answered (a thread that serves one request at a time);
 * pipe_batcher_submit returns at once and calls back (a thread that
 * serves many connections: it suspends the request and goes on reading
 * the others, so one thread a core can feed the batches). Every wait is
 * bounded (the delay, or a running batch), so no request hangs, at
 * shutdown or otherwise.
 *
 * A request of more than max_size images is split into chunks of
 * max_size, each run as its own batch; one image's failure (its status
 * set before it is queued, or a non-finite output) is its own.
 *
 * Answers: the probabilities of an image are computed by the same forward
 * code as without batching; a different batch size may change the order
 * of floating-point sums inside the kernels (see pipe_forward), so they
 * agree to rounding, and exactly when the kernels do not depend on the
 * batch. Each answer also says the size of the batch (batch_size) and how
 * long it waited (queue_us); batch_first marks one image per batch, so
 * per-batch statistics count each forward pass once.
 */
#ifndef PIPELINE_BATCH_H
#define PIPELINE_BATCH_H

#include <stdint.h>

#include "pipeline/pipeline.h"

#define PIPE_BATCH_MAX_SIZE 256         /* images per batch, at most */
#define PIPE_BATCH_MAX_DELAY_US 1000000 /* 1 s */

typedef struct {
    int max_size;      /* images per forward pass, 1..PIPE_BATCH_MAX_SIZE */
    uint64_t delay_us; /* longest wait to fill a batch, 0..PIPE_BATCH_MAX_DELAY_US */
    int executors;     /* batches running at once, >= 1 (one workspace each) */
} pipe_batch_opts;

/* A batcher for e (which must outlive it): its executors' workspaces of
 * max_size images and one runner thread for each are made here. NULL on
 * bad options, out of memory or no thread. pipe_batcher_free(NULL) does
 * nothing; it stops and joins the runners (so it must not be called from
 * a done callback); freeing with a request still inside is a bug. */
pipe_batcher *pipe_batcher_create(const nn_ensemble *e, const pipe_batch_opts *o);
void pipe_batcher_free(pipe_batcher *b);

/* delta images are on their way (+, before decoding) or will not come
 * after all (-, a decode failed). pipe_batcher_run takes its images off
 * again (its announced argument, or pipe_batcher_submit's). A batch
 * waits for announced images only. */
void pipe_batcher_expect(pipe_batcher *b, int delta);

/* Runs n images [n,784] of dtype (uint8 0..255, scaled by 1/255, or float
 * 0..1, already checked) through batches and blocks until every one is
 * answered in res[0..n). An image whose res[i].status is not PIPE_OK on
 * entry is skipped (its input is never read) and keeps its status and
 * message; the others are filled as pipe_forward fills them, plus
 * batch_size, batch_first and queue_us. announced: how many of the n were
 * announced with pipe_batcher_expect. x and res must stay valid until it
 * returns. */
void pipe_batcher_run(pipe_batcher *b, pipe_dtype dtype, const void *x, int n, pipe_result *res,
                      int announced);

/* Called from a runner thread once a submitted request's res[0..n) are
 * filled; the batcher no longer touches x or res afterwards. */
typedef void (*pipe_batch_done)(void *ctx);

/* pipe_batcher_run without waiting, for n images (1..max_size): returns
 * 1 when they were answered before it returned (run on the calling
 * thread: res filled, done not called), 0 when they are queued (a runner
 * thread fills res, then calls done(ctx); x and res must stay valid until
 * then, and done may come before this returns), -1 with nothing queued
 * (n out of range, done NULL, out of memory). */
int pipe_batcher_submit(pipe_batcher *b, pipe_dtype dtype, const void *x, int n, pipe_result *res,
                        int announced, pipe_batch_done done, void *ctx);

/* From now on no batch waits to fill (queued images run as soon
 * as an executor is free): for shutdown. Requests keep being answered. */
void pipe_batcher_close(pipe_batcher *b);

/* Totals since creation, for tests and logs. */
typedef struct {
    uint64_t batches; /* forward passes run */
    uint64_t images;  /* images in them */
    int max_seen;     /* largest batch */
    int queued;       /* images waiting now */
} pipe_batch_stats;
void pipe_batcher_stats(pipe_batcher *b, pipe_batch_stats *st);

#endif
