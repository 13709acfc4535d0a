/* main.c - mnist-server: configuration, model loading, the HTTP daemon,
 * reloads on SIGHUP and signal-driven shutdown. Everything else lives in the server/ modules
 * so unit tests can reach it. */
#include "server/config.h"
#include "server/http.h"
#include "server/log.h"
#include "nn/amx.h"
#include "nn/gemm.h"
#include "server/registry.h"
#include "server/web.h"

#include <errno.h>
#include <malloc.h>
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
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* Waits up to seconds, or (srv not NULL) until no request is in flight.
 * Returns 1 if a second SIGTERM/SIGINT cut the wait short. */
static int wait_or_signal(const sigset_t *sigs, double seconds, srv_server *srv)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const struct timespec tick = {0, 10 * 1000 * 1000};
    while (elapsed_s(&t0) < seconds) {
        if (srv && srv_server_inflight(srv) == 0) return 0;
        int got = sigtimedwait(sigs, NULL, &tick);
        if (got > 0 && got != SIGHUP) /* SIGHUP while draining: ignored */
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static srv_config cfg;
    char err[1024];
    switch (srv_config_parse(&cfg, argc, argv, env_lookup, err, sizeof err)) {
    case SRV_CONFIG_HELP: srv_config_usage(stdout); return 0;
    case SRV_CONFIG_VERSION: printf("mnist-server %s\n", SRV_VERSION); return 0;
    case SRV_CONFIG_ERROR: fprintf(stderr, "mnist-server: %s\n", err); return 2;
    case SRV_CONFIG_RUN: break;
    }
    if (nn_gemm_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-server: %s\n", err);
        return 2;
    }
    if (nn_precision_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-server: %s\n", err);
        return 2;
    }
    srv_log_init(cfg.log_json);
    /* A fixed threshold (glibc raises it after each free of a mapped
     * block otherwise): a model's parameter block is always its own
     * mapping, handed back to the system when its last request ends, so
     * reloads do not grow the heap. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    int cores = available_cores();
    /* One request thread a core, batching or not: a /predict waiting for
     * its batch suspends its connection rather than the thread (README,
     * "Dynamic batching"). */
    if (cfg.threads == 0) cfg.threads = cores;
    /* One thread has no connections to deal out. */
    if (cfg.threads < 2) cfg.balance = 0;

    signal(SIGPIPE, SIG_IGN);

    /* SIGHUP (reload) is held from the start: one sent during start-up
     * is handled once serving. SIGTERM and SIGINT keep their default
     * action (stop at once) while the models load, which starts no
     * threads and may wait on a slow disk. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /* One workspace per model per daemon thread, plus a spare (pool.h). */
    srv_registry_opts ro = {.cfg = &cfg, .nslots = cfg.threads + 1, .settle_s = -1};
    /* Dynamic batching: as many batches at once as cores (more would only
     * share them), each of up to --max-batch-size images, each run by a
     * runner thread of the batcher's or by the request's own thread. */
    ro.batch = (pipe_batch_opts){
        .max_size = cfg.max_batch_size, .delay_us = cfg.batch_delay_us, .executors = cores};
    srv_registry *models = srv_registry_create(&ro, err, sizeof err);
    if (!models) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        return 1;
    }
    /* Block the shutdown signals too before any thread starts, so every
     * thread inherits the mask and only sigwait() below sees them. */
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    srv_registry_log_all(models);

    srv_web *web = NULL;
    if (cfg.ui) {
        web = srv_web_create(srv_web_files, srv_web_nfiles, err, sizeof err);
        if (!web) {
            srv_log(SRV_ERROR, "cannot start: %s", err);
            srv_registry_free(models);
            return 1;
        }
    }
    srv_server *srv =
        srv_server_create(&cfg, models, srv_openapi_yaml, srv_openapi_yaml_len, err, sizeof err);
    if (srv) srv_server_set_web(srv, web);
    if (!srv || srv_server_start(srv, err, sizeof err) < 0) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        srv_server_free(srv);
        srv_web_free(web);
        srv_registry_free(models);
        return 1;
    }
    srv_log(SRV_INFO,
            "%d threads, %s kernels, %s precision, body limit %zu bytes, max "
            "pixels %llu, timeout %us, max connections %u%s",
            cfg.threads, nn_gemm_path_name(NN_GEMM_PATH_AUTO),
            nn_precision_name(nn_precision_get()), cfg.body_limit,
            (unsigned long long)cfg.max_pixels, cfg.timeout_s, cfg.max_connections,
            cfg.balance ? ", balanced" : "");
    if (cfg.batch_delay_us > 0)
        srv_log(SRV_INFO,
                "dynamic batching: up to %d images per forward pass, waiting at most %uus, "
                "%d at once",
                ro.batch.max_size, cfg.batch_delay_us, ro.batch.executors);
    /* Tests and scripts read the port from this exact line. */
    int v6 = strchr(cfg.host, ':') != NULL; /* URLs bracket IPv6 literals */
    srv_log(SRV_INFO, "listening on http://%s%s%s:%d", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
            srv_server_port(srv));
    if (srv_server_warmup(srv, err, sizeof err) < 0) {
        srv_log(SRV_ERROR, "cannot start: %s", err);
        srv_server_free(srv);
        srv_web_free(web);
        srv_registry_free(models);
        return 1;
    }
    /* The reloader thread: SIGHUP below, and every --poll-interval. */
    if (srv_registry_start(models, cfg.poll_s) < 0)
        srv_log(SRV_WARN, "cannot start the reloader thread: SIGHUP reloads "
                          "in the main thread, no polling");
    else if (cfg.poll_s > 0)
        srv_log(SRV_INFO, "rescanning the models every %gs", cfg.poll_s);
    srv_log(SRV_INFO, "ready");

    /* SIGHUP rescans the models (in the reloader thread) and keeps
     * serving; SIGTERM or SIGINT drains and stops. */
    int sig = 0;
    for (;;) {
        if (sigwait(&sigs, &sig) != 0) continue;
        if (sig != SIGHUP) break;
        srv_log(SRV_INFO, "SIGHUP: rescanning the models");
        srv_registry_request_reload(models, "SIGHUP");
    }
    /* No reloads while draining: the models stay as they are. */
    srv_registry_stop(models);
    const char *signame = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    int stop_now = 0;
    /* Phase 1 (SIGTERM only): not ready, but still accepting and serving, so
     * that load balancers and Service endpoints stop sending here before
     * the listener closes. A terminal's Ctrl-C (SIGINT) skips it. */
    if (sig == SIGTERM && cfg.drain_delay_s > 0) {
        srv_server_set_draining(srv);
        srv_log(SRV_INFO,
                "%s: draining: not ready, still accepting for %.1fs "
                "(drain delay), %d requests in flight",
                signame, cfg.drain_delay_s, srv_server_inflight(srv));
        stop_now = wait_or_signal(&sigs, cfg.drain_delay_s, NULL);
        if (stop_now) srv_log(SRV_WARN, "second signal: stopping now");
    }
    /* Phase 2: stop accepting; requests in flight finish, up to the drain
     * timeout. */
    srv_log(SRV_INFO,
            "%s: draining: no longer accepting, waiting up to %.1fs "
            "for %d requests in flight",
            signame, cfg.drain_timeout_s, srv_server_inflight(srv));
    srv_server_quiesce(srv);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!stop_now && wait_or_signal(&sigs, cfg.drain_timeout_s, srv))
        srv_log(SRV_WARN, "second signal: stopping now");
    int left = srv_server_inflight(srv);
    srv_server_stop(srv);
    if (left > 0)
        srv_log(SRV_WARN, "stopped with %d requests unfinished after %.1fs", left, elapsed_s(&t0));
    else
        srv_log(SRV_INFO, "stopped cleanly after %.3fs", elapsed_s(&t0));
    srv_server_free(srv);
    srv_web_free(web);
    srv_registry_free(models);
    return 0;
}
