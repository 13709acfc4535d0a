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
 *   ...
 *   pipe_batcher_close(b);          // shutting down: stop waiting to fill
 *   pipe_batcher_free(b);           // no request may still be inside
 *
 * How a batch forms (leader/followers; no thread of its own):
 *   - A request enqueues its images and sleeps on a condition variable
 *     of its own; each change wakes only the thread it concerns.
 *   - The owner of the request at the head of the queue is the leader.
 *     Work first: while another executor (batches running at once,
 *     normally one per core) is idle, it runs at once, taking only its
 *     share of the queue (ceil(queued / free executors)) so the next
 *     leader can take the rest to another core - a core idling with
 *     images queued costs more than batching saves on a CPU.
 *   - When its executor would be the last free one, it waits to fill:
 *     until the queue holds max_size images, or the oldest queued image
 *     has waited delay_us, or no other image for this model is on its
 *     way (pipe_batcher_expect: decoding or preprocessing on another
 *     thread) - so a lone request at low load waits for nobody - or
 *     until pipe_batcher_close. When every executor is busy it waits
 *     for one (meanwhile more requests queue up).
 *   - It takes whole requests from the front of the queue (its own
 *     first), hands the leader's role to the owner of the new head, runs
 *     the forward pass in the executor's workspace, writes every
 *     request's answers and wakes their owners.
 * The leader is a request thread that would otherwise run its own forward
 * pass: no hand-off to another thread, no extra context switch, and no
 * worker thread to start or stop. Every wait is bounded (the delay, or a
 * running batch), so no request hangs, at shutdown or otherwise.
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
 * max_size images are made here. NULL on bad options or out of memory.
 * pipe_batcher_free(NULL) does nothing; freeing with a request still
 * inside is a bug. */
pipe_batcher *pipe_batcher_create(const nn_ensemble *e, const pipe_batch_opts *o);
void pipe_batcher_free(pipe_batcher *b);

/* delta images are on their way (+, before decoding) or will not come
 * after all (-, a decode failed). pipe_batcher_run takes its images off
 * again (its announced argument). A leader waits for announced images
 * only. */
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

/* From now on no leader waits to fill a batch (queued images run as soon
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
