/* test_registry.c - the model registry (server/registry.h): the versions
 * layout, reloads that pick up new, changed and removed files, failures
 * that never replace a working model, unload/load, the default model, and
 * snapshots that keep their models alive while readers run forward passes
 * during reloads (run under ThreadSanitizer by make tsan). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/net.h"
#include "server/log.h"
#include "server/registry.h"

static const char *MLP = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":%d}]";

/* A flatten-dense net for [1,side,side] inputs with k classes. */
static void save_net(const char *path, int side, int k, double acc, uint64_t seed)
{
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    char arch[128], err[256];
    snprintf(arch, sizeof arch, MLP, k);
    assert_int_equal(nn_arch_parse(arch, layers, &nl, err, sizeof err), 0);
    nn_meta meta = {.nclasses = k, .input_mean = 0, .input_std = 1, .test_accuracy = acc};
    snprintf(meta.dataset, sizeof meta.dataset, "mnist");
    for (int i = 0; i < k; i++) snprintf(meta.labels[i], sizeof meta.labels[i], "%d", i);
    nn_net *net = nn_net_create(layers, nl, 1, side, side, &meta, err, sizeof err);
    if (!net) fail_msg("nn_net_create: %s", err);
    nn_net_init(net, seed);
    /* Written under another name and renamed, as publishers should. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (nn_net_save(net, tmp, err, sizeof err) != 0) fail_msg("nn_net_save: %s", err);
    assert_int_equal(rename(tmp, path), 0);
    nn_net_free(net);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

typedef struct {
    char dir[64];
    srv_config cfg;
    srv_registry *reg;
} fixture;

static void path_of(const fixture *fx, char *out, size_t n, const char *rel)
{
    snprintf(out, n, "%s/%s", fx->dir, rel);
}

static void put_net(const fixture *fx, const char *rel, int k, double acc, uint64_t seed)
{
    char p[512];
    path_of(fx, p, sizeof p, rel);
    save_net(p, 28, k, acc, seed);
}

static void rm(const fixture *fx, const char *rel)
{
    char p[512];
    path_of(fx, p, sizeof p, rel);
    assert_int_equal(unlink(p), 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/test_registryXXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    srv_config_defaults(&fx->cfg);
    snprintf(fx->cfg.models_dir, sizeof fx->cfg.models_dir, "%s", fx->dir);
    char p[512];
    path_of(fx, p, sizeof p, "digits");
    assert_int_equal(mkdir(p, 0755), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    srv_registry_free(fx->reg);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static srv_registry *open_reg(fixture *fx, int nslots)
{
    char err[1200];
    srv_registry_opts o = {.cfg = &fx->cfg, .nslots = nslots, .settle_s = 0};
    fx->reg = srv_registry_create(&o, err, sizeof err);
    if (!fx->reg) fail_msg("srv_registry_create: %s", err);
    return fx->reg;
}

/* The version of NAME that answers without a version asked for; 0 when
 * NAME does not serve. */
static int served(srv_registry *r, const char *name)
{
    srv_snapshot *v = srv_registry_acquire(r);
    const srv_model *m = srv_snapshot_find(v, name, 0);
    int ver = m ? m->version : 0;
    srv_snapshot_release(v);
    return ver;
}

/* The index entry of name/version in the current snapshot, copied. */
static int index_entry(srv_registry *r, const char *name, int version, srv_index_entry *out)
{
    srv_snapshot *v = srv_registry_acquire(r);
    int found = 0;
    for (int i = 0; i < v->nindex; i++)
        if (strcmp(v->index[i].name, name) == 0 && v->index[i].version == version) {
            *out = v->index[i];
            found = 1;
        }
    srv_snapshot_release(v);
    return found;
}

static uint64_t failures(srv_registry *r, const char *name)
{
    srv_snapshot *v = srv_registry_acquire(r);
    uint64_t n = (uint64_t)-1;
    for (int k = 0; k < v->ninfo; k++)
        if (v->info[k].name && strcmp(v->info[k].name, name) == 0) n = v->info[k].load_failures;
    srv_snapshot_release(v);
    return n;
}

/* A forward pass on m through slot's workspace: probabilities sum to 1. */
static void forward_ok(const srv_model *m, int slot)
{
    float x[PIPE_PIXELS] = {0};
    for (int y = 4; y < 24; y++) x[y * PIPE_SIDE + 10] = 1.0f;
    pipe_result res;
    pipe_run_tensors(m->ens, srv_model_ws(m, slot), PIPE_F32, x, 1, &res);
    assert_int_equal(res.status, PIPE_OK);
    double sum = 0;
    for (int c = 0; c < res.nclasses; c++) sum += res.probs[c];
    assert_true(fabs(sum - 1) < 1e-4);
}

/* ---- parsing ------------------------------------------------------------- */

static void test_spec_parse(void **state)
{
    (void)state;
    char name[SRV_NAME_MAX];
    int v = -1;
    assert_int_equal(srv_model_spec_parse("cnn", name, &v), 0);
    assert_string_equal(name, "cnn");
    assert_int_equal(v, 0);
    assert_int_equal(srv_model_spec_parse("cnn-2.b:12", name, &v), 0);
    assert_string_equal(name, "cnn-2.b");
    assert_int_equal(v, 12);
    assert_int_equal(srv_model_spec_parse("cnn:999999999", name, &v), 0);
    assert_int_equal(v, 999999999);
    const char *bad[] = {"",       ":1",      "cnn:", "cnn:0",          "cnn:01", "cnn:-1",
                         "cnn:1x", "cnn:1:2", "c n",  "cnn:1000000000", "a/b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (srv_model_spec_parse(bad[i], name, &v) == 0) fail_msg("'%s' accepted", bad[i]);
    assert_int_equal(srv_model_version_parse("7", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(srv_model_version_parse("07", &v), -1);
    assert_int_equal(srv_model_version_parse("", &v), -1);
    assert_int_equal(srv_model_version_parse(NULL, &v), -1);
}

/* ---- configuration ---------------------------------------------------------- */

static const char *env_poll(const char *name)
{
    if (strcmp(name, "MNIST_POLL_INTERVAL") == 0) return "2.5";
    if (strcmp(name, "MNIST_ENABLE_MODEL_CONTROL") == 0) return "on";
    return NULL;
}

static void test_config_options(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    char *none[] = {"mnist-server"};
    assert_int_equal(srv_config_parse(&c, 1, none, NULL, err, sizeof err), SRV_CONFIG_RUN);
    assert_int_equal(c.keep_versions, 1);
    assert_true(c.poll_s == 0);
    assert_int_equal(c.model_control, 0);
    char *on[] = {"mnist-server", "--keep-versions",       "3", "--poll-interval",
                  "0.5",          "--enable-model-control"};
    assert_int_equal(srv_config_parse(&c, 6, on, NULL, err, sizeof err), SRV_CONFIG_RUN);
    assert_int_equal(c.keep_versions, 3);
    assert_true(fabs(c.poll_s - 0.5) < 1e-12);
    assert_int_equal(c.model_control, 1);
    assert_int_equal(srv_config_parse(&c, 1, none, env_poll, err, sizeof err), SRV_CONFIG_RUN);
    assert_true(fabs(c.poll_s - 2.5) < 1e-12);
    assert_int_equal(c.model_control, 1);
    /* Flags win over the environment, a switch takes =off too. */
    char *off[] = {"mnist-server", "--enable-model-control=off", "--poll-interval=0"};
    assert_int_equal(srv_config_parse(&c, 3, off, env_poll, err, sizeof err), SRV_CONFIG_RUN);
    assert_int_equal(c.model_control, 0);
    assert_true(c.poll_s == 0);
    const char *bad[][2] = {{"--keep-versions", "0"},  {"--keep-versions", "17"},
                            {"--keep-versions", "x"},  {"--poll-interval", "0.05"},
                            {"--poll-interval", "-1"}, {"--poll-interval", "1e9"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"mnist-server", (char *)bad[i][0], (char *)bad[i][1]};
        if (srv_config_parse(&c, 3, argv, NULL, err, sizeof err) != SRV_CONFIG_ERROR)
            fail_msg("%s %s accepted", bad[i][0], bad[i][1]);
        assert_non_null(strstr(err, bad[i][0]));
    }
    char *badsw[] = {"mnist-server", "--enable-model-control=maybe"};
    assert_int_equal(srv_config_parse(&c, 2, badsw, NULL, err, sizeof err), SRV_CONFIG_ERROR);
}

/* ---- layout ---------------------------------------------------------------- */

static void test_versions_layout(void **state)
{
    fixture *fx = *state;
    put_net(fx, "flat.safetensors", 10, 0.90, 1);
    put_net(fx, "digits/1.safetensors", 10, 0.91, 2);
    put_net(fx, "digits/2.safetensors", 10, 0.92, 3);
    put_net(fx, "digits/member.safetensors", 10, 0.99, 4); /* not a version */
    char p[512];
    path_of(fx, p, sizeof p, "digits/notes.txt");
    write_text(p, "not a model\n");
    /* An ensemble as version 3, its member beside it. */
    path_of(fx, p, sizeof p, "digits/3.ensemble");
    write_text(p, "member.safetensors\n1.safetensors\ntest_accuracy=0.995\n");
    fx->cfg.keep_versions = 2;
    srv_registry *r = open_reg(fx, 2);
    srv_snapshot *v = srv_registry_acquire(r);
    assert_int_equal(v->n, 2);
    const srv_model *d3 = srv_snapshot_find(v, "digits", 0);
    assert_non_null(d3);
    assert_int_equal(d3->version, 3);
    assert_int_equal(d3->nmembers, 2);
    assert_non_null(srv_snapshot_find(v, "digits", 2));
    assert_null(srv_snapshot_find(v, "digits", 1)); /* keep 2: versions 3 and 2 */
    assert_null(srv_snapshot_find(v, "member", 0));
    assert_int_equal(srv_snapshot_find(v, "flat", 0)->version, 1);
    assert_int_equal(srv_snapshot_find(v, "flat", 1)->version, 1);
    /* The default rule looks at each name's highest version: digits:3 is
     * an ensemble, so the single model flat is the default. */
    assert_string_equal(srv_snapshot_default(v)->name, "flat");
    assert_non_null(strstr(v->models_json, "\"version\":3"));
    assert_non_null(
        strstr(v->index_json, "{\"name\":\"digits\",\"version\":\"2\",\"state\":\"READY\""));
    forward_ok(d3, 0);
    forward_ok(d3, 1);
    assert_null(srv_model_ws(d3, 2));
    assert_null(srv_model_ws(d3, -1));
    srv_snapshot_release(v);
}

static void test_flat_and_dir_version_one(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits.safetensors", 10, 0.90, 1);
    put_net(fx, "digits/1.safetensors", 10, 0.91, 2);
    srv_registry *r = open_reg(fx, 1);
    srv_snapshot *v = srv_registry_acquire(r);
    const srv_model *m = srv_snapshot_find(v, "digits", 1);
    assert_non_null(m);
    /* NAME/1.* wins over the flat file beside it. */
    assert_non_null(strstr(m->source, "digits/1.safetensors"));
    srv_snapshot_release(v);
}

/* ---- reloads --------------------------------------------------------------- */

static void test_new_version_then_removed(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits/1.safetensors", 10, 0.91, 1);
    srv_registry *r = open_reg(fx, 1);
    assert_int_equal(served(r, "digits"), 1);
    uint64_t reloads = srv_registry_reloads(r);

    /* A reader holds the version-1 snapshot across the reload. */
    srv_snapshot *old = srv_registry_acquire(r);
    srv_model *v1 = srv_snapshot_find(old, "digits", 0);
    srv_model *held = srv_registry_acquire_model(r, "digits", 1);
    assert_ptr_equal(held, v1);

    put_net(fx, "digits/2.safetensors", 10, 0.92, 2);
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_OK);
    assert_int_equal(srv_registry_reloads(r), reloads + 1);
    assert_int_equal(served(r, "digits"), 2);
    srv_snapshot *now = srv_registry_acquire(r);
    assert_null(srv_snapshot_find(now, "digits", 1)); /* keep 1 */
    assert_true(now->generation > old->generation);
    srv_snapshot_release(now);
    /* The old snapshot and its model are intact (ASan would see a freed
     * model here). */
    assert_int_equal(v1->version, 1);
    forward_ok(v1, 0);
    srv_snapshot_release(old);
    forward_ok(held, 0); /* still held on its own */
    srv_model_release(held);
    srv_model_release(NULL);

    /* Version 2 removed: version 1 comes back. */
    rm(fx, "digits/2.safetensors");
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_OK);
    assert_int_equal(served(r, "digits"), 1);
}

static void test_failures_keep_the_old_version(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits/1.safetensors", 10, 0.91, 1);
    put_net(fx, "other.safetensors", 10, 0.80, 2);
    srv_registry *r = open_reg(fx, 1);
    srv_index_entry e;
    char p[512];

    /* Corrupt bytes. */
    path_of(fx, p, sizeof p, "digits/2.safetensors");
    write_text(p, "this is not a weights file");
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    assert_int_equal(served(r, "digits"), 1);
    assert_true(index_entry(r, "digits", 2, &e));
    assert_int_equal(e.state, SRV_MODEL_UNAVAILABLE);
    assert_non_null(strstr(e.reason, "2.safetensors"));
    assert_int_equal(failures(r, "digits"), 1);
    /* A poll that finds the same file untouched does not retry it. */
    assert_int_equal(srv_registry_reload(r, "poll", 0), SRV_REG_FAILED);
    assert_int_equal(failures(r, "digits"), 1);
    /* A forced rescan (SIGHUP) does. */
    assert_int_equal(srv_registry_reload(r, "SIGHUP", 1), SRV_REG_FAILED);
    assert_int_equal(failures(r, "digits"), 2);
    rm(fx, "digits/2.safetensors");

    /* Truncated: the first half of a valid file. */
    path_of(fx, p, sizeof p, "digits/1.safetensors");
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 100);
    path_of(fx, p, sizeof p, "digits/3.safetensors");
    f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n / 2, f), n / 2);
    fclose(f);
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    assert_int_equal(served(r, "digits"), 1);
    assert_true(index_entry(r, "digits", 3, &e));
    assert_int_equal(e.state, SRV_MODEL_UNAVAILABLE);
    /* ... then the rest is written: the next scan loads it. */
    f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_OK);
    assert_int_equal(served(r, "digits"), 3);
    assert_true(index_entry(r, "digits", 3, &e));
    assert_int_equal(e.state, SRV_MODEL_READY);
    assert_string_equal(e.reason, "");

    /* Wrong input shape. */
    path_of(fx, p, sizeof p, "digits/4.safetensors");
    save_net(p, 14, 10, 0.99, 5);
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    assert_int_equal(served(r, "digits"), 3);
    assert_true(index_entry(r, "digits", 4, &e));
    assert_non_null(strstr(e.reason, "1x14x14"));
    rm(fx, "digits/4.safetensors");

    /* Another class count than the version serving. */
    put_net(fx, "digits/5.safetensors", 5, 0.99, 6);
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    assert_int_equal(served(r, "digits"), 3);
    assert_true(index_entry(r, "digits", 5, &e));
    assert_non_null(strstr(e.reason, "5 classes"));
    rm(fx, "digits/5.safetensors");
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_OK);
    assert_false(index_entry(r, "digits", 5, &e)); /* gone with its file */

    /* A served file overwritten in place by garbage: its previous content
     * keeps serving, marked with the reason. */
    srv_snapshot *v = srv_registry_acquire(r);
    char sha[65];
    memcpy(sha, srv_snapshot_find(v, "other", 0)->sha256, 65);
    srv_snapshot_release(v);
    path_of(fx, p, sizeof p, "other.safetensors");
    write_text(p, "garbage");
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    v = srv_registry_acquire(r);
    assert_string_equal(srv_snapshot_find(v, "other", 0)->sha256, sha);
    srv_snapshot_release(v);
    assert_true(index_entry(r, "other", 1, &e));
    assert_int_equal(e.state, SRV_MODEL_READY);
    assert_true(e.reason[0] != '\0');

    /* A new name whose only file fails is listed as unavailable. */
    path_of(fx, p, sizeof p, "broken.safetensors");
    write_text(p, "garbage");
    assert_int_equal(srv_registry_reload(r, "test", 0), SRV_REG_FAILED);
    assert_int_equal(served(r, "broken"), 0);
    v = srv_registry_acquire(r);
    assert_non_null(strstr(v->models_json, "\"unavailable\":[{\"name\":\"broken\""));
    srv_snapshot_release(v);
    assert_int_equal(failures(r, "broken"), 1);
}

