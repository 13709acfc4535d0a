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

#include "nn/net.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
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
    const cJSON *inputs = cJSON_GetObjectItem(root, "inputs"), *logits = cJSON_GetObjectItem(root, "logits");
    int n = cJSON_GetArraySize(inputs), k = nn_net_outputs(net);
    assert_true(n >= 4);
    assert_int_equal(cJSON_GetArraySize(logits), n);
    nn_ws *ws = nn_ws_create(net, n, 0);
    float *x = malloc(sizeof(float) * n * 784), *z = malloc(sizeof(float) * n * k);
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(inputs, i);
        assert_int_equal(cJSON_GetArraySize(row), 784);
        for (int j = 0; j < 784; j++) x[i * 784 + j] = (float)cJSON_GetArrayItem(row, j)->valuedouble / 255.0f;
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
    free(x); free(z);
    nn_ws_free(ws);
    nn_net_free(net);
    cJSON_Delete(root);
    free(text);
}

static void test_golden_mlp(void **s) { (void)s; check_fixture("tests/fixtures/golden_mlp.json"); }
static void test_golden_lenet(void **s) { (void)s; check_fixture("tests/fixtures/golden_lenet.json"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_mlp),
        cmocka_unit_test(test_golden_lenet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
