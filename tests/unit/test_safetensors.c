/* test_safetensors.c - the weights container: round trip, and every kind of
 * corruption refused with the message that names it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/safetensors.h"

/* A malloc'ed file image: 8-byte LE length (hlen, or strlen(json) when
 * hlen is UINT64_MAX), the JSON, then dlen data bytes 0,1,2,... */
static uint8_t *build(const char *json, uint64_t hlen, size_t dlen, size_t *len)
{
    size_t jlen = strlen(json);
    if (hlen == UINT64_MAX) hlen = jlen;
    *len = 8 + jlen + dlen;
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, json, jlen);
    for (size_t i = 0; i < dlen; i++) b[8 + jlen + i] = (uint8_t)i;
    return b;
}

/* Parses the image and requires a refusal whose message contains want. */
static void refused_raw(const char *json, uint64_t hlen, size_t dlen, const char *want)
{
    size_t len;
    uint8_t *b = build(json, hlen, dlen, &len);
    char err[512] = "";
    nn_st_file *f = nn_st_parse(b, len, err, sizeof err);
    if (f) {
        nn_st_free(f);
        fail_msg("accepted a bad file (wanted \"%s\"): %s", want, json);
    }
    if (!strstr(err, want)) fail_msg("message \"%s\" does not contain \"%s\"", err, want);
}

static void refused(const char *json, size_t dlen, const char *want)
{
    refused_raw(json, UINT64_MAX, dlen, want);
}

static nn_st_file *accepted(const char *json, size_t dlen)
{
    size_t len;
    uint8_t *b = build(json, UINT64_MAX, dlen, &len);
    char err[512] = "";
    nn_st_file *f = nn_st_parse(b, len, err, sizeof err);
    if (!f) fail_msg("refused a good file: %s (%s)", err, json);
    return f;
}

/* ---- round trip -------------------------------------------------------- */

#define TMPDIR_PREFIX "test_st"
#include "tmpdir.h"

static void test_round_trip(void **state)
{
    (void)state;
    float w[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    int64_t idx[4] = {7, -1, INT64_MAX, INT64_MIN};
    float scalar = 42.0f;
    int64_t sw[2] = {2, 3}, si[1] = {4}, sz[2] = {0, 5};

    nn_st_writer *wr = nn_st_writer_create();
    assert_non_null(wr);
    assert_int_equal(nn_st_writer_meta(wr, "format", "mnist-c"), 0);
    assert_int_equal(nn_st_writer_add(wr, "layer.0.weight", NN_ST_F32, 2, sw, w), 0);
    assert_int_equal(nn_st_writer_add(wr, "steps", NN_ST_I64, 1, si, idx), 0);
    assert_int_equal(nn_st_writer_add(wr, "scale", NN_ST_F32, 0, NULL, &scalar), 0);
    assert_int_equal(nn_st_writer_add(wr, "empty", NN_ST_F32, 2, sz, NULL), 0);
    assert_int_equal(nn_st_writer_meta(wr, "arch", "[\"quote\\\" and \\u00e9\"]"), 0);
    assert_int_equal(nn_st_writer_meta(wr, "format", "mnist-c-v1"), 0); /* replaces */

    char path[128], err[512] = "";
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    if (nn_st_writer_write(wr, path, err, sizeof err) != 0) fail_msg("write failed: %s", err);
    nn_st_writer_free(wr);

    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1); /* renamed away */

    /* Header padded so the data block is 8-byte aligned. */
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t lenb[8];
    assert_int_equal(fread(lenb, 1, 8, fp), 8);
    fclose(fp);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
    assert_int_equal(hlen % 8, 0);

    nn_st_file *f = nn_st_read(path, err, sizeof err);
    if (!f) fail_msg("read failed: %s", err);
    assert_int_equal(f->ntensors, 4);
    assert_int_equal(f->data_len, sizeof w + sizeof idx + sizeof scalar);
    assert_int_equal((uintptr_t)f->data % 8, 0);

    /* Sorted by offset = insertion order here; the empty tensor sits at the
     * end with begin == end. */
    assert_string_equal(f->tensors[0].name, "layer.0.weight");
    assert_string_equal(f->tensors[1].name, "steps");
    assert_string_equal(f->tensors[2].name, "scale");
    assert_string_equal(f->tensors[3].name, "empty");

    const nn_st_tensor *t = nn_st_find(f, "layer.0.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, NN_ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nelem, 6);
    assert_int_equal(t->nbytes, sizeof w);
    assert_memory_equal(t->data, w, sizeof w);

    t = nn_st_find(f, "steps");
    assert_non_null(t);
    assert_int_equal(t->dtype, NN_ST_I64);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 4);
    assert_memory_equal(t->data, idx, sizeof idx);

    t = nn_st_find(f, "scale");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->nelem, 1);
    assert_memory_equal(t->data, &scalar, sizeof scalar);

    t = nn_st_find(f, "empty");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 0);
    assert_int_equal(t->shape[1], 5);
    assert_int_equal(t->nelem, 0);
    assert_int_equal(t->nbytes, 0);

    assert_null(nn_st_find(f, "nope"));
    assert_int_equal(f->nmeta, 2);
    assert_string_equal(nn_st_meta(f, "format"), "mnist-c-v1");
    assert_string_equal(nn_st_meta(f, "arch"), "[\"quote\\\" and \\u00e9\"]");
    assert_null(nn_st_meta(f, "absent"));

    /* Every strict prefix of the file is refused: no truncation slips by. */
    for (size_t n = 0; n < f->len; n++) {
        uint8_t *b = malloc(n ? n : 1);
        assert_non_null(b);
        memcpy(b, f->buf, n);
        char e2[512] = "";
        nn_st_file *g = nn_st_parse(b, n, e2, sizeof e2);
        if (g) {
            nn_st_free(g);
            fail_msg("accepted the file truncated to %zu of %zu bytes", n, f->len);
        }
        assert_true(e2[0] != '\0');
    }
    nn_st_free(f);
}

