/* test_server_edges.c - the server's pure pieces at their limits.
 *
 * Every bounded configuration option is given its smallest and largest
 * accepted value and the first value past each end (refused, naming the
 * option), as a flag and as its environment variable; every histogram
 * bucket of the metrics receives a sample exactly on its bound (counted in
 * that bucket: Prometheus's "le" is inclusive) and one just above it; the
 * JSON writer, multipart boundaries, request ids, log lines and the models
 * directory meet their limits too. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "nn/net.h"
#include "server/buf.h"
#include "server/config.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/multipart.h"

#define TMPDIR_PREFIX "test_server_edges"
#include "tmpdir.h"

/* ---- configuration ------------------------------------------------------ */

static const char *env_name, *env_value;
static const char *one_env(const char *name)
{
    return env_name && strcmp(name, env_name) == 0 ? env_value : NULL;
}

/* Parses "--flag value" (and separately ENV=value); returns the action of
 * the flag form and checks the env form agrees. */
static srv_config_action parse1(srv_config *c, const char *flag, const char *env, const char *value,
                                char *err, size_t errlen)
{
    char *argv[] = {"mnist-server", (char *)flag, (char *)value, NULL};
    env_name = NULL;
    srv_config_action a = srv_config_parse(c, 3, argv, one_env, err, errlen);
    if (env) {
        srv_config ce;
        char e2[512] = "";
        env_name = env;
        env_value = value;
        srv_config_action b = srv_config_parse(&ce, 1, argv, one_env, e2, sizeof e2);
        env_name = NULL;
        if (a != b) fail_msg("%s '%s' gives %d, %s gives %d (%s)", flag, value, a, env, b, e2);
        if (b == SRV_CONFIG_ERROR && !strstr(e2, env))
            fail_msg("%s='%s': message '%s' does not name it", env, value, e2);
        if (b == SRV_CONFIG_RUN && memcmp(&ce, c, sizeof ce) != 0 &&
            strcmp(flag, "--models-dir") != 0) /* env keeps the default dir rule */
            fail_msg("%s='%s' configures differently from %s", env, value, flag);
    }
    return a;
}

static void accepted(const char *flag, const char *env, const char *value, srv_config *c)
{
    char err[512] = "";
    if (parse1(c, flag, env, value, err, sizeof err) != SRV_CONFIG_RUN)
        fail_msg("%s '%.60s' refused: %s", flag, value, err);
}

static void refused(const char *flag, const char *env, const char *value)
{
    srv_config c;
    char err[512] = "";
    if (parse1(&c, flag, env, value, err, sizeof err) != SRV_CONFIG_ERROR)
        fail_msg("%s '%.60s' accepted", flag, value);
    if (!strstr(err, flag)) fail_msg("%s '%.60s': message '%s' does not name it", flag, value, err);
}

/* The configured value an option sets (every numeric field fits a double
 * exactly). */
static double option_value(const srv_config *c, const char *flag)
{
    if (strcmp(flag, "--port") == 0) return c->port;
    if (strcmp(flag, "--threads") == 0) return c->threads;
    if (strcmp(flag, "--body-limit") == 0) return (double)c->body_limit;
    if (strcmp(flag, "--max-pixels") == 0) return (double)c->max_pixels;
    if (strcmp(flag, "--timeout") == 0) return c->timeout_s;
    if (strcmp(flag, "--max-connections") == 0) return c->max_connections;
    if (strcmp(flag, "--max-batch") == 0) return c->max_batch;
    if (strcmp(flag, "--grace") == 0 || strcmp(flag, "--drain-timeout") == 0)
        return c->drain_timeout_s;
    if (strcmp(flag, "--drain-delay") == 0) return c->drain_delay_s;
    if (strcmp(flag, "--batch-delay") == 0) return c->batch_delay_us;
    if (strcmp(flag, "--max-batch-size") == 0) return c->max_batch_size;
    fail_msg("no field known for %s", flag);
    return -1;
}

/* Each numeric option: accepted values (at both ends of the range, and
 * every spelling) with the value they set; refused values (just past each
 * end, and malformed). An empty value is refused as a flag only: an empty
 * environment variable counts as unset. */