static void test_unload_load_and_default(void **state)
{
    fixture *fx = *state;
    put_net(fx, "alpha.safetensors", 10, 0.95, 1);
    put_net(fx, "beta.safetensors", 10, 0.90, 2);
    srv_registry *r = open_reg(fx, 1);
    char err[1200];
    srv_snapshot *v = srv_registry_acquire(r);
    assert_string_equal(srv_snapshot_default(v)->name, "alpha");
    srv_snapshot_release(v);

    assert_int_equal(srv_registry_unload(r, "nope", err, sizeof err), SRV_REG_NOT_FOUND);
    assert_int_equal(srv_registry_unload(r, "alpha", err, sizeof err), SRV_REG_OK);
    assert_int_equal(served(r, "alpha"), 0);
    v = srv_registry_acquire(r);
    assert_string_equal(srv_snapshot_default(v)->name, "beta"); /* re-chosen */
    srv_snapshot_release(v);
    /* Rescans leave an unloaded model alone. */
    assert_int_equal(srv_registry_reload(r, "SIGHUP", 1), SRV_REG_OK);
    assert_int_equal(served(r, "alpha"), 0);
    /* The last model serving is not unloaded. */
    assert_int_equal(srv_registry_unload(r, "beta", err, sizeof err), SRV_REG_LAST_MODEL);
    assert_int_equal(served(r, "beta"), 1);

    assert_int_equal(srv_registry_load(r, "alpha", err, sizeof err), SRV_REG_OK);
    assert_int_equal(served(r, "alpha"), 1);
    v = srv_registry_acquire(r);
    assert_string_equal(srv_snapshot_default(v)->name, "alpha");
    srv_snapshot_release(v);
    assert_int_equal(srv_registry_load(r, "gamma", err, sizeof err), SRV_REG_NOT_FOUND);
    assert_non_null(strstr(err, "gamma"));

    /* load answers a failure with the reason, and what served stays. */
    put_net(fx, "digits/1.safetensors", 10, 0.5, 3);
    assert_int_equal(srv_registry_load(r, "digits", err, sizeof err), SRV_REG_OK);
    char p[512];
    path_of(fx, p, sizeof p, "digits/2.safetensors");
    write_text(p, "junk");
    assert_int_equal(srv_registry_load(r, "digits", err, sizeof err), SRV_REG_FAILED);
    assert_non_null(strstr(err, "2.safetensors"));
    assert_int_equal(served(r, "digits"), 1);

    /* Removing the default's file re-chooses among what loaded. */
    rm(fx, "alpha.safetensors");
    srv_registry_reload(r, "test", 0);
    v = srv_registry_acquire(r);
    assert_string_equal(srv_snapshot_default(v)->name, "beta");
    srv_snapshot_release(v);
}

