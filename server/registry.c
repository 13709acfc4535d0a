/* registry.c - see registry.h.
 *
 * Publishing and acquiring without a lock. A reader does
 *     entering += 1;  v = current;  v->refs += 1;  entering -= 1;
 * and a publisher does
 *     old = exchange(current, new);  wait until entering == 0;  release(old)
 * (all sequentially consistent). If a reader loaded old, its load came
 * before the exchange, so its "entering += 1" did too; the publisher's
 * later read of entering == 0 therefore comes after that reader's
 * "entering -= 1", hence after its "refs += 1": old cannot reach zero
 * references while a reader is between loading it and counting itself.
 * The wait is a few instructions long per reader and happens only when a
 * reload publishes, never on the request path.
 *
 * Everything else (the per-name state, scans, loads) is touched only under
 * r->mu by the one reload running at a time.
 */
#include "server/registry.h"
#include "server/log.h"
#include "server/sha256.h"
#include "nn/amx.h"
#include "nn/ood.h"

#include <cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_FILES (NN_MAX_MEMBERS + 1) /* an ensemble list + its members */
#define MAX_CANDS 256
#define VERSION_MAX 999999999

/* ---- file looks ---------------------------------------------------------- */

/* What a version's files looked like: the list of paths (as a digest) and
 * each file's size, mtime and optionally content digest. */
typedef struct {
    char paths_sha[65];
    int n;
    struct {
        int64_t size, mtime_ns;
        char sha[65]; /* "" when not hashed */
    } f[MAX_FILES];
} fprint;

/* One version found by a scan. */
typedef struct {
    char name[SRV_NAME_MAX];
    int version;
    char spec[SRV_PATHS_MAX]; /* what nn_ensemble_load takes: paths, or
                                    one .ensemble list */
    int is_list;              /* spec is a NAME.ensemble */
    char source[1100];        /* for messages */
} cand;

typedef struct {
    int version;
    srv_model *m; /* registry's reference, or NULL */
    fprint fp;    /* m's files when it was loaded */
    int failed;   /* the current file failed */
    fprint ffp;   /* ... and looked like this */
    char reason[SRV_REASON_MAX];
    int present; /* found by the last scan */
} ver_state;

typedef struct {
    char name[SRV_NAME_MAX];
    int api_unloaded;
    int nv;
    ver_state v[SRV_MAX_VERSIONS];
    uint64_t failures;
} name_state;

struct srv_registry {
    srv_registry_opts o;
    const srv_config *cfg;
    _Atomic(srv_snapshot *) current;
    atomic_int entering;
    atomic_uint_fast64_t reloads;
    uint64_t generation;
    int quiet;             /* start-up: failures are not logged */
    char notes_digest[65]; /* of the last scan's notes */

    pthread_mutex_t mu; /* one reload at a time; guards below */
    name_state *names;  /* [SRV_MAX_MODELS], index = slot */
    int nnames;
    char default_name[SRV_NAME_MAX];

    pthread_mutex_t tmu; /* the reloader thread's mailbox */
    pthread_cond_t tcv;
    pthread_t thread;
    int running, stop, requested;
    char requested_why[32];
    double poll_s;
};

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* The files of c: [list file,] members. Fills paths (comma-separated, what
 * nn_ensemble_load takes) and *acc (the list's test_accuracy= or -1). */
static int cand_files(const cand *c, char *paths, size_t pathslen, double *acc,
                      char files[MAX_FILES][512], int *nfiles, char *err, size_t errlen)
{
    int n = 0;
    *acc = -1;
    if (c->is_list) {
        size_t l = strlen(c->spec);
        if (l >= 512) {
            snprintf(err, errlen, "%.200s...: path too long", c->spec);
            return -1;
        }
        if (nn_ensemble_list_read(c->spec, paths, pathslen, acc, err, errlen) != 0) return -1;
        memcpy(files[n++], c->spec, l + 1);
    } else {
        snprintf(paths, pathslen, "%s", c->spec);
    }
    const char *p = paths;
    while (*p) {
        size_t l = strcspn(p, ",");
        if (n >= MAX_FILES || l >= 512) {
            snprintf(err, errlen, "%s: too many members or a path too long", c->source);
            return -1;
        }
        memcpy(files[n], p, l);
        files[n++][l] = '\0';
        p += l;
        if (*p) p++;
    }
    *nfiles = n;
    return 0;
}

/* Looks at c's files: stat always, content digests when hash. */
static int look(const cand *c, int hash, fprint *fp, char *paths, size_t pathslen, double *acc,
                char *err, size_t errlen)
{
    char files[MAX_FILES][512];
    int n;
    memset(fp, 0, sizeof *fp);
    if (cand_files(c, paths, pathslen, acc, files, &n, err, errlen) < 0) return -1;
    srv_sha256_hex(paths, strlen(paths), fp->paths_sha);
    fp->n = n;
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0) {
            snprintf(err, errlen, "%.511s: %s", files[i], strerror(errno));
            return -1;
        }
        fp->f[i].size = (int64_t)st.st_size;
        fp->f[i].mtime_ns = mtime_ns(&st);
        if (hash && srv_sha256_file(files[i], fp->f[i].sha, err, errlen) < 0) return -1;
    }
    return 0;
}

static int same_stat(const fprint *a, const fprint *b)
{
    if (a->n != b->n || strcmp(a->paths_sha, b->paths_sha) != 0) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->f[i].size != b->f[i].size || a->f[i].mtime_ns != b->f[i].mtime_ns) return 0;
    return 1;
}

static int same_content(const fprint *a, const fprint *b)
{
    if (a->n != b->n || strcmp(a->paths_sha, b->paths_sha) != 0) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->f[i].size != b->f[i].size || strcmp(a->f[i].sha, b->f[i].sha) != 0) return 0;
    return 1;
}

/* ---- models ---------------------------------------------------------------- */

static void model_free(srv_model *m)
{
    if (!m) return;
    for (int i = 0; m->ws && i < m->nws; i++) pipe_ws_free(m->ws[i]);
    free(m->ws);
    pipe_batcher_free(m->batch); /* no request holds m: none is inside */
    nn_ensemble_free(m->ens);
    free(m);
}