#define MAX_CASES 10
static const struct {
    const char *flag, *env;
    struct {
        const char *text;
        double value;
    } ok[MAX_CASES];
    const char *bad[MAX_CASES];
} numeric_options[] = {
    {"--port",
     "MNIST_PORT",
     {{"0", 0}, {"65535", 65535}},
     {"65536", "-1", "", "18446744073709551616" /* 2^64: strtoull range */, "+80", " 80"}},
    {"--threads", "MNIST_THREADS", {{"1", 1}, {"1024", 1024}}, {"0", "1025"}},
    {"--body-limit",
     "MNIST_BODY_LIMIT",
     {{"1", 1},
      {"1073741824", 1u << 30},
      {"1GiB", 1u << 30},
      {"1048576k", 1u << 30},
      {"1024MB", 1u << 30}},
     {"0", "0k", "1073741825", "1048577k", "1025m", "2g",
      "18014398509481984k" /* 2^54 KiB: 2^64 bytes */, "99999999999999999999"}},
    {"--max-pixels",
     "MNIST_MAX_PIXELS",
     {{"1", 1}, {"4294967296", 4294967296.0}},
     {"0", "4294967297"}},
    {"--timeout", "MNIST_TIMEOUT", {{"1", 1}, {"86400", 86400}}, {"0", "86401"}},
    {"--max-connections",
     "MNIST_MAX_CONNECTIONS",
     {{"1", 1}, {"1000000", 1000000}},
     {"0", "1000001"}},
    {"--max-batch", "MNIST_MAX_BATCH", {{"1", 1}, {"1024", 1024}}, {"0", "1025"}},
    {"--batch-delay",
     "MNIST_BATCH_DELAY",
     {{"0", 0}, {"1000000", 1000000}},
     {"1000001", "-1", "1ms"}},
    {"--max-batch-size", "MNIST_MAX_BATCH_SIZE", {{"1", 1}, {"256", 256}}, {"0", "257"}},
    {"--grace",
     "MNIST_GRACE",
     {{"0", 0}, {"3600", 3600}, {".5", 0.5}, {"3.6e3", 3600}},
     {"3600.001", "-0", "nan", "inf", "1e400" /* overflows a double */, "5s"}},
    {"--drain-timeout", "MNIST_DRAIN_TIMEOUT", {{"0", 0}, {"3600", 3600}}, {"3600.001", "-0"}},
    {"--drain-delay",
     "MNIST_DRAIN_DELAY",
     {{"0", 0}, {"3600", 3600}, {".5", 0.5}},
     {"3600.001", "-0", "nan", "5s"}},
};

static void test_config_numeric_bounds(void **state)
{
    (void)state;
    srv_config c;
    for (size_t i = 0; i < sizeof numeric_options / sizeof numeric_options[0]; i++) {
        const char *flag = numeric_options[i].flag, *env = numeric_options[i].env;
        for (int k = 0; k < MAX_CASES && numeric_options[i].ok[k].text; k++) {
            accepted(flag, env, numeric_options[i].ok[k].text, &c);
            if (option_value(&c, flag) != numeric_options[i].ok[k].value)
                fail_msg("%s '%s' sets %g, want %g", flag, numeric_options[i].ok[k].text,
                         option_value(&c, flag), numeric_options[i].ok[k].value);
        }
        for (int k = 0; k < MAX_CASES && numeric_options[i].bad[k]; k++)
            refused(flag, *numeric_options[i].bad[k] ? env : NULL, numeric_options[i].bad[k]);
    }
    /* Dynamic batching: off by default; its own size, apart from
     * --max-batch. */
    srv_config_defaults(&c);
    assert_int_equal(c.batch_delay_us, 0);
    assert_int_equal(c.max_batch_size, 16);
    accepted("--max-batch-size", "MNIST_MAX_BATCH_SIZE", "1", &c);
    assert_int_equal(c.max_batch, 64);
}