static void test_writer_refuses_bad_input(void **state)
{
    (void)state;
    float x[4] = {0};
    int64_t s1[1] = {4}, neg[1] = {-1}, big[1] = {(1LL << 31) + 1};
    int64_t many[NN_ST_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    nn_st_writer *w = nn_st_writer_create();
    assert_non_null(w);
    assert_int_equal(nn_st_writer_add(w, "a", NN_ST_F32, 1, s1, x), 0);
    assert_int_equal(nn_st_writer_add(w, "a", NN_ST_F32, 1, s1, x), -1);            /* duplicate */
    assert_int_equal(nn_st_writer_add(w, "__metadata__", NN_ST_F32, 1, s1, x), -1); /* reserved */
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 1, neg, x), -1);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 1, big, x), -1);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, NN_ST_MAX_DIMS + 1, many, x), -1);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 1, s1, NULL), -1); /* no data */
    assert_int_equal(nn_st_writer_add(w, "b", (nn_st_dtype)7, 1, s1, x), -1);

    char err[512] = "";
    assert_int_equal(nn_st_writer_write(w, "/nonexistent-dir/x.safetensors", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    nn_st_writer_free(w);
    nn_st_writer_free(NULL);
    nn_st_free(NULL);
}

static void test_read_errors(void **state)
{
    (void)state;
    char err[512] = "";
    assert_null(nn_st_read("/nonexistent/m.safetensors", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/m.safetensors: cannot open"));
    assert_null(nn_st_read("/tmp", err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));

    /* A parse error through nn_st_read names the file. */
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite("\x02\0\0\0\0\0\0\0[]", 1, 10, fp), 10);
    assert_int_equal(fclose(fp), 0);
    assert_null(nn_st_read(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not a JSON object"));
}

/* ---- the header length --------------------------------------------------- */

static void test_header_length(void **state)
{
    (void)state;
    refused_raw("", 0, 0, "header length 0 is too small"); /* 8-byte file */
    refused_raw("{}", 0, 0, "header length 0 is too small");
    refused_raw("{}", 1, 0, "header length 1 is too small");
    refused_raw("{}", 3, 0, "larger than the file");
    refused_raw("{}", 1ULL << 40, 0, "exceeds the limit");
    refused_raw("{}", (uint64_t)NN_ST_MAX_HEADER + 1, 0, "exceeds the limit");
    refused_raw("{}", UINT64_MAX - 1, 0, "exceeds the limit");

    char err[128] = "";
    uint8_t *b = malloc(5);
    assert_non_null(b);
    memset(b, 0, 5);
    assert_null(nn_st_parse(b, 5, err, sizeof err));
    assert_non_null(strstr(err, "file too short"));
    assert_null(nn_st_parse(NULL, 0, err, sizeof err));
    assert_non_null(strstr(err, "file too short"));
}

/* ---- the JSON ---------------------------------------------------------- */

static void test_bad_json(void **state)
{
    (void)state;
    refused("{\"a\": ", 0, "not valid JSON");
    refused("{\"a\" 1}", 0, "not valid JSON");
    refused("nul", 0, "not valid JSON");
    refused("{}x", 0, "data after the JSON");
    refused("{} {}", 0, "data after the JSON");
    {
        /* A NUL inside the header (strings would end there, JSON may not). */
        size_t len;
        uint8_t *b = build("{}xx", UINT64_MAX, 0, &len);
        b[10] = '\0';
        char err[256] = "";
        assert_null(nn_st_parse(b, len, err, sizeof err));
        assert_non_null(strstr(err, "NUL byte"));
    }
    refused("[]", 0, "not a JSON object");
    refused("\"str\"", 0, "not a JSON object");
    refused("42", 0, "not a JSON object");

    /* Space padding (as the format allows) and an empty file are fine. */
    nn_st_file *f = accepted("{}      ", 0);
    assert_int_equal(f->ntensors, 0);
    assert_int_equal(f->nmeta, 0);
    nn_st_free(f);
    f = accepted(" {\"__metadata__\":{}} \n", 0);
    assert_int_equal(f->nmeta, 0);
    nn_st_free(f);
}

static void test_dtype(void **state)
{
    (void)state;
    refused("{\"conv.w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
            "tensor 'conv.w': unsupported dtype 'F16'");
    refused("{\"x\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
            "unsupported dtype 'f32'");
    refused("{\"x\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
            "tensor 'x': missing or non-string \"dtype\"");
    refused("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing or non-string \"dtype\"");
    refused("{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
            "appears twice");
    refused("{\"x\":[1,2]}", 0, "tensor 'x': entry is not an object");

    nn_st_file *f =
        accepted("{\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16);
    assert_int_equal(f->tensors[0].dtype, NN_ST_I64);
    assert_int_equal(f->tensors[0].nbytes, 16);
    nn_st_free(f);
}

static void test_shape(void **state)
{
    (void)state;
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
            "tensor 'w': shape [2,3] of F32 needs 24 bytes but data_offsets span 20");
    refused("{\"w\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
            "needs 24 bytes");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,\"2\"],\"data_offsets\":[0,8]}}", 8,
            "shape[1]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483649],\"data_offsets\":[0,4]}}", 4,
            "shape[0]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
            "9 dimensions");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":5,\"data_offsets\":[0,4]}}", 4,
            "non-array \"shape\"");
    /* 2^31 in each of 8 dims: 2^248 elements, the product must not wrap. */
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2147483648,"
            "2147483648,2147483648,2147483648,2147483648,2147483648],"
            "\"data_offsets\":[0,0]}}",
            0, "overflows");
    /* 2^63 elements fit in a u64 count; 2^65 bytes do not. */
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2],"
            "\"data_offsets\":[0,0]}}",
            0, "overflows");
}

