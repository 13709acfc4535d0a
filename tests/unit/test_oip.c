/* test_oip.c - base64 and the Open Inference Protocol request parser and
 * response writer (server/oip.h): every accepted form of input, each
 * hostile request with its status and message, and the exact bytes of
 * JSON and binary responses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base64.h"
#include "server/buf.h"
#include "server/oip.h"

/* ---- base64 ------------------------------------------------------------------ */

static void test_b64_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = srv_b64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        assert_int_equal(n, strlen(enc[i]));
        assert_int_equal(n, srv_b64_encoded_len(strlen(plain[i])));
        assert_memory_equal(out, enc[i], n);
        uint8_t dec[16];
        size_t dn = 99;
        assert_int_equal(srv_b64_decode(enc[i], strlen(enc[i]), dec, &dn), 0);
        assert_int_equal(dn, strlen(plain[i]));
        assert_memory_equal(dec, plain[i], dn);
        /* Padding may be left out. */
        size_t m = strlen(enc[i]);
        while (m && enc[i][m - 1] == '=') m--;
        assert_int_equal(srv_b64_decode(enc[i], m, dec, &dn), 0);
        assert_int_equal(dn, strlen(plain[i]));
    }
}

static void test_b64_round_trip_and_rejects(void **state)
{
    (void)state;
    uint8_t in[300], dec[300 + 3];
    char text[400];
    for (size_t len = 0; len < sizeof in; len++) {
        for (size_t i = 0; i < len; i++) in[i] = (uint8_t)(i * 131 + len * 7);
        size_t n = srv_b64_encode(in, len, text), dn = 0;
        assert_true(srv_b64_decoded_max(n) >= len);
        assert_int_equal(srv_b64_decode(text, n, dec, &dn), 0);
        assert_int_equal(dn, len);
        assert_memory_equal(dec, in, len);
    }
    static const char *const badv[] = {
        "Zg=",    /* padded but not a multiple of 4 */
        "Z",      /* a lone character is 6 bits */
        "Zh==",   /* non-zero bits after the last byte */
        "Zm9=",   /* likewise */
        "Zm 9v",  /* white space */
        "Zm9v\n", /* a newline */
        "Zm=v",   /* padding in the middle */
        "Zm9v-_", /* the URL alphabet */
        "Zg===",  /* three pad characters */
        "====",
    };
    for (size_t i = 0; i < sizeof badv / sizeof badv[0]; i++) {
        size_t dn;
        uint8_t out[16];
        assert_int_equal(srv_b64_decode(badv[i], strlen(badv[i]), out, &dn), -1);
    }
}

/* ---- request builders -------------------------------------------------------- */

static srv_oip_limits lim = {.max_batch = 64};

/* n MNIST-like images of pixel value p(i, k) = (i * 7 + k) % 256. */
static uint8_t pix(uint32_t i, uint32_t k) { return (uint8_t)((i * 7 + k) % 256); }

/* A body: {"id":..., "inputs":[{"name":"input","shape":SHAPE,
 * "datatype":DT,"data":[...]}]EXTRA}, data flat or nested by rows. */
static char *uint8_body(uint32_t n, const char *shape, const char *dt, int nested,
                        const char *extra)
{
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_printf(&b,
                   "{\"id\":\"req-1\",\"inputs\":[{\"name\":\"input\","
                   "\"shape\":%s,\"datatype\":\"%s\",\"data\":[",
                   shape, dt);
    for (uint32_t i = 0; i < n; i++) {
        if (i) srv_buf_puts(&b, ",");
        if (nested) srv_buf_puts(&b, "[");
        for (uint32_t k = 0; k < 784; k++) {
            if (k && nested && k % 28 == 0)
                srv_buf_puts(&b, "],[");
            else if (k)
                srv_buf_puts(&b, ",");
            if (k == 0 && nested) srv_buf_puts(&b, "[");
            if (strcmp(dt, "FP32") == 0)
                srv_buf_printf(&b, "%.9g", (double)((float)pix(i, k) / 255.0f));
            else
                srv_buf_printf(&b, "%u", pix(i, k));
        }
        if (nested) srv_buf_puts(&b, "]]");
    }
    srv_buf_printf(&b, "]}]%s}", extra ? extra : "");
    assert_false(b.oom);
    return srv_buf_detach(&b, NULL);
}

