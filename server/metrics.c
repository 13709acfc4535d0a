/* metrics.c - see metrics.h. Histograms keep per-bucket (not cumulative)
 * counts so one add records a sample; rendering accumulates. */
#include "server/metrics.h"

#include "server/config.h"
#include "nn/amx.h"
#include "nn/gemm.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Every status the server answers with (304: the page's ETag; 414 and
 * 431: the request target and header limits; 501: a transfer coding). */
static const int status_codes[] = {200, 204, 304, 400, 403, 404, 405, 409, 413,
                                   414, 415, 422, 431, 500, 501, 503, 0}; /* 0: any other */
#define NSTATUS (int)(sizeof status_codes / sizeof status_codes[0])

/* Upper bounds in microseconds. */
static const uint64_t lat_le[] = {50,    100,   250,    500,    1000,   2500,    5000,    10000,
                                  25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};
#define NLAT (int)(sizeof lat_le / sizeof lat_le[0])
static const uint64_t inf_le[] = {10,   25,   50,   100,   250,   500,
                                  1000, 2500, 5000, 10000, 25000, 100000};
#define NINF (int)(sizeof inf_le / sizeof inf_le[0])
/* Dynamic batching: images per forward pass (a count, not a time). */
static const uint64_t batch_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define NBATCH (int)(sizeof batch_le / sizeof batch_le[0])

typedef _Atomic uint64_t counter;

typedef struct {
    counter requests[SRV_NROUTES][NSTATUS];
    counter lat[SRV_NROUTES][NLAT + 1]; /* last: +Inf only      */
    counter lat_sum_us[SRV_NROUTES];
    counter inf[SRV_METRICS_MAX_MODELS][NINF + 1];
    counter inf_sum_us[SRV_METRICS_MAX_MODELS];
    counter preds[SRV_METRICS_MAX_MODELS][SRV_METRICS_MAX_CLASSES];
    counter batch[SRV_METRICS_MAX_MODELS][NBATCH + 1];
    counter batch_sum[SRV_METRICS_MAX_MODELS];
    counter qwait[SRV_METRICS_MAX_MODELS][NINF + 1];
    counter qwait_sum_us[SRV_METRICS_MAX_MODELS];
    _Atomic int64_t inflight;
} __attribute__((aligned(64))) shard;

struct srv_metrics {
    int nshards;
    atomic_int next_shard;
    unsigned id; /* tells thread-local shard caches apart */
    double start_time;
    shard *shards;
};

static atomic_uint next_id = 1;
static _Thread_local const srv_metrics *tls_owner;
static _Thread_local unsigned tls_owner_id;
static _Thread_local shard *tls_shard;

srv_metrics *srv_metrics_create(int nshards)
{
    if (nshards < 1) return NULL;
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->shards = aligned_alloc(64, sizeof(shard) * (size_t)nshards);
    if (!m->shards) {
        free(m);
        return NULL;
    }
    memset(m->shards, 0, sizeof(shard) * (size_t)nshards);
    m->nshards = nshards;
    m->id = atomic_fetch_add(&next_id, 1);
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    m->start_time = (double)t.tv_sec + t.tv_nsec * 1e-9;
    return m;
}

void srv_metrics_free(srv_metrics *m)
{
    if (!m) return;
    free(m->shards);
    free(m);
}

static shard *my_shard(srv_metrics *m)
{
    /* Compare the id too: a freed and re-created srv_metrics may reuse the
     * address. */
    if (tls_owner != m || tls_owner_id != m->id) {
        int i = atomic_fetch_add_explicit(&m->next_shard, 1, memory_order_relaxed);
        tls_shard = &m->shards[i < m->nshards ? i : m->nshards - 1];
        tls_owner = m;
        tls_owner_id = m->id;
    }
    return tls_shard;
}

static void add(counter *c, uint64_t v) { atomic_fetch_add_explicit(c, v, memory_order_relaxed); }

static uint64_t get(const counter *c) { return atomic_load_explicit(c, memory_order_relaxed); }