static void test_config_length_bounds(void **state)
{
    (void)state;
    srv_config c;
    char s[8200];

    memset(s, 'h', 255);
    s[255] = 0; /* host[256] */
    accepted("--host", "MNIST_HOST", s, &c);
    assert_int_equal(strlen(c.host), 255);
    s[255] = 'h';
    s[256] = 0;
    refused("--host", "MNIST_HOST", s);
    /* An empty environment variable counts as unset, an empty flag is bad. */
    refused("--host", NULL, "");

    memset(s, 'd', 1023);
    s[1023] = 0; /* models_dir[1024] */
    accepted("--models-dir", "MNIST_MODELS_DIR", s, &c);
    assert_int_equal(strlen(c.models_dir), 1023);
    s[1023] = 'd';
    s[1024] = 0;
    refused("--models-dir", "MNIST_MODELS_DIR", s);
    refused("--models-dir", NULL, "");

    memset(s, 'n', 63);
    s[63] = 0; /* names: 1..63 */
    accepted("--default-model", "MNIST_DEFAULT_MODEL", s, &c);
    assert_string_equal(c.default_model, s);
    accepted("--default-model", "MNIST_DEFAULT_MODEL", "a", &c);
    s[63] = 'n';
    s[64] = 0;
    refused("--default-model", "MNIST_DEFAULT_MODEL", s);
    refused("--default-model", NULL, "");
    refused("--default-model", "MNIST_DEFAULT_MODEL", "a b");

    char err[512];
    srv_config_defaults(&c);
    memset(s, 'n', 63);
    strcpy(s + 63, "=p"); /* model name 63 */
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), 0);
    assert_int_equal(strlen(c.models[0].name), 63);
    memset(s, 'm', 64);
    strcpy(s + 64, "=p"); /* 64: refused */
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));
    strcpy(s, "=p");
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    strcpy(s, "x=");
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    strcpy(s, "x="); /* paths 4095 */
    memset(s + 2, 'p', SRV_PATHS_MAX - 1);
    s[2 + SRV_PATHS_MAX - 1] = 0;
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), 0);
    assert_int_equal(strlen(c.models[1].paths), SRV_PATHS_MAX - 1);
    strcpy(s, "y="); /* paths 4096 */
    memset(s + 2, 'p', SRV_PATHS_MAX);
    s[2 + SRV_PATHS_MAX] = 0;
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));

    /* At most SRV_MAX_MODELS models. */
    srv_config_defaults(&c);
    for (int i = 0; i < SRV_MAX_MODELS; i++) {
        snprintf(s, sizeof s, "m%d=p", i);
        if (srv_config_add_model(&c, s, err, sizeof err)) fail_msg("model %d: %s", i, err);
    }
    assert_int_equal(c.nmodels, SRV_MAX_MODELS);
    assert_int_equal(srv_config_add_model(&c, "one-more=p", err, sizeof err), -1);
    assert_non_null(strstr(err, "too many models"));
    assert_int_equal(c.nmodels, SRV_MAX_MODELS);

    /* MNIST_MODELS: the longest valid entry, and one that does not fit
     * the entry buffer (name 63 + '=' + paths 4095 = 4159 bytes fit). */
    memset(s, 'n', 63);
    s[63] = '=';
    memset(s + 64, 'p', SRV_PATHS_MAX - 1);
    s[64 + SRV_PATHS_MAX - 1] = 0;
    env_name = "MNIST_MODELS";
    env_value = s;
    char *argv[] = {"mnist-server", NULL};
    assert_int_equal(srv_config_parse(&c, 1, argv, one_env, err, sizeof err), SRV_CONFIG_RUN);
    assert_int_equal(c.nmodels, 1);
    size_t n = strlen(s);
    memset(s + n, 'p', 8100 - n);
    s[8100] = 0;
    assert_int_equal(srv_config_parse(&c, 1, argv, one_env, err, sizeof err), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "MNIST_MODELS"));
    env_name = NULL;

    /* Size parsing at its maximum, under every unit. */
    uint64_t v;
    assert_int_equal(srv_config_parse_size("1024", 1024, &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(srv_config_parse_size("1025", 1024, &v), -1);
    assert_int_equal(srv_config_parse_size("1k", 1024, &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(srv_config_parse_size("2kb", 2047, &v), -1);
    assert_int_equal(srv_config_parse_size("1G", 1u << 30, &v), 0);
    assert_int_equal(srv_config_parse_size("1GB", (1u << 30) - 1, &v), -1);
    assert_int_equal(srv_config_parse_size("0", 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(srv_config_parse_size("1kk", 1u << 30, &v), -1);
    assert_int_equal(srv_config_parse_size("1 k", 1u << 30, &v), -1);
    assert_int_equal(srv_config_parse_size("-1", 1u << 30, &v), -1);
    assert_int_equal(srv_config_parse_size(NULL, 1, &v), -1);
}

/* ---- metrics histograms -------------------------------------------------- */

/* The cumulative count on the line "NAME_bucket{LABEL=\"VALUE\",le=\"LE\"} N". */
static unsigned long long bucket_count(const char *text, const char *name, const char *label,
                                       const char *le)
{
    char key[200];
    snprintf(key, sizeof key, "%s_bucket{%s,le=\"%s\"} ", name, label, le);
    const char *p = strstr(text, key);
    if (!p) fail_msg("no line starting '%s' in:\n%s", key, text);
    return strtoull(p + strlen(key), NULL, 10);
}

#define DIGITS_MODEL                                                                              \
    {                                                                                             \
        .name = "m", .loaded = 1, .architecture = "a", .sha256 = "s", .nclasses = 10, .labels = { \
            "0",                                                                                  \
            "1",                                                                                  \
            "2",                                                                                  \
            "3",                                                                                  \
            "4",                                                                                  \
            "5",                                                                                  \
            "6",                                                                                  \
            "7",                                                                                  \
            "8",                                                                                  \
            "9"                                                                                   \
        }                                                                                         \
    }

typedef void record_fn(srv_metrics *m, uint64_t us);
static void rec_request(srv_metrics *m, uint64_t us)
{
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, us);
}
static void rec_inference(srv_metrics *m, uint64_t us) { srv_metrics_inference(m, 0, us, 0); }

/* For each bound b[i] (microseconds, rendered in seconds as les[i]): a
 * sample of exactly b[i] is in bucket i, not i-1; a sample of b[i] + 1 is
 * in bucket i+1 (or +Inf after the last bound). */
static void check_buckets(record_fn *rec, const char *name, const char *label, const uint64_t *b,
                          const char *const *les, int n)
{
    static const srv_metrics_model model = DIGITS_MODEL;
    for (int i = 0; i < n; i++) {
        for (int past = 0; past < 2; past++) {
            srv_metrics *m = srv_metrics_create(1);
            assert_non_null(m);
            rec(m, b[i] + (uint64_t)past);
            srv_buf out;
            srv_buf_init(&out, NULL, 0);
            srv_metrics_render(m, &out, &model, 1, 1, 0);
            assert_false(out.oom);
            /* the bucket the sample belongs to is the first with count 1 */
            int first = past ? i + 1 : i;
            for (int j = 0; j <= n; j++) {
                unsigned long long want = j >= first;
                unsigned long long got =
                    bucket_count(out.data, name, label, j < n ? les[j] : "+Inf");
                if (got != want)
                    fail_msg("%s: sample %llu us: bucket le=%s holds %llu, want %llu", name,
                             (unsigned long long)(b[i] + past), j < n ? les[j] : "+Inf", got, want);
            }
            srv_buf_free(&out);
            srv_metrics_free(m);
        }
    }
}

static void test_metrics_bucket_bounds(void **state)
{
    (void)state;
    static const uint64_t lat[] = {50,     100,     250,     500,     1000,   2500,
                                   5000,   10000,   25000,   50000,   100000, 250000,
                                   500000, 1000000, 2500000, 10000000};
    static const char *const lat_le[] = {"5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
                                         "0.005", "0.01",   "0.025",   "0.05",   "0.1",   "0.25",
                                         "0.5",   "1",      "2.5",     "10"};
    check_buckets(rec_request, "mnist_http_request_duration_seconds", "route=\"/predict\"", lat,
                  lat_le, 16);
    static const uint64_t inf[] = {10,   25,   50,   100,   250,   500,
                                   1000, 2500, 5000, 10000, 25000, 100000};
    static const char *const inf_le[] = {"1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
                                         "0.001", "0.0025",  "0.005", "0.01",   "0.025",   "0.1"};
    check_buckets(rec_inference, "mnist_inference_duration_seconds", "model=\"m\"", inf, inf_le,
                  12);

    /* Zero lands in the first bucket, the largest value in +Inf only. */
    static const srv_metrics_model model = DIGITS_MODEL;
    srv_metrics *m = srv_metrics_create(1);
    assert_non_null(m);
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 0);
    srv_metrics_inference(m, 0, 1000000000000ull, 9); /* 11.6 days */
    srv_metrics_inference(m, 1, 5, 0);                /* no model 1: not counted */
    srv_metrics_inference(m, -1, 5, 0);
    srv_metrics_inference(m, 0, 5, 10); /* class 10 of 10: time counted, class not */
    srv_metrics_inference(m, 0, 5, -1);
    srv_buf out;
    srv_buf_init(&out, NULL, 0);
    srv_metrics_render(m, &out, &model, 1, 0, 1);
    const char *req = "mnist_http_request_duration_seconds";
    assert_int_equal(bucket_count(out.data, req, "route=\"/predict\"", "5e-05"), 1);
    const char *inf_name = "mnist_inference_duration_seconds";
    assert_int_equal(bucket_count(out.data, inf_name, "model=\"m\"", "1e-05"), 2);
    assert_int_equal(bucket_count(out.data, inf_name, "model=\"m\"", "0.1"), 2);
    assert_int_equal(bucket_count(out.data, inf_name, "model=\"m\"", "+Inf"), 3);
    assert_non_null(strstr(out.data, "mnist_predictions_total{model=\"m\",class=\"9\"} 1\n"));
    assert_non_null(strstr(out.data, "mnist_ready 0\n"));
    assert_non_null(strstr(out.data, "mnist_draining 1\n"));
    srv_buf_free(&out);
    srv_metrics_free(m);

    /* Sizes the metrics refuse. */
    assert_null(srv_metrics_create(0));
    assert_null(srv_metrics_create(-1));
    /* A slot outside the table is not counted (and does not crash). */
    m = srv_metrics_create(1);
    assert_non_null(m);
    srv_metrics_inference(m, SRV_METRICS_MAX_MODELS, 5, 0);
    srv_metrics_inference(m, -1, 5, 0);
    srv_buf_init(&out, NULL, 0);
    srv_metrics_render(m, &out, &model, 1, 1, 0);
    assert_non_null(strstr(out.data, "mnist_inference_duration_seconds_count{model=\"m\"} 0\n"));
    srv_buf_free(&out);
    srv_metrics_free(m);
}

/* ---- JSON writing at the edges of the fast float path -------------------- */

static void json_float_is(double v, const char *want)
{
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_json_float(&b, v);
    if (strcmp(b.data, want)) fail_msg("%.17g written as %s, want %s", v, b.data, want);
    srv_buf_free(&b);
}

static void test_buf_edges(void **state)
{
    (void)state;
    json_float_is(0.5, "0.5");
    json_float_is(0.99999994f, "0.99999994");  /* the largest float < 1 */
    json_float_is(0.999999999, "0.999999999"); /* 9 digits still below 1 */
    json_float_is(0.9999999996, "1");          /* the 10th digit rounds up to 1 */
    json_float_is(1.0, "1");
    json_float_is(0.0, "0");
    json_float_is(0.00001, "0.00001");            /* e = -5: plain decimal */
    json_float_is(0.000001, "1e-6");              /* e = -6: exponent */
    json_float_is(0.0000099999999999, "0.00001"); /* rounds up across the switch */
    json_float_is(1.5e-38, "1.5e-38");            /* fast path's lower end */
    json_float_is(1e-38, "1e-38");                /* printf from here down */
    json_float_is(1e-45, "1e-45");
    json_float_is(-0.25, "-0.25");
    json_float_is(INFINITY, "0");
    json_float_is(-INFINITY, "0");
    json_float_is(123456789.0, "123456789");

    /* Every control character is escaped; 0x7f and UTF-8 pass through. */
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_buf_json_str(&b, "\r\t\x1f\x7f\xc3\xa9 ");
    assert_string_equal(b.data, "\"\\r\\t\\u001f\x7f\xc3\xa9 \"");
    srv_buf_free(&b);

    /* Detach: from caller storage, from nothing at all, after oom. */
    char store[16];
    size_t len = 99;
    srv_buf_init(&b, store, sizeof store);
    srv_buf_puts(&b, "abc");
    char *d = srv_buf_detach(&b, &len);
    assert_non_null(d);
    assert_true(d != store);
    assert_string_equal(d, "abc");
    assert_int_equal(len, 3);
    free(d);
    srv_buf_init(&b, NULL, 0);
    d = srv_buf_detach(&b, &len);
    assert_non_null(d);
    assert_string_equal(d, "");
    assert_int_equal(len, 0);
    free(d);
    srv_buf_init(&b, NULL, 0);
    b.oom = 1;
    srv_buf_puts(&b, "ignored");
    assert_null(srv_buf_detach(&b, &len));
    srv_buf_free(&b);
    /* Exactly filling caller storage (15 chars + NUL) stays in it. */
    srv_buf_init(&b, store, sizeof store);
    srv_buf_puts(&b, "123456789012345");
    assert_true(b.data == store);
    srv_buf_puts(&b, "6");
    assert_true(b.data != store);
    assert_string_equal(b.data, "1234567890123456");
    srv_buf_free(&b);
}

/* ---- multipart boundary length: 1..70 (RFC 2046) -------------------------- */

static void test_multipart_edges(void **state)
{
    (void)state;
    char ct[200], bnd[SRV_BOUNDARY_MAX], err[256];
    char b70[71];
    memset(b70, 'b', 70);
    b70[70] = 0;
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", b70);
    assert_int_equal(srv_multipart_boundary(ct, bnd, sizeof bnd), 0);
    assert_string_equal(bnd, b70);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%s\"", b70);
    assert_int_equal(srv_multipart_boundary(ct, bnd, sizeof bnd), 0);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%sb", b70);
    assert_int_equal(srv_multipart_boundary(ct, bnd, sizeof bnd), -1);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%sb\"", b70);
    assert_int_equal(srv_multipart_boundary(ct, bnd, sizeof bnd), -1);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; boundary=x", bnd, 2), 0);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; boundary=xy", bnd, 2), -1);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; boundary=\"x", bnd, sizeof bnd),
                     -1);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; boundary=\"\"", bnd, sizeof bnd),
                     -1);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; BOUNDARY=z", bnd, sizeof bnd), 0);
    assert_string_equal(bnd, "z");

    /* The parser's own cap on the boundary it is given. */
    srv_part parts[2];
    int n;
    char big[SRV_BOUNDARY_MAX + 2];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const uint8_t body[] = "--q\r\n\r\nx\r\n--q--";
    assert_int_equal(
        srv_multipart_parse(body, sizeof body - 1, big, "image", parts, 2, &n, err, sizeof err),
        SRV_MP_MALFORMED);
    assert_non_null(strstr(err, "boundary"));
    assert_int_equal(
        srv_multipart_parse(body, sizeof body - 1, "", "image", parts, 2, &n, err, sizeof err),
        SRV_MP_MALFORMED);
    /* A part with no headers at all lacks its Content-Disposition (RFC 7578). */
    assert_int_equal(
        srv_multipart_parse(body, sizeof body - 1, "q", "image", parts, 2, &n, err, sizeof err),
        SRV_MP_MALFORMED);
    assert_non_null(strstr(err, "part 1: missing or malformed Content-Disposition"));
    /* Exactly max_parts image parts fit; one more is too many. */
    const uint8_t two[] = "--q\r\nContent-Disposition: form-data; name=image\r\n\r\na\r\n"
                          "--q\r\nContent-Disposition: form-data; name=image\r\n\r\nb\r\n--q--";
    assert_int_equal(
        srv_multipart_parse(two, sizeof two - 1, "q", "image", parts, 2, &n, err, sizeof err),
        SRV_MP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(
        srv_multipart_parse(two, sizeof two - 1, "q", "image", parts, 1, &n, err, sizeof err),
        SRV_MP_TOO_MANY);
}