static srv_oip_status parse_str(const char *body, int64_t json_len, srv_oip_request **q, char *err)
{
    return srv_oip_request_parse((const uint8_t *)body, strlen(body), json_len, &lim, q, err, 256);
}

/* UINT8 pixels as sent; FP32 values exactly the floats value/255. */
static void check_pixels(const srv_oip_request *q, uint32_t n)
{
    assert_int_equal(q->n, n);
    assert_true((q->u8 != NULL) != (q->f32 != NULL));
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < 784; k++) {
            if (q->u8)
                assert_int_equal(q->u8[i * 784 + k], pix(i, k));
            else
                assert_true(q->f32[i * 784 + k] == (float)pix(i, k) / 255.0f);
        }
}

/* ---- accepted requests ---------------------------------------------------------- */

static void test_parse_uint8_shapes(void **state)
{
    (void)state;
    struct {
        const char *shape;
        int nested;
    } cases[] = {
        {"[3,784]", 0}, {"[3,28,28]", 0}, {"[3,1,28,28]", 0}, {"[3,28,28]", 1}, {"[3,784]", 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *body = uint8_body(3, cases[c].shape, "UINT8", cases[c].nested, NULL);
        srv_oip_request *q;
        char err[256];
        srv_oip_status st = parse_str(body, -1, &q, err);
        if (st != SRV_OIP_OK) fail_msg("%s: %s", cases[c].shape, err);
        assert_int_equal(q->dtype, SRV_OIP_UINT8);
        check_pixels(q, 3);
        assert_int_equal(q->outputs, SRV_OIP_OUT_ALL);
        assert_int_equal(q->binary, 0);
        assert_int_equal(q->norder, 3);
        assert_string_equal(q->id, "\"req-1\"");
        srv_oip_request_free(q);
        free(body);
    }
}

static void test_parse_fp32(void **state)
{
    (void)state;
    char *body = uint8_body(2, "[2,1,28,28]", "FP32", 0, NULL);
    srv_oip_request *q;
    char err[256];
    assert_int_equal(parse_str(body, -1, &q, err), SRV_OIP_OK);
    assert_int_equal(q->dtype, SRV_OIP_FP32);
    check_pixels(q, 2); /* %.9g of value/255 parses back to the same float */
    srv_oip_request_free(q);
    free(body);
}

static void test_parse_bytes_and_outputs(void **state)
{
    (void)state;
    /* "hello" and "\xff\x00" in base64, one with a JSON-escaped '/'. */
    const char *body = "{\"inputs\":[{\"name\":\"input\",\"shape\":[3],\"datatype\":\"BYTES\","
                       "\"data\":[\"aGVsbG8=\",\"/wA=\",\"\\/wA\"]}],"
                       "\"outputs\":[{\"name\":\"label\"},{\"name\":\"probabilities\","
                       "\"parameters\":{\"binary_data\":true}}]}";
    srv_oip_request *q;
    char err[256];
    srv_oip_status st = parse_str(body, -1, &q, err);
    if (st != SRV_OIP_OK) fail_msg("%s", err);
    assert_int_equal(q->dtype, SRV_OIP_BYTES);
    assert_int_equal(q->n, 3);
    assert_null(q->u8);
    assert_null(q->f32);
    assert_null(q->id);
    assert_int_equal(q->items[0].len, 5);
    assert_memory_equal(q->items[0].data, "hello", 5);
    assert_int_equal(q->items[1].len, 2);
    assert_memory_equal(q->items[1].data, "\xff\x00", 2);
    assert_int_equal(q->items[2].len, 2);
    assert_memory_equal(q->items[2].data, "\xff\x00", 2);
    assert_int_equal(q->outputs, SRV_OIP_OUT_LABEL | SRV_OIP_OUT_PROBS);
    assert_int_equal(q->binary, SRV_OIP_OUT_PROBS);
    assert_int_equal(q->norder, 2);
    assert_int_equal(q->order[0], SRV_OIP_OUT_LABEL);
    assert_int_equal(q->order[1], SRV_OIP_OUT_PROBS);
    srv_oip_request_free(q);

    /* binary_data_output for all, overridden per output. */
    body = "{\"parameters\":{\"binary_data_output\":true,\"other\":[1,{}]},"
           "\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
           "\"data\":[\"aGVsbG8=\"]}],\"outputs\":[{\"name\":\"prediction\"},"
           "{\"name\":\"label\",\"parameters\":{\"binary_data\":false}}],"
           "\"model_name\":\"ignored\"}";
    assert_int_equal(parse_str(body, -1, &q, err), SRV_OIP_OK);
    assert_int_equal(q->binary, SRV_OIP_OUT_PRED);
    srv_oip_request_free(q);
}

static void test_parse_binary_inputs(void **state)
{
    (void)state;
    char hdr[256], err[256];
    uint8_t body[4096];
    srv_oip_request *q;

    /* UINT8 [2,784] */
    int h = snprintf(hdr, sizeof hdr,
                     "{\"inputs\":[{\"name\":\"input\","
                     "\"shape\":[2,784],\"datatype\":\"UINT8\",\"parameters\":"
                     "{\"binary_data_size\":1568}}]}");
    memcpy(body, hdr, (size_t)h);
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t k = 0; k < 784; k++) body[h + i * 784 + k] = pix(i, k);
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 1568, h, &lim, &q, err, sizeof err),
                     SRV_OIP_OK);
    check_pixels(q, 2);
    srv_oip_request_free(q);
    /* One byte short, one too many, or no header: refused. */
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 1567, h, &lim, &q, err, sizeof err),
                     SRV_OIP_ERR_BAD);
    assert_non_null(strstr(err, "binary_data_size"));
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 1568, -1, &lim, &q, err, sizeof err),
                     SRV_OIP_ERR_BAD);
    /* Header length larger than the body. */
    assert_int_equal(
        srv_oip_request_parse(body, (size_t)h + 1568, h + 5000, &lim, &q, err, sizeof err),
        SRV_OIP_ERR_BAD);
    assert_non_null(strstr(err, "larger than the body"));
    assert_null(q);

    /* FP32 [1,28,28], little-endian. */
    h = snprintf(hdr, sizeof hdr,
                 "{\"inputs\":[{\"name\":\"input\","
                 "\"shape\":[1,28,28],\"datatype\":\"FP32\",\"parameters\":"
                 "{\"binary_data_size\":3136}}]}");
    memcpy(body, hdr, (size_t)h);
    for (uint32_t k = 0; k < 784; k++) {
        float v = (float)pix(0, k) / 255.0f;
        uint32_t u;
        memcpy(&u, &v, 4);
        for (int b = 0; b < 4; b++) body[h + 4 * k + (uint32_t)b] = (uint8_t)(u >> (8 * b));
    }
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 3136, h, &lim, &q, err, sizeof err),
                     SRV_OIP_OK);
    check_pixels(q, 1);
    srv_oip_request_free(q);
    /* A value above 1 is refused. */
    body[h + 3] = 0x7f; /* element 0 becomes a huge float */
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 3136, h, &lim, &q, err, sizeof err),
                     SRV_OIP_ERR_BAD);

    /* BYTES [2]: length-prefixed elements. */
    h = snprintf(hdr, sizeof hdr,
                 "{\"inputs\":[{\"name\":\"input\","
                 "\"shape\":[2],\"datatype\":\"BYTES\",\"parameters\":"
                 "{\"binary_data_size\":15}}]}");
    memcpy(body, hdr, (size_t)h);
    memcpy(body + h, "\x05\0\0\0hello\x02\0\0\0hi", 15);
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 15, h, &lim, &q, err, sizeof err),
                     SRV_OIP_OK);
    assert_int_equal(q->items[0].len, 5);
    assert_memory_equal(q->items[0].data, "hello", 5);
    assert_int_equal(q->items[1].len, 2);
    assert_memory_equal(q->items[1].data, "hi", 2);
    assert_true(q->items[0].data < (const uint8_t *)body ||
                q->items[0].data >= (const uint8_t *)body + sizeof body);
    srv_oip_request_free(q);
    /* An element length running past the end. */
    body[h + 11] = 0x7f;
    assert_int_equal(srv_oip_request_parse(body, (size_t)h + 15, h, &lim, &q, err, sizeof err),
                     SRV_OIP_ERR_BAD);
}

