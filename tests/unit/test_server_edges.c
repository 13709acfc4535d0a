/* test_server_edges.c - the server's pure pieces at their limits.
 *
 * Every bounded configuration option is given its smallest and largest
 * accepted value and the first value past each end (refused, naming the
 * option), as a flag and as its environment variable; every histogram
 * bucket of the metrics receives a sample exactly on its bound (counted in
 * that bucket: Prometheus's "le" is inclusive) and one just above it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/buf.h"
#include "server/config.h"
#include "server/metrics.h"

/* ---- configuration ------------------------------------------------------ */

static const char *env_name, *env_value;
static const char *one_env(const char *name)
{
    return env_name && strcmp(name, env_name) == 0 ? env_value : NULL;
}

/* Parses "--flag value" (and separately ENV=value); returns the action of
 * the flag form and checks the env form agrees. */
static srv_config_action parse1(srv_config *c, const char *flag, const char *env,
                                const char *value, char *err, size_t errlen)
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
        if (a != b)
            fail_msg("%s '%s' gives %d, %s gives %d (%s)", flag, value, a, env, b, e2);
        if (b == SRV_CONFIG_ERROR && !strstr(e2, env))
            fail_msg("%s='%s': message '%s' does not name it", env, value, e2);
        if (b == SRV_CONFIG_RUN && memcmp(&ce, c, sizeof ce) != 0 &&
            strcmp(flag, "--models-dir") != 0)   /* env keeps the default dir rule */
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

static void test_config_numeric_bounds(void **state)
{
    (void)state;
    srv_config c;
    accepted("--port", "MNIST_PORT", "0", &c);         assert_int_equal(c.port, 0);
    accepted("--port", "MNIST_PORT", "65535", &c);     assert_int_equal(c.port, 65535);
    refused("--port", "MNIST_PORT", "65536");
    refused("--port", "MNIST_PORT", "-1");
    refused("--port", NULL, "");              /* an empty variable counts as unset */
    refused("--port", "MNIST_PORT", "18446744073709551616");   /* 2^64: strtoull range */
    refused("--port", "MNIST_PORT", "+80");
    refused("--port", "MNIST_PORT", " 80");

    accepted("--threads", "MNIST_THREADS", "1", &c);      assert_int_equal(c.threads, 1);
    accepted("--threads", "MNIST_THREADS", "1024", &c);   assert_int_equal(c.threads, 1024);
    refused("--threads", "MNIST_THREADS", "0");
    refused("--threads", "MNIST_THREADS", "1025");

    accepted("--body-limit", "MNIST_BODY_LIMIT", "1", &c);
    assert_int_equal(c.body_limit, 1);
    accepted("--body-limit", "MNIST_BODY_LIMIT", "1073741824", &c);
    assert_int_equal(c.body_limit, 1u << 30);
    accepted("--body-limit", "MNIST_BODY_LIMIT", "1GiB", &c);
    assert_int_equal(c.body_limit, 1u << 30);
    accepted("--body-limit", "MNIST_BODY_LIMIT", "1048576k", &c);
    assert_int_equal(c.body_limit, 1u << 30);
    accepted("--body-limit", "MNIST_BODY_LIMIT", "1024MB", &c);
    assert_int_equal(c.body_limit, 1u << 30);
    refused("--body-limit", "MNIST_BODY_LIMIT", "0");
    refused("--body-limit", "MNIST_BODY_LIMIT", "0k");
    refused("--body-limit", "MNIST_BODY_LIMIT", "1073741825");
    refused("--body-limit", "MNIST_BODY_LIMIT", "1048577k");
    refused("--body-limit", "MNIST_BODY_LIMIT", "1025m");
    refused("--body-limit", "MNIST_BODY_LIMIT", "2g");
    refused("--body-limit", "MNIST_BODY_LIMIT", "18014398509481984k");  /* 2^54 KiB: 2^64 bytes */
    refused("--body-limit", "MNIST_BODY_LIMIT", "99999999999999999999");

    accepted("--max-pixels", "MNIST_MAX_PIXELS", "1", &c);
    assert_int_equal(c.max_pixels, 1);
    accepted("--max-pixels", "MNIST_MAX_PIXELS", "4294967296", &c);
    assert_int_equal(c.max_pixels, 4294967296ull);
    refused("--max-pixels", "MNIST_MAX_PIXELS", "0");
    refused("--max-pixels", "MNIST_MAX_PIXELS", "4294967297");

    accepted("--timeout", "MNIST_TIMEOUT", "1", &c);       assert_int_equal(c.timeout_s, 1);
    accepted("--timeout", "MNIST_TIMEOUT", "86400", &c);   assert_int_equal(c.timeout_s, 86400);
    refused("--timeout", "MNIST_TIMEOUT", "0");
    refused("--timeout", "MNIST_TIMEOUT", "86401");

    accepted("--max-connections", "MNIST_MAX_CONNECTIONS", "1", &c);
    assert_int_equal(c.max_connections, 1);
    accepted("--max-connections", "MNIST_MAX_CONNECTIONS", "1000000", &c);
    assert_int_equal(c.max_connections, 1000000);
    refused("--max-connections", "MNIST_MAX_CONNECTIONS", "0");
    refused("--max-connections", "MNIST_MAX_CONNECTIONS", "1000001");

    accepted("--max-batch", "MNIST_MAX_BATCH", "1", &c);      assert_int_equal(c.max_batch, 1);
    accepted("--max-batch", "MNIST_MAX_BATCH", "1024", &c);   assert_int_equal(c.max_batch, 1024);
    refused("--max-batch", "MNIST_MAX_BATCH", "0");
    refused("--max-batch", "MNIST_MAX_BATCH", "1025");

    accepted("--grace", "MNIST_GRACE", "0", &c);        assert_true(c.drain_timeout_s == 0);
    accepted("--grace", "MNIST_GRACE", "3600", &c);     assert_true(c.drain_timeout_s == 3600);
    accepted("--grace", "MNIST_GRACE", ".5", &c);       assert_true(c.drain_timeout_s == 0.5);
    accepted("--grace", "MNIST_GRACE", "3.6e3", &c);    assert_true(c.drain_timeout_s == 3600);
    refused("--grace", "MNIST_GRACE", "3600.001");
    refused("--grace", "MNIST_GRACE", "-0");
    refused("--grace", "MNIST_GRACE", "nan");
    refused("--grace", "MNIST_GRACE", "inf");
    refused("--grace", "MNIST_GRACE", "1e400");          /* overflows a double */
    refused("--grace", "MNIST_GRACE", "5s");

    accepted("--drain-timeout", "MNIST_DRAIN_TIMEOUT", "0", &c);
    assert_true(c.drain_timeout_s == 0);
    accepted("--drain-timeout", "MNIST_DRAIN_TIMEOUT", "3600", &c);
    assert_true(c.drain_timeout_s == 3600);
    refused("--drain-timeout", "MNIST_DRAIN_TIMEOUT", "3600.001");
    refused("--drain-timeout", "MNIST_DRAIN_TIMEOUT", "-0");

    accepted("--drain-delay", "MNIST_DRAIN_DELAY", "0", &c);
    assert_true(c.drain_delay_s == 0);
    accepted("--drain-delay", "MNIST_DRAIN_DELAY", "3600", &c);
    assert_true(c.drain_delay_s == 3600);
    accepted("--drain-delay", "MNIST_DRAIN_DELAY", ".5", &c);
    assert_true(c.drain_delay_s == 0.5);
    refused("--drain-delay", "MNIST_DRAIN_DELAY", "3600.001");
    refused("--drain-delay", "MNIST_DRAIN_DELAY", "-0");
    refused("--drain-delay", "MNIST_DRAIN_DELAY", "nan");
    refused("--drain-delay", "MNIST_DRAIN_DELAY", "5s");
}