/* ---- request ids and log lines --------------------------------------------- */

/* Runs fn with stderr redirected into a file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", tmpdir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    dup2(fileno(f), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

static void log_some(void)
{
    char longmsg[2000];
    memset(longmsg, '\x01', sizeof longmsg - 1); /* grows 6x when escaped */
    longmsg[sizeof longmsg - 1] = 0;
    srv_log(SRV_WARN, "quote \" backslash \\ newline \n tab \t");
    srv_log(SRV_ERROR, "%s", longmsg);
    srv_access a = {.method = "POST",
                    .path = "/predict?x=\"a b\"\n",
                    .status = 200,
                    .bytes = 123,
                    .us = 456,
                    .rid = "r1",
                    .model = "mlp",
                    .model_version = 3,
                    .note = "client_closed"};
    srv_log_access(&a);
    srv_access b = {.method = "GET", .path = NULL, .status = 0, .rid = "r2"};
    srv_log_access(&b);
}

static void test_log_lines(void **state)
{
    (void)state;
    /* JSON: every line is one object with the fields it should have. */
    srv_log_init(1);
    char *out = capture_stderr(log_some);
    srv_log_init(0);
    int lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("line %d is not JSON: %.200s", lines, line);
        assert_non_null(cJSON_GetObjectItem(j, "ts"));
        const cJSON *msg = cJSON_GetObjectItem(j, "msg");
        assert_true(cJSON_IsString(msg));
        if (lines == 0) {
            assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "warn");
            assert_string_equal(msg->valuestring, "quote \" backslash \\ newline \n tab \t");
        }
        if (lines == 1) assert_int_equal(strlen(msg->valuestring), 1023); /* truncated */
        if (lines == 2) {
            assert_string_equal(msg->valuestring, "access");
            assert_string_equal(cJSON_GetObjectItem(j, "path")->valuestring,
                                "/predict?x=%22a%20b%22%0A");
            assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 200);
            assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "mlp");
            assert_int_equal(cJSON_GetObjectItem(j, "model_version")->valueint, 3);
            assert_string_equal(cJSON_GetObjectItem(j, "note")->valuestring, "client_closed");
        }
        if (lines == 3) {
            assert_string_equal(cJSON_GetObjectItem(j, "path")->valuestring, "");
            assert_null(cJSON_GetObjectItem(j, "model"));
            assert_null(cJSON_GetObjectItem(j, "model_version"));
            assert_null(cJSON_GetObjectItem(j, "note"));
        }
        cJSON_Delete(j);
    }
    assert_int_equal(lines, 4);
    free(out);

    /* Text: the same content, one line each, note and model as key=value. */
    out = capture_stderr(log_some);
    assert_non_null(strstr(out, " warn quote \" backslash"));
    assert_non_null(strstr(out, "path=/predict?x=%22a%20b%22%0A status=200 bytes=123 us=456 "
                                "rid=r1 model=mlp model_version=3 note=client_closed\n"));
    assert_non_null(strstr(out, "method=GET path= status=0 bytes=0 us=0 rid=r2\n"));
    free(out);

    /* Request ids: 1..128 characters of 0x21..0x7e but '"' and '\'. */
    char id[130];
    memset(id, '!', 128);
    id[128] = 0;
    assert_true(srv_reqid_valid(id));
    memset(id, '~', 128);
    assert_true(srv_reqid_valid(id));
    id[0] = ' ';
    assert_false(srv_reqid_valid(id));
    id[0] = '\x7f';
    assert_false(srv_reqid_valid(id));
    id[0] = '~';
    id[128] = '~';
    id[129] = 0;
    assert_false(srv_reqid_valid(id));

    /* Sanitising never splits an escape: it needs 3 bytes plus the NUL. */
    char s5[5], s4[4], s1[1];
    srv_log_sanitize("a b", s5, sizeof s5);
    assert_string_equal(s5, "a%20");
    srv_log_sanitize("a b", s4, sizeof s4);
    assert_string_equal(s4, "a");
    srv_log_sanitize("abc", s1, sizeof s1);
    assert_string_equal(s1, "");
}

