/* fuzz_config.c - srv_config_parse: MNIST_* environment variables, then
 * command-line flags.
 *
 * Input: NUL-separated words. Words before a "--" word are environment
 * entries NAME=VALUE; the rest are argv[1..]. Invariants: on RUN every
 * field is inside the range the option table documents, model names are
 * valid and unique, strings are terminated, and something is to be
 * served (models or a directory); on ERROR a one-line message. */
#include "fuzz.h"
#include "server/config.h"

#include <string.h>

enum { MAX_WORDS = 64 };
static char *env_names[MAX_WORDS], *env_vals[MAX_WORDS];
static int nenv;

static const char *env(const char *name)
{
    for (int i = 0; i < nenv; i++)
        if (strcmp(env_names[i], name) == 0) return env_vals[i];
    return NULL;
}

static int terminated(const char *s, size_t cap) { return memchr(s, '\0', cap) != NULL; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 14) return 0;
    char *text = fuzz_cstr(data, size);
    char *words[MAX_WORDS], *argv[MAX_WORDS + 2];
    int nw = 0, sep = -1, argc = 0;
    for (char *w = text; w <= text + size && nw < MAX_WORDS; w += strlen(w) + 1) {
        if (sep < 0 && strcmp(w, "--") == 0) sep = nw;
        words[nw++] = w;
    }
    nenv = 0;
    for (int i = 0; i < sep; i++) {
        char *eq = strchr(words[i], '=');
        if (eq) {
            *eq = '\0';
            env_names[nenv] = words[i];
            env_vals[nenv++] = eq + 1;
        }
    }
    argv[argc++] = "mnist-server";
    for (int i = sep + 1; i < nw; i++) argv[argc++] = words[i];
    argv[argc] = NULL;
    static srv_config c;
    char err[256] = "";
    srv_config_action a = srv_config_parse(&c, argc, argv, env, err, sizeof err);
    if (a == SRV_CONFIG_ERROR) {
        /* Not fuzz_msg_ok: the message quotes the operator's argument as
         * given, newlines included (flags and environment are trusted). */
        FUZZ_CHECK(err[0] && terminated(err, sizeof err));
    } else if (a == SRV_CONFIG_RUN) {
        FUZZ_CHECK(terminated(c.host, sizeof c.host) && c.host[0]);
        FUZZ_CHECK(c.port >= 0 && c.port <= 65535);
        FUZZ_CHECK(c.threads >= 0 && c.threads <= 1024);
        FUZZ_CHECK(c.body_limit >= 1 && c.body_limit <= (1u << 30));
        FUZZ_CHECK(c.max_pixels >= 1 && c.max_pixels <= (uint64_t)1 << 32);
        FUZZ_CHECK(c.timeout_s >= 1 && c.timeout_s <= 86400);
        FUZZ_CHECK(c.max_connections >= 1 && c.max_connections <= 1000000);
        FUZZ_CHECK(c.max_batch >= 1 && c.max_batch <= 1024);
        FUZZ_CHECK(c.drain_delay_s >= 0 && c.drain_delay_s <= 3600);
        FUZZ_CHECK(c.drain_timeout_s >= 0 && c.drain_timeout_s <= 3600);
        FUZZ_CHECK(c.keep_versions >= 1 && c.keep_versions <= 16);
        FUZZ_CHECK(c.poll_s == 0 || (c.poll_s >= 0.1 && c.poll_s <= 86400));
        FUZZ_CHECK(c.ncors >= 0 && c.ncors <= SRV_CORS_MAX);
        for (int i = 0; i < c.ncors; i++)
            FUZZ_CHECK(c.cors[i][0] && memchr(c.cors[i], '\0', SRV_ORIGIN_MAX));
        FUZZ_CHECK(c.nmodels >= 0 && c.nmodels <= SRV_MAX_MODELS);
        FUZZ_CHECK(terminated(c.models_dir, sizeof c.models_dir));
        FUZZ_CHECK(c.nmodels > 0 || c.models_dir[0]);
        FUZZ_CHECK(terminated(c.default_model, sizeof c.default_model));
        FUZZ_CHECK(!c.default_model[0] || srv_config_valid_name(c.default_model));
        for (int i = 0; i < c.nmodels; i++) {
            FUZZ_CHECK(srv_config_valid_name(c.models[i].name));
            FUZZ_CHECK(terminated(c.models[i].paths, SRV_PATHS_MAX) && c.models[i].paths[0]);
            for (int j = 0; j < i; j++) FUZZ_CHECK(strcmp(c.models[i].name, c.models[j].name) != 0);
        }
    }
    free(text);
    return 0;
}