static void test_config_length_bounds(void **state)
{
    (void)state;
    srv_config c;
    char s[8200];

    memset(s, 'h', 255); s[255] = 0;                        /* host[256] */
    accepted("--host", "MNIST_HOST", s, &c);
    assert_int_equal(strlen(c.host), 255);
    s[255] = 'h'; s[256] = 0;
    refused("--host", "MNIST_HOST", s);
    /* An empty environment variable counts as unset, an empty flag is bad. */
    refused("--host", NULL, "");

    memset(s, 'd', 1023); s[1023] = 0;                      /* models_dir[1024] */
    accepted("--models-dir", "MNIST_MODELS_DIR", s, &c);
    assert_int_equal(strlen(c.models_dir), 1023);
    s[1023] = 'd'; s[1024] = 0;
    refused("--models-dir", "MNIST_MODELS_DIR", s);
    refused("--models-dir", NULL, "");

    memset(s, 'n', 63); s[63] = 0;                          /* names: 1..63 */
    accepted("--default-model", "MNIST_DEFAULT_MODEL", s, &c);
    assert_string_equal(c.default_model, s);
    accepted("--default-model", "MNIST_DEFAULT_MODEL", "a", &c);
    s[63] = 'n'; s[64] = 0;
    refused("--default-model", "MNIST_DEFAULT_MODEL", s);
    refused("--default-model", NULL, "");
    refused("--default-model", "MNIST_DEFAULT_MODEL", "a b");

    char err[512];
    srv_config_defaults(&c);
    memset(s, 'n', 63); strcpy(s + 63, "=p");               /* model name 63 */
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), 0);
    assert_int_equal(strlen(c.models[0].name), 63);
    memset(s, 'm', 64); strcpy(s + 64, "=p");               /* 64: refused */
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));
    strcpy(s, "=p");
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    strcpy(s, "x=");
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), -1);
    strcpy(s, "x=");                                         /* paths 4095 */
    memset(s + 2, 'p', SRV_PATHS_MAX - 1); s[2 + SRV_PATHS_MAX - 1] = 0;
    assert_int_equal(srv_config_add_model(&c, s, err, sizeof err), 0);
    assert_int_equal(strlen(c.models[1].paths), SRV_PATHS_MAX - 1);
    strcpy(s, "y=");                                         /* paths 4096 */
    memset(s + 2, 'p', SRV_PATHS_MAX); s[2 + SRV_PATHS_MAX] = 0;
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
    memset(s, 'n', 63); s[63] = '=';
    memset(s + 64, 'p', SRV_PATHS_MAX - 1); s[64 + SRV_PATHS_MAX - 1] = 0;
    env_name = "MNIST_MODELS"; env_value = s;
    char *argv[] = {"mnist-server", NULL};
    assert_int_equal(srv_config_parse(&c, 1, argv, one_env, err, sizeof err), SRV_CONFIG_RUN);
    assert_int_equal(c.nmodels, 1);
    size_t n = strlen(s);
    memset(s + n, 'p', 8100 - n); s[8100] = 0;
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