/* ---- refused requests ---------------------------------------------------------- */

static void expect_refused(const char *body, size_t len, int64_t json_len, srv_oip_status want,
                           const char *needle)
{
    srv_oip_request *q = (srv_oip_request *)1;
    char err[256] = "";
    srv_oip_status st =
        srv_oip_request_parse((const uint8_t *)body, len, json_len, &lim, &q, err, sizeof err);
    if (st != want || !strstr(err, needle) || q != NULL)
        fail_msg("body %.80s: status %d (want %d), error '%s' (want '%s')", body, st, want, err,
                 needle);
}

#define REFUSED(body, want, needle) expect_refused(body, strlen(body), -1, want, needle)

#define IN(rest) "{\"inputs\":[{\"name\":\"input\"," rest "}]}"

static void test_parse_refusals(void **state)
{
    (void)state;
    const srv_oip_status B = SRV_OIP_ERR_BAD;
    REFUSED("", B, "empty body");
    REFUSED("[]", B, "not a JSON object");
    REFUSED("{\"inputs\":[{\"name\":\"input\"", B, "ends"); /* truncated */
    REFUSED("{\"inputs\":[]}", B, "inputs is empty");
    REFUSED("{\"inputs\":{}}", B, "inputs must be a list");
    REFUSED("{\"inputs\":5}", B, "inputs must be a list");
    REFUSED("{}", B, "no inputs");
    REFUSED("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],\"datatype\":"
            "\"UINT8\",\"data\":[0]},{}]}",
            B, "more than one tensor");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[1,2,3]"), B,
            "data has 3 elements; the shape needs 784");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"INT32\",\"data\":[1]"), B,
            "unsupported datatype 'INT32'");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"COMPLEX\",\"data\":[1]"), B,
            "unknown datatype 'COMPLEX'");
    REFUSED(IN("\"shape\":[1,32,32],\"datatype\":\"UINT8\",\"data\":[1]"), B,
            "is not an image batch");
    REFUSED(IN("\"shape\":[1,783],\"datatype\":\"UINT8\",\"data\":[1]"), B,
            "is not an image batch");
    REFUSED(IN("\"shape\":[2,2],\"datatype\":\"BYTES\",\"data\":[\"\"]"), B, "BYTES takes [N]");
    REFUSED(IN("\"shape\":[4294967296,4294967296,2],\"datatype\":\"UINT8\","
               "\"data\":[1]"),
            B, "overflows 64 bits");
    REFUSED(IN("\"shape\":[18446744073709551616],\"datatype\":\"BYTES\","
               "\"data\":[1]"),
            B, "does not fit in 64 bits");
    REFUSED(IN("\"shape\":[-1,784],\"datatype\":\"UINT8\",\"data\":[1]"), B,
            "must not be negative");
    REFUSED(IN("\"shape\":[1.5,784],\"datatype\":\"UINT8\",\"data\":[1]"), B, "must be an integer");
    REFUSED(IN("\"shape\":[0,784],\"datatype\":\"UINT8\",\"data\":[]"), B, "the batch is empty");
    REFUSED(IN("\"shape\":[],\"datatype\":\"UINT8\",\"data\":[]"), B, "shape is empty");
    REFUSED(IN("\"shape\":[1,1,1,1,1,1,1,1,1],\"datatype\":\"UINT8\",\"data\":[]"), B,
            "more than 8 dimensions");
    expect_refused(IN("\"shape\":[65,784],\"datatype\":\"UINT8\",\"data\":[1]"),
                   strlen(IN("\"shape\":[65,784],\"datatype\":\"UINT8\","
                             "\"data\":[1]")),
                   -1, SRV_OIP_ERR_TOO_LARGE, "over the limit of 64");
    REFUSED(IN("\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"!!!!\"]"), B, "not valid base64");
    REFUSED(IN("\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[7]"), B, "must be a string");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[\"a\"]"), B, "not a number");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[true]"), B, "not a number");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[256]"), B, "integers 0..255");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[-1]"), B, "integers 0..255");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[1.5]"), B, "integers 0..255");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"FP32\",\"data\":[1.5]"), B, "in [0,1]");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"FP32\",\"data\":[-0.1]"), B, "in [0,1]");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":5"), B, "data must be a list");
    /* The first pass over data only balances brackets; the second one
     * still holds every element to the grammar. */
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[1 2]"), B,
            "expected ',' or ']'");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[1,,2]"), B, "not a number");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[1e]"), B, "exponent");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":[{}]"), B,
            "data holds an object");
    REFUSED(IN("\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"]]\"]"), B, "not valid base64");
    REFUSED(IN("\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"a\x01\"]"), B,
            "control character");
    REFUSED(IN("\"shape\":[1,784],\"datatype\":\"UINT8\""), B, "no data");
    REFUSED(IN("\"datatype\":\"UINT8\",\"data\":[1]"), B, "no shape");
    REFUSED(IN("\"shape\":[1,784],\"data\":[1]"), B, "no datatype");
    REFUSED("{\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,784],"
            "\"datatype\":\"UINT8\",\"data\":[1]}]}",
            B, "unknown input 'pixels'");
    REFUSED("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],"
            "\"datatype\":\"UINT8\",\"data\":[1]}],\"outputs\":[{\"name\":"
            "\"logits\"}]}",
            B, "unknown output 'logits'");
    REFUSED("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],"
            "\"datatype\":\"UINT8\",\"data\":[1]}],\"outputs\":[{\"name\":"
            "\"label\"},{\"name\":\"label\"}]}",
            B, "requested twice");
    REFUSED("{\"id\":5,\"inputs\":[]}", B, "id must be a string");
    REFUSED("{\"inputs\":[]} x", B, "characters after");
    REFUSED("{\"inputs\":[1]} x", B, "must be an object");
    REFUSED("{\"a\":1} x", B, "characters after");
    REFUSED("{\"a\":\"\x01\"}", B, "control character");
    REFUSED("{\"a\":\"\\x\"}", B, "bad escape");
    REFUSED("{\"a\":01}", B, "expected ',' or '}'");
    REFUSED("{\"a\":tru}", B, "unexpected character");
    REFUSED("{\"id\":\"\xff\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],"
            "\"datatype\":\"UINT8\",\"data\":[1]}]}",
            B, "UTF-8");
}

