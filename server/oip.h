/* oip.h - the Open Inference Protocol (KServe v2 REST) as bytes in, bytes
 * out: the inference request parser and the response writer, with
 * Triton's binary tensor data extension. No HTTP, no model: the server
 * routes, runs the pipeline and sends what these functions produce.
 *
 *   srv_oip_request *q;
 *   char err[256];
 *   srv_oip_status st = srv_oip_request_parse(body, len, hdr_len, &lim, &q,
 *                                             err, sizeof err);
 *   if (st != SRV_OIP_OK) -> HTTP srv_oip_http_status(st), {"error": err}
 *   ... q->u8 or q->f32 (q->n images of 784 pixels) or q->items (BYTES:
 *       q->n encoded images) through the pipeline ...
 *   srv_oip_response_write(&buf, &result, &json_len);
 *   srv_oip_request_free(q);
 *
 * Conventions of this server (stated in README.md and openapi.yaml):
 *   one input, named "input";
 *   UINT8 [N,1,28,28] | [N,28,28] | [N,784]: MNIST pixels 0..255 (0 is
 *     background), for the model as value/255, nothing else done;
 *   FP32, same shapes: values in [0,1] (value/255, ToTensor's convention);
 *   BYTES [N]: each element an encoded PNG (base64 in JSON, raw bytes in
 *     the binary extension), prepared exactly like POST /predict;
 *   data flat or nested; 1 <= N <= max_batch;
 *   outputs "probabilities" FP32 [N,classes], "prediction" INT64 [N],
 *   "label" BYTES [N]; all three when the request names none.
 *
 * Untrusted input: every size (shape, element count, binary lengths) is
 * checked before anything is allocated; memory is bounded by a small
 * multiple of the body length. JSON nesting deeper than SRV_OIP_MAX_DEPTH
 * is refused, so recursion depth is bounded whatever the body holds.
 * Object keys are compared as written (a key spelled with \u escapes is an
 * unknown key). Unknown keys are ignored, as are unknown parameters.
 */
#ifndef SERVER_OIP_H
#define SERVER_OIP_H

#include <stddef.h>
#include <stdint.h>

#include "server/buf.h"

#define SRV_OIP_INPUT_NAME "input"
#define SRV_OIP_PIXELS 784   /* 28 x 28 */
#define SRV_OIP_MAX_DEPTH 32 /* JSON nesting, objects and arrays */
#define SRV_OIP_MAX_RANK 8

typedef enum {
    SRV_OIP_OK = 0,
    SRV_OIP_ERR_BAD,       /* malformed or unacceptable request  -> 400 */
    SRV_OIP_ERR_TOO_LARGE, /* batch over the limit               -> 413 */
    SRV_OIP_ERR_NOMEM      /* allocation failed                  -> 500 */
} srv_oip_status;

typedef enum { SRV_OIP_UINT8 = 0, SRV_OIP_FP32, SRV_OIP_BYTES } srv_oip_dtype;

/* Output tensors, as bits of srv_oip_request.outputs/.binary. */
enum {
    SRV_OIP_OUT_PROBS = 1u << 0, /* "probabilities" FP32 [N,classes] */
    SRV_OIP_OUT_PRED = 1u << 1,  /* "prediction"    INT64 [N]        */
    SRV_OIP_OUT_LABEL = 1u << 2, /* "label"         BYTES [N]        */
    SRV_OIP_OUT_ALL = 7u,        /* the outputs every model has       */
    SRV_OIP_OUT_OOD = 1u << 3    /* "ood_score"     FP32 [N], only for
                                       a model with out-of-distribution
                                       statistics (nn/ood.h)            */
};
#define SRV_OIP_MAX_OUTPUTS 4

typedef struct {
    uint32_t max_batch; /* N above this -> SRV_OIP_ERR_TOO_LARGE */
} srv_oip_limits;

typedef struct {
    const uint8_t *data; /* into the request's own storage */
    size_t len;
} srv_oip_item;

typedef struct {
    char *id; /* the request's "id" as a JSON string literal
                               (quotes and escapes as sent), or NULL */
    size_t id_len;
    srv_oip_dtype dtype;
    int rank;
    uint64_t shape[SRV_OIP_MAX_RANK];
    uint32_t n;                          /* images: shape[0] */
    uint8_t *u8;                         /* UINT8: n * 784 pixels 0..255; else NULL */
    float *f32;                          /* FP32: n * 784 values in [0,1]; else NULL */
    srv_oip_item *items;                 /* BYTES: n encoded images; else NULL */
    unsigned outputs;                    /* SRV_OIP_OUT_* bits to answer with */
    unsigned binary;                     /* of those, the ones sent as binary data */
    unsigned order[SRV_OIP_MAX_OUTPUTS]; /* outputs in the order
                               requested (bits), norder of them       */
    int norder;
    int outputs_named; /* the request listed its outputs; if not,
                               outputs is SRV_OIP_OUT_ALL and the server
                               adds SRV_OIP_OUT_OOD when the model has it
                               (srv_oip_request_add_ood) */
    int bin_out_all;   /* binary_data_output: the request-wide
                               binary default */
    uint8_t *store;    /* owned storage behind items */
} srv_oip_request;