/* ---- readers during reloads ------------------------------------------------ */

typedef struct {
    srv_registry *reg;
    int slot;
    atomic_int *stop;
    long runs;
    int bad;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    float x[PIPE_PIXELS] = {0};
    for (int y = 4; y < 24; y++) x[y * PIPE_SIDE + 12] = 1.0f;
    while (!atomic_load(a->stop)) {
        srv_snapshot *v = srv_registry_acquire(a->reg);
        srv_model *m = srv_snapshot_find(v, "digits", 0);
        if (!m || m->version < 1 || m->version > 2) {
            a->bad++;
        } else {
            pipe_result res;
            pipe_run_tensors(m->ens, srv_model_ws(m, a->slot), PIPE_F32, x, 1, &res);
            if (res.status != PIPE_OK) a->bad++;
        }
        srv_snapshot_release(v);
        a->runs++;
    }
    return NULL;
}

static void test_readers_during_reloads(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits/1.safetensors", 10, 0.91, 1);
    srv_registry *r = open_reg(fx, 2);
    atomic_int stop = 0;
    reader_arg a[2] = {{r, 0, &stop, 0, 0}, {r, 1, &stop, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, reader, &a[i]), 0);
    char p[512], err[1200];
    path_of(fx, p, sizeof p, "digits/2.safetensors");
    for (int i = 0; i < 12; i++) {
        /* Publish version 2, a broken version 2, remove it: back to 1. */
        if (i % 3 == 0)
            save_net(p, 28, 10, 0.92, (uint64_t)i + 10);
        else if (i % 3 == 1)
            write_text(p, "broken");
        else
            unlink(p);
        if (i % 2)
            srv_registry_reload(r, "test", 1);
        else
            srv_registry_load(r, "digits", err, sizeof err);
        assert_true(served(r, "digits") >= 1);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].bad, 0);
        assert_true(a[i].runs > 0);
    }
}

