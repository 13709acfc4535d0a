/* pipeline.h - the one serving path: an image in, an answer out.
 *
 * Every entrance that classifies (POST /predict, POST /predict/batch,
 * mnist-predict, and later tensor entrances such as an inference-protocol
 * endpoint or a drawing page) parses its own request, then hands the image
 * here and renders the pipe_result in its own format:
 *
 *   PNG bytes --decode (limits)--> gray --model's preprocessing--> 1x28x28
 *   1x28x28 uint8 or float tensor -------------------------------> 1x28x28
 *       --forward (nn_ensemble)--> probabilities, prediction, label, timings
 *
 * Usage:
 *   pipe_model m;
 *   if (pipe_model_load(&m, "models/cnn.safetensors", err, n)) ...  // checked
 *   pipe_ws *ws = pipe_ws_create(m.ens, 1);       // one per thread
 *   pipe_result r;
 *   pipe_run_png(m.ens, ws, png, len, &lim, NULL, &r);
 *   if (r.status == PIPE_OK) printf("%s\n", r.label);
 *   else printf("%s: %s\n", pipe_status_name(r.status), r.msg);
 *   pipe_ws_free(ws); nn_ensemble_free(m.ens);
 *
 * Entrances (all write one pipe_result per image, never allocate per call
 * beyond the decoded image, and never print):
 *   (a) pipe_run_png      encoded PNG bytes: decode, preprocess, forward.
 *                         Optionally hands back the preprocessed 28x28
 *                         network input (an "explain" view, --dump-input).
 *       pipe_run_pngs     several at once, forwarded together.
 *   (b) pipe_run_tensors  a batch of already-decoded 1x28x28 images, uint8
 *                         0..255 or float 0..1, ink bright on dark, as MNIST
 *                         stores them: no decode and no preprocessing, the
 *                         batch is forwarded ws->max_batch images at a time.
 *
 * The forward step: pipe_forward runs prepared inputs in the caller's
 * workspace. A workspace given a batcher (pipe_ws_set_batcher, batch.h)
 * sends (a) and (b) through it instead: images of concurrent requests for
 * the same model run as one forward pass. Without one (mnist-predict,
 * a server with batching off) each call runs on its own.
 *
 * Status codes: pipe_status is the one set of error codes the project
 * answers with, over HTTP (the "code" of the JSON error envelope) and on
 * the command line (mnist-predict's "error" objects). pipe_status_name
 * gives the stable name, pipe_status_http the HTTP status. The list is
 * documented once for users in README.md ("Errors") and openapi.yaml.
 *
 * Models: pipe_model_check is what makes a loaded model servable (input
 * 1x28x28, 1..NN_MAX_CLASSES classes, a known preprocessing); loaders call
 * it when a model is loaded, so requests never meet a model they cannot
 * feed. pipe_default_pick is the one rule for the default model.
 */
#ifndef PIPELINE_PIPELINE_H
#define PIPELINE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"
#include "nn/ensemble.h"

#define PIPE_SIDE 28
#define PIPE_PIXELS (PIPE_SIDE * PIPE_SIDE)
/* Default cap on one request's (or one file's) encoded bytes: the server's
 * --body-limit and mnist-predict's --max-bytes, so both refuse the same
 * files (PIPE_PAYLOAD_TOO_LARGE). Decode limits: img_limits_default. */
#define PIPE_MAX_BYTES_DEFAULT ((size_t)2 << 20)

/* Every code a client can be answered with. The comment gives the HTTP
 * status and the name (pipe_status_name). */