static int bucket(const uint64_t *le, int n, uint64_t v)
{
    int i = 0;
    while (i < n && v > le[i]) i++;
    return i;
}

void srv_metrics_request(srv_metrics *m, srv_route route, int status, uint64_t us)
{
    if ((unsigned)route >= SRV_NROUTES) route = SRV_ROUTE_OTHER;
    shard *s = my_shard(m);
    int si = NSTATUS - 1;
    for (int i = 0; i < NSTATUS - 1; i++)
        if (status_codes[i] == status) {
            si = i;
            break;
        }
    add(&s->requests[route][si], 1);
    add(&s->lat[route][bucket(lat_le, NLAT, us)], 1);
    add(&s->lat_sum_us[route], us);
}

void srv_metrics_inference(srv_metrics *m, int slot, uint64_t us, int cls)
{
    if (slot < 0 || slot >= SRV_METRICS_MAX_MODELS) return;
    shard *s = my_shard(m);
    add(&s->inf[slot][bucket(inf_le, NINF, us)], 1);
    add(&s->inf_sum_us[slot], us);
    if (cls >= 0 && cls < SRV_METRICS_MAX_CLASSES) add(&s->preds[slot][cls], 1);
}

void srv_metrics_batch(srv_metrics *m, int slot, int batch_images, uint64_t queue_us)
{
    if (slot < 0 || slot >= SRV_METRICS_MAX_MODELS) return;
    shard *s = my_shard(m);
    if (batch_images > 0) {
        add(&s->batch[slot][bucket(batch_le, NBATCH, (uint64_t)batch_images)], 1);
        add(&s->batch_sum[slot], (uint64_t)batch_images);
    }
    add(&s->qwait[slot][bucket(inf_le, NINF, queue_us)], 1);
    add(&s->qwait_sum_us[slot], queue_us);
}

void srv_metrics_inflight_add(srv_metrics *m, int delta)
{
    atomic_fetch_add_explicit(&my_shard(m)->inflight, delta, memory_order_relaxed);
}

/* Prometheus label values escape backslash, double quote and newline. */
static void label_value(srv_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            srv_buf_puts(b, "\\\\");
        else if (*s == '"')
            srv_buf_puts(b, "\\\"");
        else if (*s == '\n')
            srv_buf_puts(b, "\\n");
        else
            srv_buf_append(b, s, 1);
    }
}

/* le and sum are in microseconds, rendered as seconds, unless count_le:
 * then they are plain counts. */
static void histogram_of(srv_buf *b, const char *name, const char *label, const char *value,
                         const uint64_t *le, int n, const uint64_t *counts, uint64_t sum,
                         int count_le)
{
    double scale = count_le ? 1.0 : 1e-6;
    uint64_t cum = 0;
    for (int i = 0; i <= n; i++) {
        cum += counts[i];
        srv_buf_printf(b, "%s_bucket{%s=\"", name, label);
        label_value(b, value);
        if (i < n)
            srv_buf_printf(b, "\",le=\"%g\"} %llu\n", (double)le[i] * scale,
                           (unsigned long long)cum);
        else
            srv_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    srv_buf_printf(b, "%s_sum{%s=\"", name, label);
    label_value(b, value);
    if (count_le)
        srv_buf_printf(b, "\"} %llu\n", (unsigned long long)sum);
    else
        srv_buf_printf(b, "\"} %.6f\n", (double)sum * 1e-6);
    srv_buf_printf(b, "%s_count{%s=\"", name, label);
    label_value(b, value);
    srv_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
}

static void histogram(srv_buf *b, const char *name, const char *label, const char *value,
                      const uint64_t *le, int n, const uint64_t *counts, uint64_t sum_us)
{
    histogram_of(b, name, label, value, le, n, counts, sum_us, 0);
}

int srv_metrics_process(srv_metrics_process_stats *p)
{
    memset(p, 0, sizeof *p);
    int ok = 0;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        p->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
                         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
        ok |= SRV_PROC_CPU;
    }
    /* /proc/self/statm: total program size and resident set, in pages. */
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        unsigned long long size, resident;
        long page = sysconf(_SC_PAGESIZE);
        if (fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0) {
            p->virtual_bytes = (double)size * (double)page;
            p->resident_bytes = (double)resident * (double)page;
            ok |= SRV_PROC_MEMORY;
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        p->open_fds = (double)(n - 1); /* not the one reading the list */
        ok |= SRV_PROC_FDS;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        p->max_fds = (double)rl.rlim_cur;
        ok |= SRV_PROC_MAX_FDS;
    }
    return ok;
}