#define DIGITS_MODEL {.name = "m", .architecture = "a", .sha256 = "s", .nclasses = 10, \
                      .labels = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}}

typedef void record_fn(srv_metrics *m, uint64_t us);
static void rec_request(srv_metrics *m, uint64_t us) { srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, us); }
static void rec_inference(srv_metrics *m, uint64_t us) { srv_metrics_inference(m, 0, us, 0); }

/* For each bound b[i] (microseconds, rendered in seconds as les[i]): a
 * sample of exactly b[i] is in bucket i, not i-1; a sample of b[i] + 1 is
 * in bucket i+1 (or +Inf after the last bound). */
static void check_buckets(record_fn *rec, const char *name, const char *label,
                          const uint64_t *b, const char *const *les, int n)
{
    static const srv_metrics_model model = DIGITS_MODEL;
    for (int i = 0; i < n; i++) {
        for (int past = 0; past < 2; past++) {
            srv_metrics *m = srv_metrics_create(&model, 1, 1);
            assert_non_null(m);
            rec(m, b[i] + (uint64_t)past);
            srv_buf out;
            srv_buf_init(&out, NULL, 0);
            srv_metrics_render(m, &out, 1, 0);
            assert_false(out.oom);
            /* the bucket the sample belongs to is the first with count 1 */
            int first = past ? i + 1 : i;
            for (int j = 0; j <= n; j++) {
                unsigned long long want = j >= first;
                unsigned long long got = bucket_count(out.data, name, label, j < n ? les[j] : "+Inf");
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
    static const uint64_t lat[] = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                                   100000, 250000, 500000, 1000000, 2500000, 10000000};
    static const char *const lat_le[] = {"5e-05", "0.0001", "0.00025", "0.0005", "0.001",
                                         "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                         "0.25", "0.5", "1", "2.5", "10"};
    check_buckets(rec_request, "mnist_http_request_duration_seconds", "route=\"/predict\"", lat,
                  lat_le, 16);
    static const uint64_t inf[] = {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000,
                                   100000};
    static const char *const inf_le[] = {"1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025",
                                         "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                         "0.1"};
    check_buckets(rec_inference, "mnist_inference_duration_seconds", "model=\"m\"", inf, inf_le,
                  12);

    /* Zero lands in the first bucket, the largest value in +Inf only. */
    static const srv_metrics_model model = DIGITS_MODEL;
    srv_metrics *m = srv_metrics_create(&model, 1, 1);
    assert_non_null(m);
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 0);
    srv_metrics_inference(m, 0, 1000000000000ull, 9);   /* 11.6 days */
    srv_metrics_inference(m, 1, 5, 0);      /* no model 1: not counted */
    srv_metrics_inference(m, -1, 5, 0);
    srv_metrics_inference(m, 0, 5, 10);     /* class 10 of 10: time counted, class not */
    srv_metrics_inference(m, 0, 5, -1);
    srv_buf out;
    srv_buf_init(&out, NULL, 0);
    srv_metrics_render(m, &out, 0, 1);
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
    assert_null(srv_metrics_create(&model, 1, 0));
    assert_null(srv_metrics_create(&model, -1, 1));
    assert_null(srv_metrics_create(&model, SRV_METRICS_MAX_MODELS + 1, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_numeric_bounds),
        cmocka_unit_test(test_config_length_bounds),
        cmocka_unit_test(test_metrics_bucket_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