void srv_model_release(srv_model *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

static void model_ref(srv_model *m) { atomic_fetch_add(&m->refs, 1); }

pipe_ws *srv_model_ws(const srv_model *m, int slot)
{
    return slot >= 0 && slot < m->nws ? m->ws[slot] : NULL;
}

/* A plain stroke: any input exercises the whole forward path. */
static int warm_up(srv_model *m, char *err, size_t errlen)
{
    float x[PIPE_PIXELS] = {0};
    for (int y = 6; y < 22; y++) x[y * PIPE_SIDE + 14] = 1.0f;
    pipe_result res;
    pipe_run_tensors(m->ens, m->ws[0], PIPE_F32, x, 1, &res);
    double sum = 0;
    for (int i = 0; i < res.nclasses; i++) sum += res.probs[i];
    if (res.status != PIPE_OK || !(fabs(sum - 1) <= 1e-3)) {
        snprintf(err, errlen,
                 "failed its warm-up inference (%s; "
                 "probabilities sum to %g)",
                 pipe_status_name(res.status), sum);
        return -1;
    }
    return 0;
}

/* Loads, checks and warms up one version. fp holds the content digests of
 * its files (already looked at). NULL + err on failure. */
static srv_model *model_build(const cand *c, int slot, const char *paths, double acc,
                              const fprint *fp, int nslots, const pipe_batch_opts *batch, char *err,
                              size_t errlen)
{
    srv_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&m->refs, 1);
    snprintf(m->name, sizeof m->name, "%s", c->name);
    snprintf(m->source, sizeof m->source, "%s", c->source);
    m->version = c->version;
    m->slot = slot;
    char nerr[1200];
    /* Loaded and checked servable (1x28x28 input, classes, preprocessing):
     * a request never meets a model it cannot feed. */
    m->ens = pipe_model_load(paths, nerr, sizeof nerr);
    if (!m->ens) {
        snprintf(err, errlen, "%s", nerr);
        goto fail;
    }
    m->nmembers = nn_ensemble_size(m->ens);
    /* The members' digests: the files after the list file, if any. */
    int first = fp->n - m->nmembers;
    if (first < 0 || first > 1) {
        snprintf(err, errlen, "member list changed while loading");
        goto fail;
    }
    for (int i = 0; i < m->nmembers; i++) {
        memcpy(m->member_sha256[i], fp->f[first + i].sha, 65);
        m->macs += nn_net_macs(nn_ensemble_member(m->ens, i));
    }
    if (m->nmembers == 1) {
        memcpy(m->sha256, m->member_sha256[0], 65);
    } else {
        char joined[NN_MAX_MEMBERS * 65];
        size_t o = 0;
        for (int i = 0; i < m->nmembers; i++) {
            if (i) joined[o++] = ',';
            memcpy(joined + o, m->member_sha256[i], 64);
            o += 64;
        }
        srv_sha256_hex(joined, o, m->sha256);
    }
    nn_net_summary(nn_ensemble_member(m->ens, 0), m->architecture, sizeof m->architecture);
    m->params = nn_ensemble_params(m->ens);
    const nn_meta *meta = nn_ensemble_meta(m->ens);
    m->nclasses = nn_ensemble_classes(m->ens);
    if (m->nclasses < 1 || m->nclasses > SRV_METRICS_MAX_CLASSES) {
        snprintf(err, errlen, "%d classes is outside 1..%d", m->nclasses, SRV_METRICS_MAX_CLASSES);
        goto fail;
    }
    for (int k = 0; k < m->nclasses; k++) m->labels[k] = meta->labels[k];
    /* An ensemble's accuracy is not its first member's: unknown unless the
     * .ensemble file states it. */
    if (acc >= 0)
        m->test_accuracy = acc;
    else
        m->test_accuracy = m->nmembers == 1 ? meta->test_accuracy : -1;
    m->test_ece = m->nmembers == 1 ? meta->test_ece : -1;
    m->nws = nslots > 0 ? nslots : 1;
    m->ws = calloc((size_t)m->nws, sizeof *m->ws);
    if (!m->ws) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < m->nws; i++)
        if (!(m->ws[i] = pipe_ws_create(m->ens, 1))) {
            snprintf(err, errlen, "out of memory creating %d workspaces", m->nws);
            goto fail;
        }
    if (warm_up(m, err, errlen) < 0) goto fail;
    /* Its own batcher: a batch never mixes two versions (or two loads of
     * one version), and requests holding an old version finish there. */
    if (batch && batch->delay_us > 0) {
        if (!(m->batch = pipe_batcher_create(m->ens, batch))) {
            snprintf(err, errlen, "out of memory creating %d batch workspaces of %d images",
                     batch->executors, batch->max_size);
            goto fail;
        }
        for (int i = 0; i < m->nws; i++) pipe_ws_set_batcher(m->ws[i], m->batch);
    }
    return m;
fail:
    model_free(m);
    return NULL;
}

/* ---- parsing names ------------------------------------------------------- */

int srv_model_version_parse(const char *s, int *version)
{
    if (!s || *s < '1' || *s > '9' || strlen(s) > 9) return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        v = v * 10 + (*p - '0');
    }
    *version = (int)v;
    return 0;
}

int srv_model_spec_parse(const char *spec, char name[SRV_NAME_MAX], int *version)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= SRV_NAME_MAX) return -1;
    memcpy(name, spec, n);
    name[n] = '\0';
    if (!srv_config_valid_name(name)) return -1;
    *version = 0;
    if (colon && srv_model_version_parse(colon + 1, version) < 0) return -1;
    return 0;
}

/* "N.safetensors" / "N.ensemble" -> N, else 0. */
static int version_file(const char *fname, int *is_list)
{
    size_t slen = nn_model_stem(fname, is_list);
    char num[16];
    if (slen == 0 || slen >= sizeof num) return 0;
    memcpy(num, fname, slen);
    num[slen] = '\0';
    int v;
    return srv_model_version_parse(num, &v) == 0 ? v : 0;
}

/* ---- scanning ---------------------------------------------------------------- */

typedef struct {
    cand *c;
    int n;
    char err[1200];   /* first problem found (strict mode) */
    char notes[4096]; /* problems without a version to file
                                    them under, one per line */
    size_t nnotes;
} cand_list;