static void process_metrics(srv_buf *b)
{
    srv_metrics_process_stats p;
    int ok = srv_metrics_process(&p);
    if (ok & SRV_PROC_CPU)
        srv_buf_printf(b,
                       "# HELP process_cpu_seconds_total Total user and system "
                       "CPU time spent in seconds.\n"
                       "# TYPE process_cpu_seconds_total counter\n"
                       "process_cpu_seconds_total %.6f\n",
                       p.cpu_seconds);
    if (ok & SRV_PROC_MEMORY)
        srv_buf_printf(b,
                       "# HELP process_resident_memory_bytes Resident memory "
                       "size in bytes.\n"
                       "# TYPE process_resident_memory_bytes gauge\n"
                       "process_resident_memory_bytes %.0f\n"
                       "# HELP process_virtual_memory_bytes Virtual memory "
                       "size in bytes.\n"
                       "# TYPE process_virtual_memory_bytes gauge\n"
                       "process_virtual_memory_bytes %.0f\n",
                       p.resident_bytes, p.virtual_bytes);
    if (ok & SRV_PROC_FDS)
        srv_buf_printf(b,
                       "# HELP process_open_fds Number of open file "
                       "descriptors.\n"
                       "# TYPE process_open_fds gauge\n"
                       "process_open_fds %.0f\n",
                       p.open_fds);
    if (ok & SRV_PROC_MAX_FDS)
        srv_buf_printf(b,
                       "# HELP process_max_fds Maximum number of open file "
                       "descriptors.\n"
                       "# TYPE process_max_fds gauge\n"
                       "process_max_fds %.0f\n",
                       p.max_fds);
}

/* A slot rendered with its model's series. */
static int shown(const srv_metrics_model *md) { return md->name && md->loaded; }