/* ---- the models directory ----------------------------------------------------- */

static void save_tiny(const char *path)
{
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    assert_int_equal(nn_arch_parse("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]", L,
                                   &nl, err, sizeof err),
                     0);
    nn_net *net = nn_net_create(L, nl, 1, 28, 28, NULL, err, sizeof err);
    if (!net) fail_msg("%s", err);
    nn_net_init(net, 1);
    if (nn_net_save(net, path, err, sizeof err)) fail_msg("%s", err);
    nn_net_free(net);
}

static srv_config dir_cfg; /* must outlive the registry */

static srv_registry *load_dir(const char *dir, char *err, size_t errlen)
{
    srv_config_defaults(&dir_cfg);
    snprintf(dir_cfg.models_dir, sizeof dir_cfg.models_dir, "%s", dir);
    srv_registry_opts o = {.cfg = &dir_cfg, .nslots = 1, .settle_s = 0};
    return srv_registry_create(&o, err, errlen);
}

/* Models serving in r's current snapshot. */
static int served_count(srv_registry *r)
{
    srv_snapshot *v = srv_registry_acquire(r);
    int n = v->n;
    srv_snapshot_release(v);
    return n;
}

static void test_models_dir_limits(void **state)
{
    (void)state;
    char dir[200], path[400], src[400], err[512];
    snprintf(dir, sizeof dir, "%s/many", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(src, sizeof src, "%s/m00.safetensors", dir);
    save_tiny(src);
    /* SRV_MAX_MODELS files (links to one) load; one more is refused. */
    for (int i = 1; i <= SRV_MAX_MODELS; i++) {
        snprintf(path, sizeof path, "%s/m%02d.safetensors", dir, i);
        if (i == SRV_MAX_MODELS) {
            srv_registry *ms = load_dir(dir, err, sizeof err);
            if (!ms) fail_msg("%d models: %s", SRV_MAX_MODELS, err);
            assert_int_equal(served_count(ms), SRV_MAX_MODELS);
            srv_registry_free(ms);
        }
        assert_int_equal(link(src, path), 0);
    }
    assert_null(load_dir(dir, err, sizeof err));
    assert_non_null(strstr(err, "too many models (max 32)"));

    /* A file stem of 63 characters is a model name, 64 is too long. */
    snprintf(dir, sizeof dir, "%s/names", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    char stem[80];
    memset(stem, 'n', 63);
    stem[63] = 0;
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, stem);
    assert_int_equal(link(src, path), 0);
    srv_registry *ms = load_dir(dir, err, sizeof err);
    if (!ms) fail_msg("63-character name: %s", err);
    srv_snapshot *v = srv_registry_acquire(ms);
    assert_non_null(srv_snapshot_find(v, stem, 0));
    assert_null(srv_snapshot_find(v, "n", 0));
    srv_snapshot_release(v);
    srv_registry_free(ms);
    snprintf(path, sizeof path, "%s/%sn.safetensors", dir, stem);
    assert_int_equal(link(src, path), 0);
    assert_null(load_dir(dir, err, sizeof err));
    assert_non_null(strstr(err, "file name too long for a model name"));
    unlink(path);
    /* A stem that is not a valid name. */
    snprintf(path, sizeof path, "%s/a b.safetensors", dir);
    assert_int_equal(link(src, path), 0);
    assert_null(load_dir(dir, err, sizeof err));
    assert_non_null(strstr(err, "'a b' must be letters"));
    unlink(path);
    /* An ensemble list whose figure is the whole range's edge. */
    snprintf(path, sizeof path, "%s/ens.ensemble", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s.safetensors\n%s.safetensors\ntest_accuracy=1\n", stem, stem);
    fclose(f);
    ms = load_dir(dir, err, sizeof err);
    if (!ms) fail_msg("ensemble: %s", err);
    v = srv_registry_acquire(ms);
    const srv_model *ens = srv_snapshot_find(v, "ens", 0);
    assert_non_null(ens);
    assert_true(ens->test_accuracy == 1.0);
    assert_int_equal(ens->nmembers, 2);
    assert_ptr_not_equal(srv_snapshot_default(v), ens); /* the default is a single model */
    srv_snapshot_release(v);
    srv_registry_free(ms);
    srv_registry_free(NULL);
    /* No directory at all. */
    snprintf(path, sizeof path, "%s/none", tmpdir);
    assert_null(load_dir(path, err, sizeof err));
    assert_non_null(strstr(err, "models directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_numeric_bounds), cmocka_unit_test(test_config_length_bounds),
        cmocka_unit_test(test_metrics_bucket_bounds), cmocka_unit_test(test_buf_edges),
        cmocka_unit_test(test_multipart_edges),       cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_models_dir_limits),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