/* Dynamic batching across reloads: readers classify through their slot's
 * workspace, which hands the forward step to the model's batcher, while
 * versions come and go. Every answer must be its own model's: within
 * 1e-4 (batched sums may be ordered differently; test_batch.c says why)
 * of that model's own forward pass on the image, which the other version
 * (other weights) misses by far - a batch mixing versions would show. */
typedef struct {
    srv_registry *reg;
    int slot;
    atomic_int *stop;
    long runs;
    int bad;
} batch_reader_arg;

static void *batch_reader(void *p)
{
    batch_reader_arg *a = p;
    float x[PIPE_PIXELS] = {0};
    for (int y = 4; y < 24; y++) x[y * PIPE_SIDE + 10 + a->slot] = 1.0f;
    while (!atomic_load(a->stop)) {
        srv_snapshot *v = srv_registry_acquire(a->reg);
        srv_model *m = srv_snapshot_find(v, "digits", 0);
        pipe_ws *own = m ? pipe_ws_create(m->ens, 1) : NULL;
        if (!m || !m->batch || !own) {
            a->bad++;
        } else {
            pipe_result got, want;
            pipe_run_tensors(m->ens, srv_model_ws(m, a->slot), PIPE_F32, x, 1, &got);
            memset(&want, 0, sizeof want);
            pipe_forward(m->ens, own, x, 1, &want);
            if (got.status != PIPE_OK || got.prediction != want.prediction) a->bad++;
            for (int c = 0; c < want.nclasses; c++)
                if (!(fabsf(got.probs[c] - want.probs[c]) <= 1e-4f)) a->bad++;
        }
        pipe_ws_free(own);
        srv_snapshot_release(v);
        a->runs++;
    }
    return NULL;
}

