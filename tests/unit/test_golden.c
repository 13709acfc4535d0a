/* test_golden.c - the C forward pass reproduces PyTorch's logits for the
 * shipped weights files (fixtures written by tests/golden/make_golden.py
 * from the same files; torch is not needed here). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <cmocka.h>

#include "nn/ensemble.h"
#include "nn/net.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

static void check_fixture(const char *fixture)
{
    char *text = slurp(fixture);
    if (!text) fail_msg("cannot read %s", fixture);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const char *model = cJSON_GetObjectItem(root, "model")->valuestring;
    char err[512];
    nn_net *net = nn_net_load(model, err, sizeof err);
    if (!net) fail_msg("%s: %s", fixture, err);
    const cJSON *inputs = cJSON_GetObjectItem(root, "inputs"),
                *logits = cJSON_GetObjectItem(root, "logits");
    int n = cJSON_GetArraySize(inputs), k = nn_net_outputs(net);
    assert_true(n >= 4);
    assert_int_equal(cJSON_GetArraySize(logits), n);
    nn_ws *ws = nn_ws_create(net, n, 0);
    float *x = malloc(sizeof(float) * n * 784), *z = malloc(sizeof(float) * n * k);
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(inputs, i);
        assert_int_equal(cJSON_GetArraySize(row), 784);
        for (int j = 0; j < 784; j++)
            x[i * 784 + j] = (float)cJSON_GetArrayItem(row, j)->valuedouble / 255.0f;
    }
    nn_net_forward(net, ws, x, n, NULL, z);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(logits, i);
        assert_int_equal(cJSON_GetArraySize(row), k);
        for (int j = 0; j < k; j++) {
            double d = fabs(z[i * k + j] - cJSON_GetArrayItem(row, j)->valuedouble);
            if (d > worst) worst = d;
        }
    }
    print_message("%s: %d inputs, largest |logit difference| %.2e\n", model, n, worst);
    assert_true(worst <= 1e-4);
    /* The serving path (batch norm folded into the convolutions) gives
     * PyTorch's probabilities too. */
    nn_ensemble *e = nn_ensemble_load(model, err, sizeof err);
    if (!e) fail_msg("%s: %s", model, err);
    nn_ensemble_ws *ews = nn_ensemble_ws_create(e, n);
    float *p = malloc(sizeof(float) * n * k);
    nn_ensemble_forward(e, ews, x, n, p);
    /* softmax(logits / T), T the file's temperature (1 unless calibrated). */
    double pworst = 0, t = net->meta.temperature;
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(logits, i);
        double m = -1e30, sum = 0;
        for (int j = 0; j < k; j++) m = fmax(m, cJSON_GetArrayItem(row, j)->valuedouble);
        for (int j = 0; j < k; j++) sum += exp((cJSON_GetArrayItem(row, j)->valuedouble - m) / t);
        for (int j = 0; j < k; j++) {
            double q = exp((cJSON_GetArrayItem(row, j)->valuedouble - m) / t) / sum;
            pworst = fmax(pworst, fabs(p[i * k + j] - q));
        }
    }
    print_message("%s: serving path, largest |probability difference| %.2e\n", model, pworst);
    assert_true(pworst <= 1e-5);
    free(p);
    nn_ensemble_ws_free(ews);
    nn_ensemble_free(e);
    free(x);
    free(z);
    nn_ws_free(ws);
    nn_net_free(net);
    cJSON_Delete(root);
    free(text);
}

static void test_golden_mlp(void **s)
{
    (void)s;
    check_fixture("tests/fixtures/golden_mlp.json");
}
static void test_golden_lenet(void **s)
{
    (void)s;
    check_fixture("tests/fixtures/golden_lenet.json");
}
static void test_golden_cnn(void **s)
{
    (void)s;
    check_fixture("tests/fixtures/golden_cnn.json");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_mlp),
        cmocka_unit_test(test_golden_lenet),
        cmocka_unit_test(test_golden_cnn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