void srv_metrics_render(srv_metrics *m, srv_buf *b, const srv_metrics_model *models, int nmodels,
                        int ready, int draining)
{
    if (nmodels < 0) nmodels = 0;
    if (nmodels > SRV_METRICS_MAX_MODELS) nmodels = SRV_METRICS_MAX_MODELS;
    int used = atomic_load(&m->next_shard);
    int ns = used < m->nshards ? used : m->nshards;

    srv_buf_puts(b, "# HELP mnist_http_requests_total HTTP requests answered, "
                    "by route and status code.\n"
                    "# TYPE mnist_http_requests_total counter\n");
    for (int r = 0; r < SRV_NROUTES; r++)
        for (int si = 0; si < NSTATUS; si++) {
            uint64_t v = 0;
            for (int s = 0; s < ns; s++) v += get(&m->shards[s].requests[r][si]);
            if (!v) continue;
            if (status_codes[si])
                srv_buf_printf(b,
                               "mnist_http_requests_total{route=\"%s\","
                               "status=\"%d\"} %llu\n",
                               srv_route_name(r), status_codes[si], (unsigned long long)v);
            else
                srv_buf_printf(b,
                               "mnist_http_requests_total{route=\"%s\","
                               "status=\"other\"} %llu\n",
                               srv_route_name(r), (unsigned long long)v);
        }

    srv_buf_puts(b, "# HELP mnist_http_request_duration_seconds Time from "
                    "request headers to completion.\n"
                    "# TYPE mnist_http_request_duration_seconds histogram\n");
    for (int r = 0; r < SRV_NROUTES; r++) {
        uint64_t counts[NLAT + 1] = {0}, sum = 0, total = 0;
        for (int s = 0; s < ns; s++) {
            for (int i = 0; i <= NLAT; i++) counts[i] += get(&m->shards[s].lat[r][i]);
            sum += get(&m->shards[s].lat_sum_us[r]);
        }
        for (int i = 0; i <= NLAT; i++) total += counts[i];
        if (total)
            histogram(b, "mnist_http_request_duration_seconds", "route", srv_route_name(r), lat_le,
                      NLAT, counts, sum);
    }

    srv_buf_puts(b, "# HELP mnist_inference_duration_seconds Model forward "
                    "pass time per image.\n"
                    "# TYPE mnist_inference_duration_seconds histogram\n");
    for (int k = 0; k < nmodels; k++) {
        if (!shown(&models[k])) continue;
        uint64_t counts[NINF + 1] = {0}, sum = 0;
        for (int s = 0; s < ns; s++) {
            for (int i = 0; i <= NINF; i++) counts[i] += get(&m->shards[s].inf[k][i]);
            sum += get(&m->shards[s].inf_sum_us[k]);
        }
        histogram(b, "mnist_inference_duration_seconds", "model", models[k].name, inf_le, NINF,
                  counts, sum);
    }

    /* Dynamic batching: series only for models that ran batches. */
    srv_buf_puts(b, "# HELP mnist_batch_size Images per batched forward pass "
                    "(dynamic batching), by model.\n"
                    "# TYPE mnist_batch_size histogram\n");
    for (int k = 0; k < nmodels; k++) {
        if (!shown(&models[k])) continue;
        uint64_t counts[NBATCH + 1] = {0}, sum = 0, total = 0;
        for (int s = 0; s < ns; s++) {
            for (int i = 0; i <= NBATCH; i++) counts[i] += get(&m->shards[s].batch[k][i]);
            sum += get(&m->shards[s].batch_sum[k]);
        }
        for (int i = 0; i <= NBATCH; i++) total += counts[i];
        if (total)
            histogram_of(b, "mnist_batch_size", "model", models[k].name, batch_le, NBATCH, counts,
                         sum, 1);
    }
    srv_buf_puts(b, "# HELP mnist_batch_queue_wait_seconds Time an image waited "
                    "for its batched forward pass to start, by model.\n"
                    "# TYPE mnist_batch_queue_wait_seconds histogram\n");
    for (int k = 0; k < nmodels; k++) {
        if (!shown(&models[k])) continue;
        uint64_t counts[NINF + 1] = {0}, sum = 0, total = 0;
        for (int s = 0; s < ns; s++) {
            for (int i = 0; i <= NINF; i++) counts[i] += get(&m->shards[s].qwait[k][i]);
            sum += get(&m->shards[s].qwait_sum_us[k]);
        }
        for (int i = 0; i <= NINF; i++) total += counts[i];
        if (total)
            histogram(b, "mnist_batch_queue_wait_seconds", "model", models[k].name, inf_le, NINF,
                      counts, sum);
    }

    srv_buf_puts(b, "# HELP mnist_predictions_total Images classified, by "
                    "model and predicted class label.\n"
                    "# TYPE mnist_predictions_total counter\n");
    for (int k = 0; k < nmodels; k++)
        for (int c = 0; shown(&models[k]) && c < models[k].nclasses && c < SRV_METRICS_MAX_CLASSES;
             c++) {
            uint64_t v = 0;
            for (int s = 0; s < ns; s++) v += get(&m->shards[s].preds[k][c]);
            srv_buf_puts(b, "mnist_predictions_total{model=\"");
            label_value(b, models[k].name);
            srv_buf_puts(b, "\",class=\"");
            label_value(b, models[k].labels[c] ? models[k].labels[c] : "");
            srv_buf_printf(b, "\"} %llu\n", (unsigned long long)v);
        }

    int64_t inflight = 0;
    for (int s = 0; s < ns; s++)
        inflight += atomic_load_explicit(&m->shards[s].inflight, memory_order_relaxed);
    srv_buf_printf(b,
                   "# HELP mnist_http_requests_in_flight Requests being "
                   "handled now (this scrape included).\n"
                   "# TYPE mnist_http_requests_in_flight gauge\n"
                   "mnist_http_requests_in_flight %lld\n",
                   (long long)inflight);

    srv_buf_puts(b, "# HELP mnist_model_info Served models; value 1.\n"
                    "# TYPE mnist_model_info gauge\n");
    for (int k = 0; k < nmodels; k++) {
        const srv_metrics_model *md = &models[k];
        if (!shown(md)) continue;
        srv_buf_puts(b, "mnist_model_info{model=\"");
        label_value(b, md->name);
        srv_buf_puts(b, "\",architecture=\"");
        label_value(b, md->architecture ? md->architecture : "");
        srv_buf_puts(b, "\",sha256=\"");
        label_value(b, md->sha256 ? md->sha256 : "");
        srv_buf_printf(b, "\",default=\"%s\"} 1\n", md->is_default ? "true" : "false");
    }
    srv_buf_puts(b, "# HELP mnist_model_parameters Trainable parameters per "
                    "model.\n# TYPE mnist_model_parameters gauge\n");
    for (int k = 0; k < nmodels; k++) {
        if (!shown(&models[k])) continue;
        srv_buf_puts(b, "mnist_model_parameters{model=\"");
        label_value(b, models[k].name);
        srv_buf_printf(b, "\"} %.0f\n", models[k].params);
    }
    srv_buf_puts(b, "# HELP mnist_model_test_accuracy Test-set accuracy "
                    "recorded with the model (NaN if unknown).\n"
                    "# TYPE mnist_model_test_accuracy gauge\n");
    for (int k = 0; k < nmodels; k++) {
        if (!shown(&models[k])) continue;
        srv_buf_puts(b, "mnist_model_test_accuracy{model=\"");
        label_value(b, models[k].name);
        if (models[k].test_accuracy >= 0)
            srv_buf_printf(b, "\"} %.6f\n", models[k].test_accuracy);
        else
            srv_buf_puts(b, "\"} NaN\n");
    }
    srv_buf_puts(b, "# HELP mnist_model_load_failures_total Model files that "
                    "failed to load (at start-up or on a reload), by model "
                    "name.\n# TYPE mnist_model_load_failures_total counter\n");
    for (int k = 0; k < nmodels; k++) {
        if (!models[k].name) continue;
        srv_buf_puts(b, "mnist_model_load_failures_total{model=\"");
        label_value(b, models[k].name);
        srv_buf_printf(b, "\"} %llu\n", (unsigned long long)models[k].load_failures);
    }
    srv_buf_puts(b, "# HELP mnist_build_info The server's version, the git "
                    "commit it was built from, the matrix-multiply kernels "
                    "this CPU runs and the inference precision (NN_PRECISION); "
                    "value 1.\n"
                    "# TYPE mnist_build_info gauge\n"
                    "mnist_build_info{version=\"");
    label_value(b, SRV_VERSION);
    srv_buf_puts(b, "\",commit=\"");
    label_value(b, srv_build_commit[0] ? srv_build_commit : "unknown");
    srv_buf_puts(b, "\",kernels=\"");
    label_value(b, nn_gemm_path_name(NN_GEMM_PATH_AUTO));
    srv_buf_puts(b, "\",precision=\"");
    label_value(b, nn_precision_name(nn_precision_get()));
    srv_buf_puts(b, "\"} 1\n");
    process_metrics(b);
    srv_buf_printf(b,
                   "# HELP mnist_ready 1 when the server accepts predictions.\n"
                   "# TYPE mnist_ready gauge\nmnist_ready %d\n"
                   "# HELP mnist_draining 1 after SIGTERM/SIGINT, while "
                   "requests finish.\n"
                   "# TYPE mnist_draining gauge\nmnist_draining %d\n"
                   "# HELP process_start_time_seconds Start time of the "
                   "process since the Unix epoch.\n"
                   "# TYPE process_start_time_seconds gauge\n"
                   "process_start_time_seconds %.3f\n",
                   ready ? 1 : 0, draining ? 1 : 0, m->start_time);
}