static void test_batches_during_reloads(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits/1.safetensors", 10, 0.91, 1);
    enum { READERS = 4 };
    char p[512], err[1200];
    srv_registry_opts o = {.cfg = &fx->cfg, .nslots = READERS, .settle_s = 0};
    o.batch = (pipe_batch_opts){.max_size = 4, .delay_us = 2000, .executors = 2};
    fx->reg = srv_registry_create(&o, err, sizeof err);
    if (!fx->reg) fail_msg("srv_registry_create: %s", err);
    srv_registry *r = fx->reg;
    atomic_int stop = 0;
    batch_reader_arg a[READERS];
    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) {
        a[i] = (batch_reader_arg){r, i, &stop, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, batch_reader, &a[i]), 0);
    }
    path_of(fx, p, sizeof p, "digits/2.safetensors");
    for (int i = 0; i < 8; i++) {
        /* Version 2 with new weights each time, then removed: back to 1. */
        if (i % 2 == 0)
            save_net(p, 28, 10, 0.92, (uint64_t)i + 20);
        else
            unlink(p);
        srv_registry_reload(r, "test", 1);
        assert_int_equal(served(r, "digits"), i % 2 == 0 ? 2 : 1);
    }
    atomic_store(&stop, 1);
    long runs = 0;
    for (int i = 0; i < READERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].bad, 0);
        runs += a[i].runs;
    }
    assert_true(runs >= READERS);
    srv_registry_close_batchers(r); /* harmless on a quiet registry */
}