/* HTTP status for a status code: 200, 400, 413 or 500. */
int srv_oip_http_status(srv_oip_status st);

/* Parses an inference request body of len bytes. json_len is the
 * Inference-Header-Content-Length header's value (the JSON part's length,
 * the rest being binary tensor data), or -1 when the header is absent
 * (the whole body is JSON). On SRV_OIP_OK *out is a request the caller
 * frees with srv_oip_request_free; it does not point into body. Otherwise
 * *out is NULL and err (errlen bytes, NUL-terminated) holds one line for
 * the client. body need not be NUL-terminated; any bytes are safe. */
srv_oip_status srv_oip_request_parse(const uint8_t *body, size_t len, int64_t json_len,
                                     const srv_oip_limits *lim, srv_oip_request **out, char *err,
                                     size_t errlen);
void srv_oip_request_free(srv_oip_request *q);

/* Appends "ood_score" to the outputs of a request that named none (as
 * binary data when the request asked for binary outputs). */
void srv_oip_request_add_ood(srv_oip_request *q);

/* What the server computed for a request, to be written back. */
typedef struct {
    const char *model_name;
    const char *model_version;  /* NULL: the field is left out */
    const srv_oip_request *req; /* id, outputs, binary, order */
    uint32_t n;
    int nclasses;
    const float *probs;        /* n * nclasses */
    const int *pred;           /* n */
    const char *const *labels; /* nclasses class names */
    const float *ood;          /* n out-of-distribution scores, or
                                       NULL (the model has none) */
} srv_oip_result;

/* Appends the response to out: the JSON object, then the binary data of
 * the outputs sent as binary, in output order. *json_len receives the
 * JSON part's length (== out->len when nothing is binary), the value of
 * the Inference-Header-Content-Length response header otherwise. Check
 * out->oom afterwards. */
void srv_oip_response_write(srv_buf *out, const srv_oip_result *r, size_t *json_len);

/* Appends {"error":"msg"}, the protocol's error object. */
void srv_oip_error_write(srv_buf *out, const char *msg);

/* ---- paths ------------------------------------------------------------------ */

typedef enum {
    SRV_OIP_PATH_NONE = 0,    /* not under /v2                          */
    SRV_OIP_PATH_UNKNOWN,     /* under /v2/, but no such endpoint       */
    SRV_OIP_PATH_SERVER,      /* /v2                                    */
    SRV_OIP_PATH_LIVE,        /* /v2/health/live                        */
    SRV_OIP_PATH_READY,       /* /v2/health/ready                       */
    SRV_OIP_PATH_MODEL,       /* /v2/models/N[/versions/V]              */
    SRV_OIP_PATH_MODEL_READY, /* /v2/models/N[/versions/V]/ready        */
    SRV_OIP_PATH_INFER        /* /v2/models/N[/versions/V]/infer        */
} srv_oip_path_kind;

#define SRV_OIP_SEGMENT_MAX 64

typedef struct {
    srv_oip_path_kind kind;
    char name[SRV_OIP_SEGMENT_MAX];    /* "" when longer than 63 bytes */
    char version[SRV_OIP_SEGMENT_MAX]; /* likewise; "" without /versions/ */
    int has_version;
} srv_oip_path;

/* Splits a request path (no query string) into the endpoint and its model
 * name and version. Segments are taken as written (no percent-decoding;
 * model names are [A-Za-z0-9._-]). Returns p->kind. */
srv_oip_path_kind srv_oip_path_parse(const char *path, srv_oip_path *p);

/* ---- our own API's JSON body ------------------------------------------------ */

/* Parses POST /predict's {"image": "<base64 PNG>"} (key "image", exactly
 * one) or /predict/batch's {"images": ["<base64 PNG>", ...]} (key
 * "images", 1..max_items). On SRV_OIP_OK *items (n entries) and *store are
 * malloc'ed; the caller frees both (items point into store). Errors as for
 * srv_oip_request_parse; more than max_items -> SRV_OIP_ERR_TOO_LARGE. */
srv_oip_status srv_oip_images_parse(const uint8_t *body, size_t len, const char *key,
                                    uint32_t max_items, srv_oip_item **items, uint8_t **store,
                                    uint32_t *n, char *err, size_t errlen);

#endif
