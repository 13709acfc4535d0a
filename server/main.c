/* main.c - mnist-server: configuration, model loading, the HTTP daemon,
 * and signal-driven shutdown. Everything else lives in the server/ modules
 * so unit tests can reach it. */
#include "config.h"
#include "http.h"
#include "log.h"
#include "models.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* build/gen/openapi_spec.c, generated from openapi.yaml by scripts/embed.sh */
extern const char srv_openapi_yaml[];
extern const size_t srv_openapi_yaml_len;

static const char *env_lookup(const char *name) { return getenv(name); }

static int available_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) * 1e-9;
}

int main(int argc, char **argv)
{
    static srv_config cfg;
    char err[1024];
    switch (srv_config_parse(&cfg, argc, argv, env_lookup, err, sizeof err)) {
    case SRV_CONFIG_HELP:
        srv_config_usage(stdout);
        return 0;
    case SRV_CONFIG_VERSION:
        printf("mnist-server %s\n", SRV_VERSION);
        return 0;
    case SRV_CONFIG_ERROR:
        fprintf(stderr, "mnist-server: %s\n", err);
        return 2;
    case SRV_CONFIG_RUN:
        break;
    }
    srv_log_init(cfg.log_json);
    if (cfg.threads == 0)
        cfg.threads = available_cores();

    /* Block the shutdown signals before any thread starts, so every thread
     * inherits the mask and only sigwait() below sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_models *models = srv_models_load(&cfg, err, sizeof err);
    if (!models) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        return 1;
    }
    for (int k = 0; k < models->n; k++) {
        const srv_model *m = &models->m[k];
        srv_log(SRV_INFO, "model %s%s: %s, %zu parameters, %d member%s, "
                "test accuracy %s%.4f, sha256 %.12s (%s)", m->name,
                m->is_default ? " (default)" : "", m->architecture, m->params,
                m->nmembers, m->nmembers == 1 ? "" : "s",
                m->test_accuracy < 0 ? "unknown " : "",
                m->test_accuracy < 0 ? 0 : m->test_accuracy, m->sha256,
                m->source);
    }

    srv_server *srv = srv_server_create(&cfg, models, srv_openapi_yaml,
                                        srv_openapi_yaml_len, err, sizeof err);
    if (!srv || srv_server_start(srv, err, sizeof err) < 0) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        srv_server_free(srv);
        srv_models_free(models);
        return 1;
    }
    srv_log(SRV_INFO, "%d threads, body limit %zu bytes, max pixels %llu, "
            "timeout %us, max connections %u", cfg.threads, cfg.body_limit,
            (unsigned long long)cfg.max_pixels, cfg.timeout_s,
            cfg.max_connections);
    /* Tests and scripts read the port from this exact line. */
    int v6 = strchr(cfg.host, ':') != NULL;   /* URLs bracket IPv6 literals */
    srv_log(SRV_INFO, "listening on http://%s%s%s:%d", v6 ? "[" : "", cfg.host,
            v6 ? "]" : "", srv_server_port(srv));
    if (srv_server_warmup(srv, err, sizeof err) < 0) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        srv_server_free(srv);
        srv_models_free(models);
        return 1;
    }
    srv_log(SRV_INFO, "ready");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    srv_log(SRV_INFO, "%s: draining (grace %.1fs, %d requests in flight)",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.grace_s,
            srv_server_inflight(srv));
    srv_server_quiesce(srv);

    /* Wait for requests in flight; a second signal cuts the wait short. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const struct timespec tick = {0, 10 * 1000 * 1000};
    while (srv_server_inflight(srv) > 0 && elapsed_s(&t0) < cfg.grace_s) {
        if (sigtimedwait(&sigs, NULL, &tick) > 0) {
            srv_log(SRV_WARN, "second signal: stopping now");
            break;
        }
    }
    int left = srv_server_inflight(srv);
    srv_server_stop(srv);
    if (left > 0)
        srv_log(SRV_WARN, "stopped with %d requests unfinished after %.1fs",
                left, elapsed_s(&t0));
    else
        srv_log(SRV_INFO, "stopped cleanly after %.3fs", elapsed_s(&t0));
    srv_server_free(srv);
    srv_models_free(models);
    return 0;
}