static cand *cand_add(cand_list *l)
{
    if (l->n >= MAX_CANDS) return NULL;
    cand *c = &l->c[l->n++];
    memset(c, 0, sizeof *c);
    return c;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted entry names of dir (not starting with '.'), NULL + *n = -1 on
 * failure. */
static char **list_dir(const char *dir, int *n, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    *n = -1;
    if (!d) {
        snprintf(err, errlen, "models directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 32;
            char **p = realloc(names, sizeof *names * (size_t)cap);
            if (!p) goto oom;
            names = p;
        }
        if (!(names[cnt] = strdup(de->d_name))) goto oom;
        cnt++;
    }
    closedir(d);
    if (cnt) qsort(names, (size_t)cnt, sizeof names[0], cmp_str);
    *n = cnt;
    return names;
oom:
    closedir(d);
    for (int i = 0; i < cnt; i++) free(names[i]);
    free(names);
    snprintf(err, errlen, "out of memory listing %s", dir);
    return NULL;
}

static void free_list(char **names, int n)
{
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Keeps msg for the scan's log (see log_notes). */
static void note(cand_list *l, const char *msg)
{
    int n = snprintf(l->notes + l->nnotes, sizeof l->notes - l->nnotes, "%s\n", msg);
    if (n > 0)
        l->nnotes +=
            (size_t)n < sizeof l->notes - l->nnotes ? (size_t)n : sizeof l->notes - l->nnotes - 1;
}

/* Problems with a directory entry that has no valid name to file them
 * under: logged (and refusing the start in strict mode). */
static void entry_problem(cand_list *l, int strict, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void entry_problem(cand_list *l, int strict, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (strict) {
        if (!l->err[0]) snprintf(l->err, sizeof l->err, "%s", msg);
    } else {
        note(l, msg);
    }
}

/* Every version the sources offer, in source order. -1 when the models
 * directory cannot be read (a reload then changes nothing). */
static int gather(const srv_config *cfg, cand_list *l, int strict, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->nmodels; i++) {
        cand *c = cand_add(l);
        if (!c) break;
        snprintf(c->name, sizeof c->name, "%s", cfg->models[i].name);
        c->version = 1;
        snprintf(c->spec, sizeof c->spec, "%s", cfg->models[i].paths);
        int list = 0;
        size_t sl = strlen(c->spec);
        if (!strchr(c->spec, ',') && sl > 9 && strcmp(c->spec + sl - 9, ".ensemble") == 0) list = 1;
        c->is_list = list;
        snprintf(c->source, sizeof c->source, "--model %s", c->name);
    }
    if (!cfg->models_dir[0]) return 0;
    const char *dir = cfg->models_dir;
    int n;
    char **names = list_dir(dir, &n, err, errlen);
    if (!names && n < 0) return -1;
    int flat_start = l->n;
    /* Flat files first (version 1), then versioned directories. */
    for (int i = 0; i < n; i++) {
        int ens;
        size_t slen = nn_model_stem(names[i], &ens);
        if (!slen) continue;
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (slen >= SRV_NAME_MAX) {
            entry_problem(l, strict,
                          "%s: file name too long for a model "
                          "name",
                          path);
            continue;
        }
        cand *c = cand_add(l);
        if (!c) {
            entry_problem(l, strict, "%s: too many model files", path);
            break;
        }
        memcpy(c->name, names[i], slen);
        c->name[slen] = '\0';
        c->version = 1;
        c->is_list = ens;
        snprintf(c->spec, sizeof c->spec, "%s", path);
        snprintf(c->source, sizeof c->source, "%s", path);
    }
    for (int i = 0; i < n; i++) {
        char sub[1100];
        struct stat st;
        snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
        if (stat(sub, &st) != 0 || !S_ISDIR(st.st_mode) || !srv_config_valid_name(names[i]))
            continue;
        int m;
        char serr[1200];
        char **files = list_dir(sub, &m, serr, sizeof serr);
        if (!files) {
            if (m < 0) entry_problem(l, strict, "%s", serr);
            continue;
        }
        for (int j = 0; j < m; j++) {
            int ens, v = version_file(files[j], &ens);
            if (!v) continue; /* members and notes may live beside versions */
            cand *c = cand_add(l);
            if (!c) break;
            snprintf(c->name, sizeof c->name, "%s", names[i]);
            c->version = v;
            c->is_list = ens;
            if (strlen(sub) + strlen(files[j]) + 2 > sizeof c->source) {
                l->n--;
                entry_problem(l, strict, "%s/%s: path too long", sub, files[j]);
                continue;
            }
            snprintf(c->spec, sizeof c->spec, "%s/%s", sub, files[j]);
            memcpy(c->source, c->spec, strlen(c->spec) + 1);
            /* NAME/1.* wins over a flat NAME.* beside it. */
            if (v == 1)
                for (int k = flat_start; k < l->n - 1; k++)
                    if (l->c[k].version == 1 && strcmp(l->c[k].name, c->name) == 0 &&
                        !strchr(l->c[k].source + strlen(dir) + 1, '/')) {
                        l->c[k].version = 0; /* dropped */
                        break;
                    }
        }
        free_list(files, m);
    }
    free_list(names, n);
    return 0;
}

/* ---- per-name state ------------------------------------------------------------ */

static int find_name(const srv_registry *r, const char *name)
{
    for (int k = 0; k < r->nnames; k++)
        if (strcmp(r->names[k].name, name) == 0) return k;
    return -1;
}

static ver_state *find_ver(name_state *ns, int version)
{
    for (int i = 0; i < ns->nv; i++)
        if (ns->v[i].version == version) return &ns->v[i];
    return NULL;
}

/* The version's state, made if new; NULL when the table is full of
 * versions that still matter (then the lowest is not tracked). */
static ver_state *get_ver(name_state *ns, int version)
{
    ver_state *vs = find_ver(ns, version);
    if (vs) return vs;
    if (ns->nv == SRV_MAX_VERSIONS) {
        /* Reuse a slot that holds neither a model nor a failure. */
        for (int i = 0; i < ns->nv; i++)
            if (!ns->v[i].m && !ns->v[i].present) {
                ns->v[i] = ns->v[--ns->nv];
                break;
            }
        if (ns->nv == SRV_MAX_VERSIONS) return NULL;
    }
    vs = &ns->v[ns->nv++];
    memset(vs, 0, sizeof *vs);
    vs->version = version;
    return vs;
}

/* The highest version of ns that serves, or NULL. */
static ver_state *top_served(name_state *ns)
{
    ver_state *best = NULL;
    for (int i = 0; i < ns->nv; i++)
        if (ns->v[i].m && (!best || ns->v[i].version > best->version)) best = &ns->v[i];
    return best;
}

static void note_failure(srv_registry *r, name_state *ns, ver_state *vs, const cand *c,
                         const fprint *fp, const char *why, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void note_failure(srv_registry *r, name_state *ns, ver_state *vs, const cand *c,
                         const fprint *fp, const char *why, const char *fmt, ...)
{
    char msg[SRV_REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vs->failed = 1;
    if (fp)
        vs->ffp = *fp;
    else
        memset(&vs->ffp, 0, sizeof vs->ffp);
    snprintf(vs->reason, sizeof vs->reason, "%s", msg);
    ns->failures++;
    if (r->quiet) return; /* start-up: the caller's one line says it */
    /* Loader messages mostly name the file already. */
    const char *src = strstr(msg, c->source) ? "" : c->source;
    const char *sep = *src ? ": " : "";
    if (vs->m)
        srv_log(SRV_WARN,
                "model %s version %d failed to load (%s): %s%s%s; "
                "still serving its previous content, sha256 %.12s",
                ns->name, vs->version, why, src, sep, msg, vs->m->sha256);
    else
        srv_log(SRV_WARN, "model %s version %d failed to load (%s): %s%s%s", ns->name, vs->version,
                why, src, sep, msg);
}

/* "source: msg" into err, or msg alone when it names the source already. */
static void say(char *err, size_t errlen, const char *source, const char *msg)
{
    if (strstr(msg, source))
        snprintf(err, errlen, "%s", msg);
    else
        snprintf(err, errlen, "%.600s: %s", source, msg);
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

/* Brings one version up to date with its files. Returns 1 when a new
 * model was loaded, 0 when nothing changed, -1 on a failure (noted). */
static int refresh_version(srv_registry *r, int slot, ver_state *vs, const cand *c, int force,
                           int want_classes, const char *why, char *err, size_t errlen)
{
    name_state *ns = &r->names[slot];
    char paths[SRV_PATHS_MAX * 2], lerr[1200];
    double acc;
    fprint f1, f2, f3;
    if (look(c, 0, &f1, paths, sizeof paths, &acc, lerr, sizeof lerr) < 0) {
        if (!force && vs->failed && strcmp(vs->reason, lerr) == 0)
            return -1; /* the same problem as last time: said already */
        note_failure(r, ns, vs, c, NULL, why, "%s", lerr);
        say(err, errlen, c->source, lerr);
        return -1;
    }
    if (vs->m && same_stat(&f1, &vs->fp)) return 0; /* unchanged since it loaded */
    if (!force && vs->failed && same_stat(&f1, &vs->ffp)) {
        snprintf(err, errlen, "%.600s: %s", c->source, vs->reason);
        return -1; /* failed before, not touched since */
    }
    /* Two looks a settle time apart: a file still being written (or
     * replaced) shows a different size, mtime or digest. */
    if (look(c, 1, &f1, paths, sizeof paths, &acc, lerr, sizeof lerr) < 0) {
        note_failure(r, ns, vs, c, NULL, why, "%s", lerr);
        say(err, errlen, c->source, lerr);
        return -1;
    }
    if (vs->m && same_content(&f1, &vs->fp)) {
        vs->fp = f1; /* touched, same bytes: nothing to load */
        return 0;
    }
    sleep_s(r->o.settle_s);
    if (look(c, 1, &f2, paths, sizeof paths, &acc, lerr, sizeof lerr) < 0 || !same_stat(&f1, &f2) ||
        !same_content(&f1, &f2)) {
        if (!lerr[0] || same_stat(&f1, &f2))
            snprintf(lerr, sizeof lerr,
                     "file changed between two looks "
                     "%.1fs apart (still being written? publish by writing "
                     "a temporary name and renaming it)",
                     r->o.settle_s);
        note_failure(r, ns, vs, c, NULL, why, "%s", lerr);
        say(err, errlen, c->source, lerr);
        return -1;
    }
    lerr[0] = '\0';
    srv_model *m =
        model_build(c, slot, paths, acc, &f2, r->o.nslots, &r->o.batch, lerr, sizeof lerr);
    if (m && want_classes > 0 && m->nclasses != want_classes) {
        snprintf(lerr, sizeof lerr,
                 "has %d classes where the version "
                 "served now has %d",
                 m->nclasses, want_classes);
        srv_model_release(m);
        m = NULL;
    }
    if (m) {
        /* A last look: the bytes loaded are the bytes hashed. */
        char p3[SRV_PATHS_MAX * 2];
        double a3;
        if (look(c, 0, &f3, p3, sizeof p3, &a3, lerr, sizeof lerr) < 0 || !same_stat(&f2, &f3)) {
            if (same_stat(&f2, &f3) || !lerr[0])
                snprintf(lerr, sizeof lerr,
                         "file changed while it was "
                         "loading (publish by writing a temporary name and "
                         "renaming it)");
            srv_model_release(m);
            m = NULL;
        }
    }
    if (!m) {
        note_failure(r, ns, vs, c, &f2, why, "%s", lerr);
        say(err, errlen, c->source, lerr);
        return -1;
    }
    if (vs->m) {
        srv_log(SRV_INFO,
                "model %s version %d unloaded (%s): replaced by "
                "new content, sha256 was %.12s",
                ns->name, vs->version, why, vs->m->sha256);
        srv_model_release(vs->m);
    }
    vs->m = m;
    vs->fp = f2;
    vs->failed = 0;
    vs->reason[0] = '\0';
    srv_log(SRV_INFO,
            "model %s version %d loaded (%s): %s, %zu parameters, "
            "sha256 %s (%s)",
            ns->name, vs->version, why, m->architecture, m->params, m->sha256, m->source);
    return 1;
}

static void unload_version(name_state *ns, ver_state *vs, const char *why, const char *because)
{
    if (!vs->m) return;
    srv_log(SRV_INFO, "model %s version %d unloaded (%s): %s, sha256 %.12s", ns->name, vs->version,
            why, because, vs->m->sha256);
    srv_model_release(vs->m);
    vs->m = NULL;
    memset(&vs->fp, 0, sizeof vs->fp);
}

static int cmp_int_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

/* Applies a scan's candidates for one name (cands[0..n) all of that name,
 * at most one per version). Returns the number of failures. */
static int refresh_name(srv_registry *r, int slot, const cand *const *cands, int n, int force,
                        const char *why, char *err, size_t errlen)
{
    name_state *ns = &r->names[slot];
    int fails = 0, K = r->cfg->keep_versions > 0 ? r->cfg->keep_versions : 1;
    for (int i = 0; i < ns->nv; i++) ns->v[i].present = 0;
    int vers[MAX_CANDS], nver = 0;
    for (int i = 0; i < n; i++) vers[nver++] = cands[i]->version;
    qsort(vers, (size_t)nver, sizeof vers[0], cmp_int_desc);
    if (nver > SRV_MAX_VERSIONS) nver = SRV_MAX_VERSIONS; /* the highest ones */
    for (int i = 0; i < nver; i++) {
        ver_state *vs = get_ver(ns, vers[i]);
        if (vs) vs->present = 1;
    }
    ver_state *top = top_served(ns);
    int want_classes = top ? top->m->nclasses : 0;
    /* The K highest present versions are wanted. */
    for (int i = 0; i < nver && i < K; i++) {
        const cand *c = NULL;
        for (int j = 0; j < n; j++)
            if (cands[j]->version == vers[i]) c = cands[j];
        ver_state *vs = find_ver(ns, vers[i]);
        if (!c || !vs) continue;
        if (refresh_version(r, slot, vs, c, force, want_classes, why, err, errlen) < 0) fails++;
    }
    /* Served: the wanted versions that loaded, topped up to K with older
     * versions still loaded and present, so that a failing file never
     * takes away a working model. */
    int keep[SRV_MAX_VERSIONS] = {0}, kept = 0;
    for (int i = 0; i < nver && i < K; i++) {
        ver_state *vs = find_ver(ns, vers[i]);
        if (vs && vs->m) {
            keep[vs - ns->v] = 1;
            kept++;
        }
    }
    for (int i = K; i < nver && kept < K; i++) {
        ver_state *vs = find_ver(ns, vers[i]);
        if (vs && vs->m) {
            keep[vs - ns->v] = 1;
            kept++;
        }
    }
    for (int i = 0; i < ns->nv; i++) {
        ver_state *vs = &ns->v[i];
        if (vs->m && !keep[i]) {
            const ver_state *t = top_served(ns);
            char because[96];
            if (!vs->present)
                snprintf(because, sizeof because, "its file is gone");
            else
                snprintf(because, sizeof because,
                         "superseded (keeping %d "
                         "version%s)",
                         K, K == 1 ? "" : "s");
            (void)t;
            unload_version(ns, vs, why, because);
        }
        if (!vs->present) {
            vs->failed = 0; /* a removed file's failure is moot */
            vs->reason[0] = '\0';
        }
    }
    /* Forget versions that neither serve nor are on disk. */
    for (int i = 0; i < ns->nv;)
        if (!ns->v[i].m && !ns->v[i].present)
            ns->v[i] = ns->v[--ns->nv];
        else
            i++;
    return fails;
}

/* ---- snapshots ---------------------------------------------------------------------- */

static void snapshot_free(srv_snapshot *v)
{
    for (int k = 0; k < v->n; k++)
        for (int i = 0; i < v->s[k].nver; i++) srv_model_release(v->s[k].ver[i]);
    free(v->index);
    if (v->models_json) cJSON_free(v->models_json);
    if (v->index_json) cJSON_free(v->index_json);
    free(v);
}

void srv_snapshot_release(srv_snapshot *v)
{
    if (v && atomic_fetch_sub(&v->refs, 1) == 1) snapshot_free(v);
}

srv_snapshot *srv_registry_acquire(srv_registry *r)
{
    atomic_fetch_add(&r->entering, 1);
    srv_snapshot *v = atomic_load(&r->current);
    atomic_fetch_add(&v->refs, 1);
    atomic_fetch_sub(&r->entering, 1);
    return v;
}

srv_model *srv_snapshot_find(const srv_snapshot *v, const char *name, int version)
{
    for (int k = 0; k < v->n; k++) {
        const srv_served *s = &v->s[k];
        if (strcmp(s->ver[0]->name, name) != 0) continue;
        if (version <= 0) return s->ver[0];
        for (int i = 0; i < s->nver; i++)
            if (s->ver[i]->version == version) return s->ver[i];
        return NULL;
    }
    return NULL;
}

srv_model *srv_snapshot_default(const srv_snapshot *v)
{
    return v->default_idx >= 0 ? v->s[v->default_idx].ver[0] : NULL;
}

srv_model *srv_registry_acquire_model(srv_registry *r, const char *name, int version)
{
    srv_snapshot *v = srv_registry_acquire(r);
    srv_model *m = srv_snapshot_find(v, name, version);
    if (m) model_ref(m);
    srv_snapshot_release(v);
    return m;
}

static const char *state_name(srv_model_state st)
{
    return st == SRV_MODEL_READY ? "READY" : "UNAVAILABLE";
}

static cJSON *model_json(const srv_snapshot *v, int k)
{
    const srv_model *m = v->s[k].ver[0];
    const nn_meta *meta = nn_ensemble_meta(m->ens);
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddNumberToObject(o, "version", m->version);
    cJSON_AddBoolToObject(o, "default", k == v->default_idx);
    cJSON_AddStringToObject(o, "architecture", m->architecture);
    cJSON_AddNumberToObject(o, "parameters", (double)m->params);
    cJSON_AddNumberToObject(o, "macs", (double)m->macs);
    if (m->test_accuracy >= 0)
        cJSON_AddNumberToObject(o, "test_accuracy", m->test_accuracy);
    else
        cJSON_AddNullToObject(o, "test_accuracy");
    /* Figures stated by the weights file, not measured here. */
    if (m->test_ece > 0)
        cJSON_AddNumberToObject(o, "ece", m->test_ece);
    else
        cJSON_AddNullToObject(o, "ece");
    /* The softmax temperature the probabilities are divided by (1:
     * uncalibrated); an ensemble's members each have their own. */
    if (m->nmembers == 1)
        cJSON_AddNumberToObject(o, "temperature", nn_ensemble_member(m->ens, 0)->meta.temperature);
    else
        cJSON_AddNullToObject(o, "temperature");
    /* The score's method says what its scale means (a head's logit, an
     * energy, a squared distance); an ensemble's is its first member's. */
    const nn_ood *ood = nn_ensemble_ood(m->ens);
    if (ood) {
        cJSON_AddStringToObject(o, "ood_method", nn_ood_method_name(ood->method));
        cJSON_AddNumberToObject(o, "ood_threshold", ood->threshold);
    } else {
        cJSON_AddNullToObject(o, "ood_method");
        cJSON_AddNullToObject(o, "ood_threshold");
    }
    /* bf16 where NN_PRECISION=bf16 runs a member's convolutions on AMX. */
    int bf16 = 0;
    for (int i = 0; i < m->nmembers; i++)
        bf16 |= nn_net_plan_bf16_layers(nn_ensemble_member_infer(m->ens, i)) > 0;
    cJSON_AddStringToObject(o, "precision", nn_precision_name(bf16 ? NN_PREC_BF16 : NN_PREC_FP32));
    cJSON_AddStringToObject(o, "dataset", meta->dataset);
    cJSON_AddStringToObject(o, "preprocess", meta->preprocess);
    cJSON_AddStringToObject(o, "sha256", m->sha256);
    cJSON_AddNumberToObject(o, "classes", m->nclasses);
    cJSON *labels = cJSON_AddArrayToObject(o, "labels");
    for (int c = 0; labels && c < m->nclasses; c++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(m->labels[c]));
    cJSON *files = cJSON_AddArrayToObject(o, "members");
    for (int i = 0; files && i < m->nmembers; i++) {
        const nn_net *net = nn_ensemble_member(m->ens, i);
        char arch[512];
        cJSON *f = cJSON_CreateObject();
        if (!f) break;
        cJSON_AddItemToArray(files, f);
        cJSON_AddStringToObject(f, "path", nn_ensemble_path(m->ens, i));
        cJSON_AddStringToObject(f, "sha256", m->member_sha256[i]);
        nn_net_summary(net, arch, sizeof arch);
        cJSON_AddStringToObject(f, "architecture", arch);
        cJSON_AddNumberToObject(f, "parameters", (double)net->nparams);
        if (net->meta.test_accuracy >= 0)
            cJSON_AddNumberToObject(f, "test_accuracy", net->meta.test_accuracy);
        else
            cJSON_AddNullToObject(f, "test_accuracy");
        if (net->meta.test_ece > 0)
            cJSON_AddNumberToObject(f, "ece", net->meta.test_ece);
        else
            cJSON_AddNullToObject(f, "ece");
        cJSON_AddNumberToObject(f, "temperature", net->meta.temperature);
    }
    /* Every version known under this name: served ones and failures. */
    cJSON *vers = cJSON_AddArrayToObject(o, "versions");
    for (int i = 0; vers && i < v->nindex; i++) {
        const srv_index_entry *e = &v->index[i];
        if (strcmp(e->name, m->name) != 0) continue;
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        cJSON_AddItemToArray(vers, x);
        cJSON_AddNumberToObject(x, "version", e->version);
        cJSON_AddStringToObject(x, "state", state_name(e->state));
        const srv_model *vm = srv_snapshot_find(v, m->name, e->version);
        if (vm && e->state == SRV_MODEL_READY) cJSON_AddStringToObject(x, "sha256", vm->sha256);
        if (e->reason[0]) cJSON_AddStringToObject(x, "reason", e->reason);
    }
    return o;
}

static int render(srv_snapshot *v)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    const srv_model *d = srv_snapshot_default(v);
    if (d)
        cJSON_AddStringToObject(root, "default", d->name);
    else
        cJSON_AddNullToObject(root, "default");
    cJSON *arr = cJSON_AddArrayToObject(root, "models");
    for (int k = 0; arr && k < v->n; k++) {
        cJSON *o = model_json(v, k);
        if (o) cJSON_AddItemToArray(arr, o);
    }
    /* Names with nothing serving (a first version that failed, a model
     * unloaded through the repository API). */
    cJSON *un = cJSON_AddArrayToObject(root, "unavailable");
    for (int i = 0; un && i < v->nindex; i++) {
        const srv_index_entry *e = &v->index[i];
        if (srv_snapshot_find(v, e->name, 0)) continue;
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        cJSON_AddItemToArray(un, x);
        cJSON_AddStringToObject(x, "name", e->name);
        cJSON_AddNumberToObject(x, "version", e->version);
        cJSON_AddStringToObject(x, "state", state_name(e->state));
        cJSON_AddStringToObject(x, "reason", e->reason);
    }
    v->models_json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    /* The repository index, as the inference protocol's repository
     * extension has it: versions are strings. */
    cJSON *idx = cJSON_CreateArray();
    for (int i = 0; idx && i < v->nindex; i++) {
        const srv_index_entry *e = &v->index[i];
        char ver[16];
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        cJSON_AddItemToArray(idx, x);
        snprintf(ver, sizeof ver, "%d", e->version);
        cJSON_AddStringToObject(x, "name", e->name);
        cJSON_AddStringToObject(x, "version", ver);
        cJSON_AddStringToObject(x, "state", state_name(e->state));
        cJSON_AddStringToObject(x, "reason", e->reason);
    }
    v->index_json = idx ? cJSON_PrintUnformatted(idx) : NULL;
    cJSON_Delete(idx);
    if (!v->models_json || !v->index_json) return -1;
    v->models_json_len = strlen(v->models_json);
    v->index_json_len = strlen(v->index_json);
    return 0;
}

static int cmp_index(const void *a, const void *b)
{
    const srv_index_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->version > y->version) - (x->version < y->version);
}

/* The default name among what serves in v (see registry.h). */
static int pick_default(const srv_registry *r, const srv_snapshot *v)
{
    if (v->n == 0) return -1;
    if (r->cfg->default_model[0])
        for (int k = 0; k < v->n; k++)
            if (strcmp(v->s[k].ver[0]->name, r->cfg->default_model) == 0) return k;
    pipe_candidate cand[SRV_MAX_MODELS];
    for (int k = 0; k < v->n; k++) {
        const srv_model *m = v->s[k].ver[0];
        cand[k] = (pipe_candidate){.nmembers = m->nmembers,
                                   .test_accuracy = m->test_accuracy,
                                   .dataset = nn_ensemble_meta(m->ens)->dataset};
    }
    return pipe_default_pick(cand, v->n);
}

/* A snapshot of the current per-name state, or NULL (out of memory). */
static srv_snapshot *snapshot_build(srv_registry *r)
{
    srv_snapshot *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    atomic_init(&v->refs, 1);
    int cap = 0;
    for (int k = 0; k < r->nnames; k++) cap += r->names[k].nv + 1;
    v->index = calloc((size_t)(cap ? cap : 1), sizeof *v->index);
    if (!v->index) {
        free(v);
        return NULL;
    }
    for (int k = 0; k < r->nnames; k++) {
        name_state *ns = &r->names[k];
        srv_served *s = &v->s[v->n];
        s->nver = 0;
        for (int i = 0; i < ns->nv; i++) {
            ver_state *vs = &ns->v[i];
            if (vs->m && !ns->api_unloaded) {
                model_ref(vs->m);
                s->ver[s->nver++] = vs->m;
            }
            if (vs->m || vs->failed || (ns->api_unloaded && vs->present)) {
                srv_index_entry *e = &v->index[v->nindex++];
                snprintf(e->name, sizeof e->name, "%s", ns->name);
                e->version = vs->version;
                e->state = vs->m && !ns->api_unloaded ? SRV_MODEL_READY : SRV_MODEL_UNAVAILABLE;
                if (ns->api_unloaded)
                    snprintf(e->reason, sizeof e->reason, "unloaded through the repository API");
                else
                    snprintf(e->reason, sizeof e->reason, "%s", vs->reason);
            }
        }
        /* Highest version first. */
        for (int i = 1; i < s->nver; i++)
            for (int j = i; j > 0 && s->ver[j]->version > s->ver[j - 1]->version; j--) {
                srv_model *t = s->ver[j];
                s->ver[j] = s->ver[j - 1];
                s->ver[j - 1] = t;
            }
        if (s->nver) v->n++;
        srv_metrics_model *in = &v->info[k];
        in->name = ns->name;
        in->load_failures = ns->failures;
        if (s->nver) {
            const srv_model *m = s->ver[0];
            in->loaded = 1;
            in->architecture = m->architecture;
            in->sha256 = m->sha256;
            in->params = (double)m->params;
            in->test_accuracy = m->test_accuracy;
            in->nclasses = m->nclasses;
            for (int c = 0; c < m->nclasses; c++) in->labels[c] = m->labels[c];
        }
    }
    v->ninfo = r->nnames;
    qsort(v->index, (size_t)v->nindex, sizeof *v->index, cmp_index);
    v->default_idx = pick_default(r, v);
    if (v->default_idx >= 0) v->info[v->s[v->default_idx].ver[0]->slot].is_default = 1;
    v->generation = ++r->generation;
    if (render(v) < 0) {
        snapshot_free(v);
        return NULL;
    }
    return v;
}

static void publish(srv_registry *r, srv_snapshot *v, const char *why)
{
    srv_snapshot *old = atomic_exchange(&r->current, v);
    while (atomic_load(&r->entering) != 0) sched_yield();
    const srv_model *d = srv_snapshot_default(v);
    if (d && strcmp(d->name, r->default_name) != 0) {
        if (r->default_name[0]) srv_log(SRV_INFO, "default model is now %s (%s)", d->name, why);
        snprintf(r->default_name, sizeof r->default_name, "%s", d->name);
    } else if (!d && r->default_name[0]) {
        srv_log(SRV_WARN, "no model serves any more (%s)", why);
        r->default_name[0] = '\0';
    }
    srv_snapshot_release(old);
}

/* ---- scans ------------------------------------------------------------------------- */

/* Logs the scan's notes, one line each, unless a poll found the very same
 * ones as the scan before (a poll every second must not repeat them). */
static void log_notes(srv_registry *r, const cand_list *l, int force)
{
    char digest[65];
    srv_sha256_hex(l->notes, l->nnotes, digest);
    if (!force && strcmp(digest, r->notes_digest) == 0) return;
    memcpy(r->notes_digest, digest, sizeof digest);
    for (const char *p = l->notes; *p;) {
        size_t n = strcspn(p, "\n");
        srv_log(SRV_WARN, "models: %.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
}

/* Rescans (every name, or only `only`), under r->mu. strict: every
 * failure is an error (start-up). Returns the number of failures, or -1
 * when the scan could not run (err says why). *found: whether `only` has
 * any file. */
static int scan_locked(srv_registry *r, const char *only, int force, int strict, const char *why,
                       int *found, char *err, size_t errlen)
{
    cand_list l = {0};
    l.c = malloc(sizeof *l.c * MAX_CANDS);
    if (!l.c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (gather(r->cfg, &l, strict, err, errlen) < 0) {
        free(l.c);
        return -1;
    }
    if (strict && l.err[0]) {
        snprintf(err, errlen, "%s", l.err);
        free(l.c);
        return -1;
    }
    int fails = 0;
    if (found) *found = 0;
    char first_err[1200] = "";
    const cand **group = malloc(sizeof *group * MAX_CANDS);
    int seen[SRV_MAX_MODELS] = {0};
    if (!group) {
        free(l.c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < l.n; i++) {
        const cand *c = &l.c[i];
        if (c->version == 0) continue; /* shadowed */
        if (only && strcmp(c->name, only) != 0) continue;
        if (found) *found = 1;
        int k = find_name(r, c->name);
        if (k >= 0 && seen[k]) continue; /* this name's group is done */
        if (!srv_config_valid_name(c->name)) {
            snprintf(first_err, sizeof first_err,
                     "%.900s: model name '%s' must "
                     "be letters, digits, '.', '_' or '-'",
                     c->source, c->name);
            if (strict) goto strict_fail;
            note(&l, first_err);
            fails++;
            continue;
        }
        if (k < 0) {
            if (r->nnames >= SRV_MAX_MODELS) {
                snprintf(first_err, sizeof first_err,
                         "%s: too many models "
                         "(max %d)",
                         c->source, SRV_MAX_MODELS);
                if (strict) goto strict_fail;
                note(&l, first_err);
                fails++;
                continue;
            }
            k = r->nnames++;
            memset(&r->names[k], 0, sizeof r->names[k]);
            snprintf(r->names[k].name, sizeof r->names[k].name, "%s", c->name);
        }
        seen[k] = 1;
        /* The group: every candidate of this name, one per version; a
         * second source of the same version is refused (sources are in
         * order: --model first, then the directory). */
        int n = 0;
        for (int j = i; j < l.n; j++) {
            const cand *d = &l.c[j];
            if (d->version == 0 || strcmp(d->name, c->name) != 0) continue;
            int dup = -1;
            for (int q = 0; q < n; q++)
                if (group[q]->version == d->version) dup = q;
            if (dup >= 0) {
                snprintf(first_err, sizeof first_err,
                         "%.500s: model name '%s' "
                         "version %d is already taken by %.500s",
                         d->source, d->name, d->version, group[dup]->source);
                if (strict) goto strict_fail;
                note(&l, first_err);
                continue;
            }
            group[n++] = d;
        }
        if (r->names[k].api_unloaded) continue; /* left alone until loaded again */
        char e1[1200] = "";
        int f = refresh_name(r, k, group, n, force || strict, why, e1, sizeof e1);
        if (f && strict) {
            snprintf(first_err, sizeof first_err, "model '%s' (%.1100s)", c->name, e1);
            goto strict_fail;
        }
        if (f && !first_err[0]) snprintf(first_err, sizeof first_err, "%s", e1);
        fails += f;
    }
    /* Names without any file now: every version goes. */
    for (int k = 0; k < r->nnames; k++) {
        name_state *ns = &r->names[k];
        if (seen[k] || (only && strcmp(ns->name, only) != 0) || ns->api_unloaded) continue;
        refresh_name(r, k, NULL, 0, force, why, NULL, 0);
    }
    log_notes(r, &l, force);
    free(group);
    free(l.c);
    if (fails) snprintf(err, errlen, "%s", first_err);
    return fails;
strict_fail:
    free(group);
    free(l.c);
    snprintf(err, errlen, "%s", first_err);
    return -1;
}

/* Publishes the state after a scan. -1 when out of memory (the previous
 * snapshot stays). */
static int republish(srv_registry *r, const char *why)
{
    srv_snapshot *v = snapshot_build(r);
    if (!v) {
        srv_log(SRV_ERROR,
                "models (%s): out of memory building the model "
                "list; still serving the previous one",
                why);
        return -1;
    }
    publish(r, v, why);
    atomic_fetch_add(&r->reloads, 1);
    /* Hand the freed pages of the models let go so far back (glibc keeps
     * them in its arenas otherwise, and RSS would creep with reloads). */
    malloc_trim(0);
    return 0;
}

srv_reg_result srv_registry_reload(srv_registry *r, const char *why, int force)
{
    char err[1200];
    pthread_mutex_lock(&r->mu);
    int f = scan_locked(r, NULL, force, 0, why, NULL, err, sizeof err);
    if (f < 0)
        srv_log(SRV_ERROR, "models (%s): %s; nothing changed", why, err);
    else
        republish(r, why);
    pthread_mutex_unlock(&r->mu);
    return f == 0 ? SRV_REG_OK : SRV_REG_FAILED;
}

srv_reg_result srv_registry_load(srv_registry *r, const char *name, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->mu);
    int k = find_name(r, name), was_unloaded = 0;
    if (k >= 0 && r->names[k].api_unloaded) {
        was_unloaded = 1;
        r->names[k].api_unloaded = 0;
    }
    int found = 0;
    char e[1200] = "";
    int f = scan_locked(r, name, 1, 0, "repository API", &found, e, sizeof e);
    srv_reg_result res = SRV_REG_OK;
    if (f < 0) {
        snprintf(err, errlen, "%s", e);
        res = SRV_REG_FAILED;
    } else if (!found) {
        snprintf(err, errlen,
                 "no file for model '%s' in the models "
                 "directory or the --model list",
                 name);
        res = SRV_REG_NOT_FOUND;
    } else if (f > 0) {
        snprintf(err, errlen, "%s", e);
        res = SRV_REG_FAILED;
    }
    if (res == SRV_REG_NOT_FOUND && was_unloaded) r->names[k].api_unloaded = 1;
    if (f >= 0) republish(r, "repository API");
    pthread_mutex_unlock(&r->mu);
    return res;
}

srv_reg_result srv_registry_unload(srv_registry *r, const char *name, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->mu);
    srv_reg_result res = SRV_REG_OK;
    int k = find_name(r, name);
    srv_snapshot *cur = atomic_load(&r->current);
    int serving = 0;
    for (int i = 0; i < cur->n; i++)
        if (strcmp(cur->s[i].ver[0]->name, name) != 0) serving++;
    if (k < 0 || !top_served(&r->names[k]) || r->names[k].api_unloaded) {
        snprintf(err, errlen, "model '%s' is not loaded", name);
        res = SRV_REG_NOT_FOUND;
    } else if (serving == 0) {
        snprintf(err, errlen,
                 "model '%s' is the last model serving; load "
                 "another first",
                 name);
        res = SRV_REG_LAST_MODEL;
    } else {
        name_state *ns = &r->names[k];
        for (int i = 0; i < ns->nv; i++)
            unload_version(ns, &ns->v[i], "repository API", "unload request");
        ns->api_unloaded = 1;
        republish(r, "repository API");
    }
    pthread_mutex_unlock(&r->mu);
    return res;
}

/* ---- life cycle ----------------------------------------------------------------------- */

srv_registry *srv_registry_create(const srv_registry_opts *o, char *err, size_t errlen)
{
    srv_registry *r = calloc(1, sizeof *r);
    if (!r || !(r->names = calloc(SRV_MAX_MODELS, sizeof *r->names))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->o = *o;
    r->cfg = o->cfg;
    if (r->o.settle_s < 0) r->o.settle_s = 0.1;
    if (r->o.nslots < 1) r->o.nslots = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->tmu, NULL);
    pthread_cond_init(&r->tcv, NULL);
    /* The start-up scan takes its look at each file without the settle
     * wait: files are expected in place before the server starts. */
    double settle = r->o.settle_s;
    r->o.settle_s = 0;
    char e[1200];
    r->quiet = 1;
    int f = scan_locked(r, NULL, 1, 1, "start-up", NULL, e, sizeof e);
    r->quiet = 0;
    r->o.settle_s = settle;
    if (f != 0) {
        snprintf(err, errlen, "%s", e);
        srv_registry_free(r);
        return NULL;
    }
    srv_snapshot *v = snapshot_build(r);
    if (!v) {
        snprintf(err, errlen, "out of memory rendering the model list");
        srv_registry_free(r);
        return NULL;
    }
    if (v->n == 0) {
        snprintf(err, errlen,
                 "no models to serve: %s%s has no *.safetensors "
                 "(train some with 'make train' or pass --model NAME=PATH)",
                 r->cfg->models_dir[0] ? "directory " : "",
                 r->cfg->models_dir[0] ? r->cfg->models_dir : "configuration");
        snapshot_free(v);
        srv_registry_free(r);
        return NULL;
    }
    if (r->cfg->default_model[0] && !srv_snapshot_find(v, r->cfg->default_model, 0)) {
        snprintf(err, errlen, "--default-model %s: no such model loaded", r->cfg->default_model);
        snapshot_free(v);
        srv_registry_free(r);
        return NULL;
    }
    atomic_store(&r->current, v);
    snprintf(r->default_name, sizeof r->default_name, "%s", srv_snapshot_default(v)->name);
    return r;
}

void srv_registry_log_all(srv_registry *r)
{
    srv_snapshot *v = srv_registry_acquire(r);
    const srv_model *m = srv_snapshot_default(v);
    if (m)
        srv_log(SRV_INFO,
                "default model %s version %d: %d member%s, test "
                "accuracy %s%.4f",
                m->name, m->version, m->nmembers, m->nmembers == 1 ? "" : "s",
                m->test_accuracy < 0 ? "unknown " : "",
                m->test_accuracy < 0 ? 0 : m->test_accuracy);
    srv_snapshot_release(v);
}

uint64_t srv_registry_reloads(srv_registry *r) { return atomic_load(&r->reloads); }

void srv_registry_close_batchers(srv_registry *r)
{
    srv_snapshot *v = srv_registry_acquire(r);
    for (int k = 0; k < v->n; k++)
        for (int i = 0; i < v->s[k].nver; i++) pipe_batcher_close(v->s[k].ver[i]->batch);
    srv_snapshot_release(v);
}

static void *reloader(void *arg)
{
    srv_registry *r = arg;
    pthread_mutex_lock(&r->tmu);
    while (!r->stop) {
        if (!r->requested) {
            if (r->poll_s > 0) {
                struct timespec t;
                clock_gettime(CLOCK_REALTIME, &t);
                double s = (double)t.tv_sec + t.tv_nsec * 1e-9 + r->poll_s;
                t.tv_sec = (time_t)s;
                t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
                int rc = 0;
                while (!r->stop && !r->requested && rc != ETIMEDOUT)
                    rc = pthread_cond_timedwait(&r->tcv, &r->tmu, &t);
            } else {
                while (!r->stop && !r->requested) pthread_cond_wait(&r->tcv, &r->tmu);
            }
        }
        if (r->stop) break;
        int forced = r->requested;
        char why[32];
        snprintf(why, sizeof why, "%s", forced ? r->requested_why : "poll");
        r->requested = 0;
        pthread_mutex_unlock(&r->tmu);
        srv_registry_reload(r, why, forced);
        pthread_mutex_lock(&r->tmu);
    }
    pthread_mutex_unlock(&r->tmu);
    return NULL;
}

int srv_registry_start(srv_registry *r, double poll_s)
{
    pthread_mutex_lock(&r->tmu);
    r->poll_s = poll_s;
    r->stop = 0;
    int rc = r->running ? 0 : pthread_create(&r->thread, NULL, reloader, r);
    if (rc == 0) r->running = 1;
    pthread_mutex_unlock(&r->tmu);
    return rc == 0 ? 0 : -1;
}

void srv_registry_request_reload(srv_registry *r, const char *why)
{
    pthread_mutex_lock(&r->tmu);
    int running = r->running;
    if (running) {
        r->requested = 1;
        snprintf(r->requested_why, sizeof r->requested_why, "%s", why);
        pthread_cond_signal(&r->tcv);
    }
    pthread_mutex_unlock(&r->tmu);
    if (!running) srv_registry_reload(r, why, 1);
}

void srv_registry_stop(srv_registry *r)
{
    pthread_mutex_lock(&r->tmu);
    int running = r->running;
    r->stop = 1;
    pthread_cond_signal(&r->tcv);
    pthread_mutex_unlock(&r->tmu);
    if (running) pthread_join(r->thread, NULL);
    r->running = 0;
}

void srv_registry_free(srv_registry *r)
{
    if (!r) return;
    srv_registry_stop(r);
    srv_snapshot *v = atomic_load(&r->current);
    if (v) srv_snapshot_release(v);
    for (int k = 0; r->names && k < r->nnames; k++)
        for (int i = 0; i < r->names[k].nv; i++) srv_model_release(r->names[k].v[i].m);
    free(r->names);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->tmu);
    pthread_cond_destroy(&r->tcv);
    free(r);
}