typedef enum {
    PIPE_OK = 0, /* 200 "ok"                                */
    /* the image (pipeline) */
    PIPE_EMPTY_BODY,      /* 400 "empty_body": no image bytes        */
    PIPE_NOT_PNG,         /* 400 "not_png": no PNG signature         */
    PIPE_INVALID_PNG,     /* 400 "invalid_png": corrupt, truncated   */
    PIPE_IMAGE_TOO_LARGE, /* 413 "image_too_large": over the limits  */
    PIPE_BLANK_IMAGE,     /* 422 "blank_image": no ink at all        */
    PIPE_INVALID_TENSOR,  /* 400 "invalid_tensor": a tensor value is
                                    not finite or outside 0..1             */
    /* the request (entrances) */
    PIPE_UNREADABLE,             /* 400 "unreadable": a file mnist-predict
                                    cannot read (the CLI's only own code)  */
    PIPE_PAYLOAD_TOO_LARGE,      /* 413 "payload_too_large": body or file
                                    over the byte limit                    */
    PIPE_TOO_MANY_IMAGES,        /* 413 "too_many_images": batch too big    */
    PIPE_BAD_MULTIPART,          /* 400 "bad_multipart"                     */
    PIPE_MISSING_IMAGE,          /* 400 "missing_image": no 'image' part    */
    PIPE_BAD_REQUEST,            /* 400 "bad_request": a JSON body (ours or
                                    a v2 inference request) that is
                                    malformed or not what the route takes,
                                    or ambiguous HTTP framing (two lengths,
                                    no single Host in HTTP/1.1)            */
    PIPE_INVALID_BASE64,         /* 400 "invalid_base64": an image in JSON
                                    that is not base64                     */
    PIPE_UNSUPPORTED_MEDIA_TYPE, /* 415 "unsupported_media_type"            */
    PIPE_NOT_FOUND,              /* 404 "not_found": no such path           */
    PIPE_MODEL_NOT_FOUND,        /* 404 "model_not_found"                   */
    PIPE_METHOD_NOT_ALLOWED,     /* 405 "method_not_allowed"                */
    PIPE_NOT_IMPLEMENTED,        /* 501 "not_implemented": a transfer
                                    coding other than chunked              */
    PIPE_URI_TOO_LONG,           /* 414 "uri_too_long": the request target
                                    is over the server's limit             */
    PIPE_HEADERS_TOO_LARGE,      /* 431 "headers_too_large": too many
                                    header fields, or too many bytes       */
    PIPE_NOT_READY,              /* 503 "not_ready": warming up, draining   */
    /* changing what is served (the repository API) */
    PIPE_MODEL_CONTROL_DISABLED, /* 403 "model_control_disabled": the server
                                    runs without --enable-model-control   */
    PIPE_MODEL_LOAD_FAILED,      /* 422 "model_load_failed": the model's file
                                    did not load; what served still does  */
    PIPE_LAST_MODEL,             /* 409 "last_model": unloading it would
                                    leave nothing to serve                 */
    PIPE_INTERNAL,               /* 500 "internal": the server's fault      */
    PIPE_STATUS_COUNT
} pipe_status;

/* Stable name of a status ("invalid_png"); "internal" for out-of-range. */
const char *pipe_status_name(pipe_status st);
/* HTTP status of a status (200 for PIPE_OK); 500 for out-of-range. */
int pipe_status_http(pipe_status st);
/* The status of an image/ decode or preprocessing result. */
pipe_status pipe_status_from_img(img_status st);

/* ---- models -------------------------------------------------------------- */

/* Checks that e can be served: every member takes 1x28x28 inputs, the
 * class count is 1..NN_MAX_CLASSES, the preprocessing is one image/ knows.
 * 0, or -1 with a one-line err naming source (the file, for messages). */
int pipe_model_check(const nn_ensemble *e, const char *source, char *err, size_t errlen);

/* nn_ensemble_load(paths) then pipe_model_check. The ensemble (caller
 * frees with nn_ensemble_free) or NULL + err naming the file. */
nn_ensemble *pipe_model_load(const char *paths, char *err, size_t errlen);

/* What the default-model rule needs to know of a model. */
typedef struct {
    int nmembers;         /* 1 for a single weights file */
    double test_accuracy; /* < 0 when unknown */
    const char *dataset;  /* "mnist", "fashion-mnist", ... */
} pipe_candidate;

/* The default model among n candidates (given in load order: sorted by
 * file name within a directory): the single model (an ensemble costs all
 * its members' time on every request) of dataset "mnist" with the highest
 * recorded test accuracy, ties to the first; failing that, the most
 * accurate single model of any dataset; failing that, 0. -1 when n == 0. */
int pipe_default_pick(const pipe_candidate *c, int n);

/* The default model of a models directory, as the server picks it at
 * start-up: pipe_default_pick among one file per model name: each flat
 * NAME.safetensors, and for a versioned directory NAME/ its highest
 * version N.safetensors (which replaces a flat file of that name); flat
 * files first, then directories, each in name order. A name whose file
 * does not load, or is an ensemble list, is skipped (a failing highest
 * version is not replaced by an older one: the server does not serve
 * those at start-up either). Writes the chosen file's path
 * ("dir/NAME.safetensors" or "dir/NAME/N.safetensors") into out; 0, or
 * -1 + err (unreadable directory, no loadable model). */
int pipe_default_in_dir(const char *dir, char *out, size_t outlen, char *err, size_t errlen);

/* ---- running --------------------------------------------------------------- */

