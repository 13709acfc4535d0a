/* fuzz_oip.c - srv_oip_request_parse (Open Inference Protocol request,
 * JSON and Triton's binary extension), then srv_oip_response_write for
 * what it accepts.
 *
 * Input: byte 0 selects whether an Inference-Header-Content-Length is
 * given (bit 0) and bytes 1-2 are its value (little-endian); the body
 * follows. Invariants on success: 1 <= n <= max_batch and n = shape[0];
 * UINT8/FP32 give n * 784 pixels (FP32 finite, in [0, 1]) and a shape
 * whose element count is n * 784; BYTES gives n items, each readable to
 * its end; the outputs asked for are a non-empty subset, binary within them, the order
 * lists each once; an id is a JSON string literal. The response written
 * for the request is JSON that cJSON parses, its JSON part no longer than
 * the whole. On failure: status 400/413 with a message. */
#include "fuzz.h"
#include "server/oip.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

enum { MAX_BATCH = 8, CLASSES = 10 };

static void check_response(const srv_oip_request *q)
{
    static const char *const labels[CLASSES] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    float probs[MAX_BATCH * CLASSES];
    int pred[MAX_BATCH];
    float ood[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH * CLASSES; i++) probs[i] = 0.1f;
    for (int i = 0; i < MAX_BATCH; i++) pred[i] = i % CLASSES, ood[i] = 12.5f * (float)i;
    srv_oip_result r = {.model_name = "m",
                        .model_version = "1",
                        .req = q,
                        .n = q->n,
                        .nclasses = CLASSES,
                        .probs = probs,
                        .pred = pred,
                        .labels = labels,
                        /* The server asks for "ood_score" only of a model
                         * that has the scores (it answers 400 otherwise),
                         * so a request naming it always gets them here. */
                        .ood = ood};
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    size_t json_len = 0;
    srv_oip_response_write(&b, &r, &json_len);
    FUZZ_CHECK(!b.oom);
    FUZZ_CHECK(json_len <= b.len);
    if (!q->binary) FUZZ_CHECK(json_len == b.len);
    cJSON *j = cJSON_ParseWithLength(b.data, json_len);
    FUZZ_CHECK(j != NULL);
    cJSON_Delete(j);
    srv_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    int64_t json_len = (data[0] & 1) ? (int64_t)(data[1] | data[2] << 8) : -1;
    size_t len = size - 3;
    uint8_t *body = malloc(len ? len : 1);
    if (!body) abort();
    memcpy(body, data + 3, len);
    srv_oip_limits lim = {.max_batch = MAX_BATCH};
    srv_oip_request *q = (srv_oip_request *)1;
    char err[256] = "";
    srv_oip_status st = srv_oip_request_parse(body, len, json_len, &lim, &q, err, sizeof err);
    free(body); /* the request must not point into it */
    if (st != SRV_OIP_OK) {
        FUZZ_CHECK(q == NULL);
        FUZZ_CHECK(st == SRV_OIP_ERR_BAD || st == SRV_OIP_ERR_TOO_LARGE || st == SRV_OIP_ERR_NOMEM);
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        FUZZ_CHECK(srv_oip_http_status(st) == 400 || srv_oip_http_status(st) == 413 ||
                   srv_oip_http_status(st) == 500);
        return 0;
    }
    FUZZ_CHECK(q != NULL);
    FUZZ_CHECK(q->rank >= 1 && q->rank <= SRV_OIP_MAX_RANK);
    FUZZ_CHECK(q->n >= 1 && q->n <= MAX_BATCH && q->n == q->shape[0]);
    if (q->dtype == SRV_OIP_BYTES) {
        FUZZ_CHECK(q->items != NULL && q->u8 == NULL && q->f32 == NULL);
        unsigned sum = 0;
        for (uint32_t i = 0; i < q->n; i++)
            for (size_t k = 0; k < q->items[i].len; k++) sum += q->items[i].data[k];
        (void)sum;
    } else {
        FUZZ_CHECK(q->dtype == SRV_OIP_UINT8 || q->dtype == SRV_OIP_FP32);
        FUZZ_CHECK(q->items == NULL);
        uint64_t count = 1;
        for (int d = 0; d < q->rank; d++) count *= q->shape[d];
        FUZZ_CHECK(count == (uint64_t)q->n * SRV_OIP_PIXELS);
        size_t total = (size_t)q->n * SRV_OIP_PIXELS;
        if (q->dtype == SRV_OIP_UINT8) {
            FUZZ_CHECK(q->u8 != NULL && q->f32 == NULL);
            unsigned sum = 0;
            for (size_t i = 0; i < total; i++) sum += q->u8[i];
            (void)sum;
        } else {
            FUZZ_CHECK(q->f32 != NULL && q->u8 == NULL);
            for (size_t i = 0; i < total; i++)
                FUZZ_CHECK(isfinite(q->f32[i]) && q->f32[i] >= 0 && q->f32[i] <= 1);
        }
    }
    FUZZ_CHECK(q->outputs != 0 && (q->outputs & ~SRV_OIP_OUT_ALL) == 0);
    FUZZ_CHECK((q->binary & ~q->outputs) == 0);
    FUZZ_CHECK(q->norder == __builtin_popcount(q->outputs));
    unsigned seen = 0;
    for (int k = 0; k < q->norder; k++) {
        FUZZ_CHECK((q->order[k] & q->outputs) && !(q->order[k] & seen));
        FUZZ_CHECK(__builtin_popcount(q->order[k]) == 1);
        seen |= q->order[k];
    }
    if (q->id) { FUZZ_CHECK(q->id_len >= 2 && q->id[0] == '"' && q->id[q->id_len - 1] == '"'); }
    check_response(q);
    srv_oip_request_free(q);
    return 0;
}