static void test_parse_deep_nesting(void **state)
{
    (void)state;
    /* 100,000 levels: refused at level 33, without recursion that deep. */
    size_t depth = 100000;
    char *body = malloc(2 * depth + 64);
    static const char *const heads[] = {"{\"x\":", "{\"inputs\":[{\"name\":\"input\",\"data\":"};
    static const char *const tails[] = {"}", "}]}"};
    for (int t = 0; t < 2; t++) {
        size_t o = (size_t)sprintf(body, "%s", heads[t]);
        memset(body + o, '[', depth);
        o += depth;
        memset(body + o, ']', depth);
        o += depth;
        o += (size_t)sprintf(body + o, "%s", tails[t]);
        expect_refused(body, o, -1, SRV_OIP_ERR_BAD, "nested deeper than 32");
    }
    size_t o;
    /* Deep inside data, past the shape's rank but within the JSON limit. */
    o = (size_t)sprintf(body, IN("\"shape\":[1,784],\"datatype\":\"UINT8\","
                                 "\"data\":[[[[[[[[[[[1]]]]]]]]]]]"));
    expect_refused(body, o, -1, SRV_OIP_ERR_BAD, "data nested deeper than 8");
    free(body);
}

static void test_parse_every_prefix(void **state)
{
    (void)state;
    /* Every truncation of a valid request is refused cleanly. */
    char *body = uint8_body(1, "[1,28,28]", "UINT8", 1,
                            ",\"outputs\":[{\"name\":"
                            "\"label\",\"parameters\":{\"binary_data\":false}}]");
    size_t len = strlen(body);
    for (size_t n = 0; n < len; n++) {
        srv_oip_request *q;
        char err[256];
        assert_int_equal(
            srv_oip_request_parse((const uint8_t *)body, n, -1, &lim, &q, err, sizeof err),
            SRV_OIP_ERR_BAD);
        assert_null(q);
        assert_true(err[0] != '\0');
    }
    free(body);
}