/* Per-thread scratch for one model: the network input and the forward
 * workspace for up to max_batch images. NULL on allocation failure.
 * pipe_ws_free(NULL) does nothing. */
typedef struct pipe_ws pipe_ws;
pipe_ws *pipe_ws_create(const nn_ensemble *e, int max_batch);
void pipe_ws_free(pipe_ws *ws);

/* From now on pipe_run_png and pipe_run_tensors on ws hand their forward
 * step to b (batch.h; NULL: run in ws again). b must be made for the same
 * model and outlive its use through ws; it is not owned. */
typedef struct pipe_batcher pipe_batcher;
void pipe_ws_set_batcher(pipe_ws *ws, pipe_batcher *b);

/* One image's answer. label points into the model's metadata (valid while
 * the model is). Timings are microseconds of CLOCK_MONOTONIC; tensor
 * inputs have decode_us = prep_us = 0. On failure, status and msg say
 * why (msg is one line for the client) and the rest is zero. */
typedef struct {
    pipe_status status;
    char msg[256];
    int prediction;
    const char *label;
    int nclasses;
    float probs[NN_MAX_CLASSES];
    /* Out of distribution (nn/ood.h), from the same forward pass: only
     * when the model carries the statistics (has_ood != 0). ood_score is
     * the squared Mahalanobis distance of the image's features to the
     * nearest class (higher = less like the training digits; finite);
     * in_distribution is ood_score <= the model's stored threshold. */
    int has_ood;
    float ood_score;
    int in_distribution;
    /* infer_us: the forward pass that answered the image (with batching,
     * the whole batch's). */
    uint64_t decode_us, prep_us, infer_us;
    /* Dynamic batching (batch.h), 0 without: images in that forward pass,
     * 1 on one image of each pass (so passes can be counted), and the
     * microseconds the image waited in the queue before it ran. */
    int batch_size;
    int batch_first;
    uint64_t queue_us;
} pipe_result;

/* (a) PNG bytes (len 0: PIPE_EMPTY_BODY) under the decode limits lim (NULL:
 * img_limits_default). prepared, if not NULL, receives the 28x28 network
 * input (floats 0..1, row-major) whenever preprocessing succeeded. */
void pipe_run_png(const nn_ensemble *e, pipe_ws *ws, const uint8_t *png, size_t len,
                  const img_limits *lim, float prepared[PIPE_PIXELS], pipe_result *res);

/* (a) in two steps, for a caller that answers later (a suspended
 * connection, through pipe_batcher_submit): decodes and preprocesses png
 * into x, the network input, with res zeroed and its timings set. 0, or
 * -1 with res saying why. */
int pipe_prepare_png(const nn_ensemble *e, const uint8_t *png, size_t len, const img_limits *lim,
                     float x[PIPE_PIXELS], pipe_result *res);

/* (a) for n PNGs at once (/predict/batch): png[i] of len[i] bytes, each
 * decoded and preprocessed into x[i*784..] (the caller's [n,784] floats,
 * afterwards the network inputs: zeros for a failed image), then all
 * forwarded together: through ws's batcher as one request, or in chunks
 * of the ws's max_batch. The caller zeroes res[0..n); an entry whose
 * status it set (e.g. not base64) is skipped and keeps it. */
void pipe_run_pngs(const nn_ensemble *e, pipe_ws *ws, int n, const uint8_t *const *png,
                   const size_t *len, const img_limits *lim, float *x, pipe_result *res);

typedef enum { PIPE_U8, PIPE_F32 } pipe_dtype;

/* The forward step on its own, in ws (never through a batcher): n images
 * x[n,784] (n <= the ws's max_batch), prepared as the model expects. Each
 * res[i] whose status is PIPE_OK on entry gets the prediction,
 * probabilities, label, OOD score and infer_us (the whole call's); the
 * others are left alone. The probabilities are the kernels' for a batch of
 * n: where a kernel's order of summation depends on the batch size they
 * differ from a batch of one by rounding only. */
void pipe_forward(const nn_ensemble *e, pipe_ws *ws, const float *x, int n, pipe_result *res);

/* (b) n images [n,1,28,28] of dtype (uint8 0..255, scaled by 1/255, or
 * float 0..1) -> res[0..n). A float image with a value outside 0..1 or not
 * finite gets PIPE_INVALID_TENSOR (the others are still answered). */
void pipe_run_tensors(const nn_ensemble *e, pipe_ws *ws, pipe_dtype dtype, const void *x, int n,
                      pipe_result *res);

#endif