/* ---- background reloads ---------------------------------------------------- */

static void test_poller(void **state)
{
    fixture *fx = *state;
    put_net(fx, "digits/1.safetensors", 10, 0.91, 1);
    srv_registry *r = open_reg(fx, 1);
    assert_int_equal(srv_registry_start(r, 0.1), 0);
    put_net(fx, "digits/2.safetensors", 10, 0.92, 2);
    /* Polls every 0.1 s: wait (up to 10 s) until version 2 serves. */
    for (int i = 0; i < 1000 && served(r, "digits") != 2; i++) usleep(10000);
    assert_int_equal(served(r, "digits"), 2);
    /* A requested reload runs too. */
    uint64_t before = srv_registry_reloads(r);
    srv_registry_request_reload(r, "SIGHUP");
    for (int i = 0; i < 1000 && srv_registry_reloads(r) == before; i++) usleep(10000);
    assert_true(srv_registry_reloads(r) > before);
    srv_registry_stop(r);
    srv_registry_stop(r); /* twice is harmless */
}

int main(void)
{
    srv_log_init(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_config_options),
        cmocka_unit_test_setup_teardown(test_versions_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flat_and_dir_version_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_version_then_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_keep_the_old_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unload_load_and_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_during_reloads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_during_reloads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poller, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