/* ---- responses --------------------------------------------------------------------- */

static void test_response_json_and_binary(void **state)
{
    (void)state;
    const char *body = "{\"id\":\"a\\\"b\",\"inputs\":[{\"name\":\"input\",\"shape\":[2],"
                       "\"datatype\":\"BYTES\",\"data\":[\"aA==\",\"aQ==\"]}]}";
    srv_oip_request *q;
    char err[256];
    assert_int_equal(parse_str(body, -1, &q, err), SRV_OIP_OK);
    static const char *const labels[] = {"zero", "one", "two"};
    float probs[6] = {0.25f, 0.5f, 0.25f, 1.0f, 0.0f, 0.0f};
    int pred[2] = {1, 0};
    srv_oip_result r = {.model_name = "m",
                        .model_version = "1",
                        .req = q,
                        .n = 2,
                        .nclasses = 3,
                        .probs = probs,
                        .pred = pred,
                        .labels = labels};
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    size_t jl;
    srv_oip_response_write(&b, &r, &jl);
    assert_false(b.oom);
    assert_int_equal(jl, b.len);
    assert_string_equal(b.data,
                        "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":\"a\\\"b\","
                        "\"outputs\":[{\"name\":\"probabilities\",\"datatype\":\"FP32\","
                        "\"shape\":[2,3],\"data\":[0.25,0.5,0.25,1,0,0]},{\"name\":"
                        "\"prediction\",\"datatype\":\"INT64\",\"shape\":[2],\"data\":[1,0]},"
                        "{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":"
                        "[\"one\",\"zero\"]}]}");
    srv_buf_free(&b);

    /* All binary: JSON part, then each tensor in output order. */
    q->binary = SRV_OIP_OUT_ALL;
    r.model_version = NULL;
    srv_buf_init(&b, NULL, 0);
    srv_oip_response_write(&b, &r, &jl);
    const char *want_json =
        "{\"model_name\":\"m\",\"id\":\"a\\\"b\",\"outputs\":[{\"name\":"
        "\"probabilities\",\"datatype\":\"FP32\",\"shape\":[2,3],\"parameters\":"
        "{\"binary_data_size\":24}},{\"name\":\"prediction\",\"datatype\":"
        "\"INT64\",\"shape\":[2],\"parameters\":{\"binary_data_size\":16}},"
        "{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[2],\"parameters\":"
        "{\"binary_data_size\":15}}]}";
    assert_int_equal(jl, strlen(want_json));
    assert_memory_equal(b.data, want_json, jl);
    assert_int_equal(b.len, jl + 24 + 16 + 15);
    const uint8_t *p = (const uint8_t *)b.data + jl;
    for (int i = 0; i < 6; i++) {
        uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                     (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        float v;
        memcpy(&v, &u, 4);
        assert_true(v == probs[i]);
    }
    p += 24;
    assert_memory_equal(p, "\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
    p += 16;
    assert_memory_equal(p, "\x03\0\0\0one\x04\0\0\0zero", 15);
    srv_buf_free(&b);
    srv_oip_request_free(q);

    srv_buf_init(&b, NULL, 0);
    srv_oip_error_write(&b, "bad \"x\"");
    assert_string_equal(b.data, "{\"error\":\"bad \\\"x\\\"\"}");
    srv_buf_free(&b);
}

/* ---- our JSON body ------------------------------------------------------------------ */

static void test_images_parse(void **state)
{
    (void)state;
    srv_oip_item *items;
    uint8_t *store;
    uint32_t n;
    char err[256];
    const char *one = "{\"image\":\"aGVsbG8=\",\"other\":[1,2]}";
    assert_int_equal(srv_oip_images_parse((const uint8_t *)one, strlen(one), "image", 64, &items,
                                          &store, &n, err, sizeof err),
                     SRV_OIP_OK);
    assert_int_equal(n, 1);
    assert_int_equal(items[0].len, 5);
    assert_memory_equal(items[0].data, "hello", 5);
    free(items);
    free(store);

    /* A bad element is marked (data NULL), not fatal: the batch answers
     * it with its own error. */
    const char *many = "{\"images\":[\"aGk=\",\"%%%\",\"aGk\"]}";
    assert_int_equal(srv_oip_images_parse((const uint8_t *)many, strlen(many), "images", 3, &items,
                                          &store, &n, err, sizeof err),
                     SRV_OIP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(items[0].len, 2);
    assert_null(items[1].data);
    assert_int_equal(items[2].len, 2);
    free(items);
    free(store);

    assert_int_equal(srv_oip_images_parse((const uint8_t *)many, strlen(many), "images", 2, &items,
                                          &store, &n, err, sizeof err),
                     SRV_OIP_ERR_TOO_LARGE);
    assert_null(items);
    static const char *const badv[] = {
        "{}",         "{\"image\":5}",   "{\"images\":[]}", "{\"image\":\"aGk=\"",
        "[\"aGk=\"]", "{\"images\":[1]}"};
    static const char *const keys[] = {"image", "image", "images", "image", "image", "images"};
    for (size_t i = 0; i < sizeof badv / sizeof badv[0]; i++) {
        assert_int_equal(srv_oip_images_parse((const uint8_t *)badv[i], strlen(badv[i]), keys[i], 4,
                                              &items, &store, &n, err, sizeof err),
                         SRV_OIP_ERR_BAD);
        assert_null(items);
        assert_null(store);
    }
}

static void test_paths(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        srv_oip_path_kind kind;
        const char *name, *version;
    } cases[] = {
        {"/v2", SRV_OIP_PATH_SERVER, "", ""},
        {"/v2/health/live", SRV_OIP_PATH_LIVE, "", ""},
        {"/v2/health/ready", SRV_OIP_PATH_READY, "", ""},
        {"/v2/models/cnn", SRV_OIP_PATH_MODEL, "cnn", ""},
        {"/v2/models/cnn/ready", SRV_OIP_PATH_MODEL_READY, "cnn", ""},
        {"/v2/models/cnn/infer", SRV_OIP_PATH_INFER, "cnn", ""},
        {"/v2/models/cnn/versions/1", SRV_OIP_PATH_MODEL, "cnn", "1"},
        {"/v2/models/cnn/versions/1/ready", SRV_OIP_PATH_MODEL_READY, "cnn", "1"},
        {"/v2/models/a.b-c_d/versions/v10/infer", SRV_OIP_PATH_INFER, "a.b-c_d", "v10"},
        {"/v2/", SRV_OIP_PATH_UNKNOWN, "", ""},
        {"/v2/health", SRV_OIP_PATH_UNKNOWN, "", ""},
        {"/v2/models", SRV_OIP_PATH_UNKNOWN, "", ""},
        {"/v2/models/", SRV_OIP_PATH_UNKNOWN, "", ""},
        {"/v2/models//infer", SRV_OIP_PATH_UNKNOWN, "", ""},
        {"/v2/models/cnn/versions/", SRV_OIP_PATH_UNKNOWN, "cnn", ""},
        {"/v2/models/cnn/versions", SRV_OIP_PATH_UNKNOWN, "cnn", ""},
        {"/v2/models/cnn/infer/x", SRV_OIP_PATH_UNKNOWN, "cnn", ""},
        {"/v2/models/cnn/", SRV_OIP_PATH_UNKNOWN, "cnn", ""},
        {"/v2x", SRV_OIP_PATH_NONE, "", ""},
        {"/predict", SRV_OIP_PATH_NONE, "", ""},
        {"/v2/models/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/infer",
         SRV_OIP_PATH_INFER, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_oip_path p;
        srv_oip_path_kind k = srv_oip_path_parse(cases[i].path, &p);
        if (k != cases[i].kind || p.kind != k || strcmp(p.name, cases[i].name) != 0 ||
            strcmp(p.version, cases[i].version) != 0)
            fail_msg("%s: kind %d name '%s' version '%s'", cases[i].path, k, p.name, p.version);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_round_trip_and_rejects),
        cmocka_unit_test(test_parse_uint8_shapes),
        cmocka_unit_test(test_parse_fp32),
        cmocka_unit_test(test_parse_bytes_and_outputs),
        cmocka_unit_test(test_parse_binary_inputs),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_parse_deep_nesting),
        cmocka_unit_test(test_parse_every_prefix),
        cmocka_unit_test(test_response_json_and_binary),
        cmocka_unit_test(test_images_parse),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