static void test_offsets(void **state)
{
    (void)state;
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[0,100]}}", 24,
            "tensor 'w': data_offsets [0, 100] out of range");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 8,
            "data_offsets must be non-negative integers");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 8,
            "data_offsets must be non-negative integers");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
            "data_offsets must be non-negative integers");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e20]}}", 8,
            "data_offsets must be non-negative integers");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4,
            "data_offsets must be non-negative integers");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
            "must be [begin, end]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "must be [begin, end]");
    refused("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
            "begin after end");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
            24, "tensors 'a' and 'b' overlap");
    /* Identical ranges are an overlap too. */
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
            8, "overlap");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
            24, "gap of 8 bytes in the data block before tensor 'b'");
    refused("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
            "gap of 4 bytes");
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16,
            "8 bytes after the last tensor");
    refused("{}", 3, "3 bytes after the last tensor");

    /* Listed out of order in the JSON is fine: the reader sorts by offset. */
    nn_st_file *f = accepted("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                             "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                             12);
    assert_int_equal(f->ntensors, 2);
    assert_string_equal(f->tensors[0].name, "a");
    assert_string_equal(f->tensors[1].name, "b");
    assert_ptr_equal(f->tensors[1].data, f->data + 8);
    assert_int_equal(f->tensors[1].data[0], 8); /* build() fills bytes 0,1,2,... */
    nn_st_free(f);
}

static void test_names_and_metadata(void **state)
{
    (void)state;
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "duplicate tensor name 'a'");
    refused("{\"__metadata__\":{\"acc\":0.99}}", 0, "__metadata__ value for 'acc' is not a string");
    refused("{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", 0, "value for 'b' is not a string");
    refused("{\"__metadata__\":{\"a\":{\"nested\":\"x\"}}}", 0, "not a string");
    refused("{\"__metadata__\":[\"a\"]}", 0, "__metadata__ must be an object");
    refused("{\"__metadata__\":\"x\"}", 0, "__metadata__ must be an object");
    refused("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate __metadata__ key 'k'");
    refused("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__");

    nn_st_file *f = accepted("{\"__metadata__\":{\"k\":\"v\",\"e\":\"\"}}", 0);
    assert_string_equal(nn_st_meta(f, "k"), "v");
    assert_string_equal(nn_st_meta(f, "e"), "");
    nn_st_free(f);
}

static void test_fnv(void **state)
{
    (void)state;
    /* Published FNV-1a 64 test vectors. */
    assert_true(nn_st_fnv1a64("", 0, NN_ST_FNV_INIT) == 0xcbf29ce484222325ULL);
    assert_true(nn_st_fnv1a64("a", 1, NN_ST_FNV_INIT) == 0xaf63dc4c8601ec8cULL);
    assert_true(nn_st_fnv1a64("foobar", 6, NN_ST_FNV_INIT) == 0x85944171f73967e8ULL);
    /* Chaining over pieces equals hashing the whole. */
    uint64_t h = nn_st_fnv1a64("foo", 3, NN_ST_FNV_INIT);
    assert_true(nn_st_fnv1a64("bar", 3, h) == 0x85944171f73967e8ULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_refuses_bad_input),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_dtype),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_names_and_metadata),
        cmocka_unit_test(test_fnv),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
