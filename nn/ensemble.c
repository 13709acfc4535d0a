/* ensemble.c - several nets answering as one model. */
#include "nn/err.h"
#include "nn/ensemble.h"
#include "nn/ood.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct nn_ensemble {
    int n;
    nn_net *nets[NN_MAX_MEMBERS];  /* owned (unless borrowed); the members
                                      as trained */
    nn_net *infer[NN_MAX_MEMBERS]; /* what forward runs: nets[i] with batch
                                      norm folded (nn_net_fold_bn), or
                                      nets[i] itself (planned) when
                                      nothing folds; owned. NULL in a
                                      view: forward runs nets[i] */
    int borrowed;                  /* a view: nets[0] is the caller's */
    char paths[NN_MAX_MEMBERS][512];
};

struct nn_ensemble_ws {
    int n, k, max_batch;
    nn_ws *ws[NN_MAX_MEMBERS];
    float *tmp;    /* one member's probabilities [max_batch, k] */
    float *logits; /* one member's logits [max_batch, k] (energy)  */
    float *mp;     /* every member's probabilities [n][max_batch, k]
                      (disagreement); NULL for one member            */
};

/* nn_ensemble_from_nets; names (may be NULL) name the members in messages. */
static nn_ensemble *from_nets(nn_net **nets, const char (*names)[512], int n, char *err,
                              size_t errlen)
{
    if (n < 1 || n > NN_MAX_MEMBERS) {
        nn_errf(err, errlen, "ensemble: %d members (must be 1..%d)", n, NN_MAX_MEMBERS);
        for (int i = 0; i < n; i++) nn_net_free(nets[i]);
        return NULL;
    }
    nn_ensemble *e = calloc(1, sizeof *e);
    if (!e) {
        nn_errf(err, errlen, "ensemble: out of memory");
        for (int i = 0; i < n; i++) nn_net_free(nets[i]);
        return NULL;
    }
    e->n = n;
    for (int i = 0; i < n; i++) e->nets[i] = nets[i];
    const nn_net *a = nets[0];
    for (int i = 1; i < n; i++) {
        const nn_net *b = nets[i];
        char who[540];
        if (names)
            snprintf(who, sizeof who, "%s (member %d)", names[i], i);
        else
            snprintf(who, sizeof who, "member %d", i);
        if (b->in_c != a->in_c || b->in_h != a->in_h || b->in_w != a->in_w ||
            nn_net_outputs(b) != nn_net_outputs(a)) {
            nn_errf(err, errlen,
                    "ensemble: %s has input [%d,%d,%d] and %d classes, member 0 [%d,%d,%d] and %d",
                    who, b->in_c, b->in_h, b->in_w, nn_net_outputs(b), a->in_c, a->in_h, a->in_w,
                    nn_net_outputs(a));
            nn_ensemble_free(e);
            return NULL;
        }
        /* One image goes through one preprocessing for all members. */
        if (strcmp(b->meta.preprocess, a->meta.preprocess)) {
            nn_errf(err, errlen, "ensemble: %s wants preprocess \"%s\", member 0 \"%s\"", who,
                    b->meta.preprocess, a->meta.preprocess);
            nn_ensemble_free(e);
            return NULL;
        }
    }
    /* Inference runs the folded copies: one pass fewer per batch norm. */
    for (int i = 0; i < n; i++) {
        int folds = 0;
        for (int j = 1; j < nets[i]->nlayers; j++)
            folds |= nets[i]->layers[j].kind == NN_BATCHNORM &&
                     (nets[i]->layers[j - 1].kind == NN_CONV2D ||
                      nets[i]->layers[j - 1].kind == NN_DENSE);
        /* A net with nothing to fold is its own inference copy, and
         * is planned in place (its members are read-only from here). */
        e->infer[i] = folds ? nn_net_fold_bn(nets[i], err, errlen) : nets[i];
        if (!folds && nn_net_plan(nets[i], err, errlen)) e->infer[i] = NULL;
        if (!e->infer[i]) {
            nn_ensemble_free(e);
            return NULL;
        }
    }
    return e;
}

nn_ensemble *nn_ensemble_from_nets(nn_net **nets, int n, char *err, size_t errlen)
{
    return from_nets(nets, NULL, n, err, errlen);
}

size_t nn_model_stem(const char *name, int *is_list)
{
    static const char *const suffix[2] = {".safetensors", ".ensemble"};
    size_t n = strlen(name);
    for (int i = 0; i < 2; i++) {
        size_t k = strlen(suffix[i]);
        if (n > k && strcmp(name + n - k, suffix[i]) == 0) {
            if (is_list) *is_list = i;
            return n - k;
        }
    }
    if (is_list) *is_list = 0;
    return 0;
}

int nn_ensemble_list_parse(const char *text, size_t len, const char *path, char *paths,
                           size_t pathslen, double *accuracy, char *err, size_t errlen)
{
    char dir[1024] = ".", line[1100];
    const char *slash = strrchr(path, '/');
    paths[0] = '\0';
    *accuracy = -1;
    if (slash) {
        size_t dl = (size_t)(slash - path);
        if (dl >= sizeof dir) return nn_errf(err, errlen, "%.200s: path too long", path);
        memcpy(dir, path, dl);
        dir[dl] = '\0';
        if (dl == 0) strcpy(dir, "/");
    }
    if (memchr(text, '\0', len))
        return nn_errf(err, errlen, "%.500s: not a text file (NUL byte)", path);
    size_t o = 0, at = 0;
    int members = 0, lineno = 0;
    while (at < len) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t ll = nl ? (size_t)(nl - (text + at)) : len - at;
        lineno++;
        if (ll >= sizeof line)
            return nn_errf(err, errlen, "%.500s:%d: line too long", path, lineno);
        memcpy(line, text + at, ll);
        line[ll] = '\0';
        at += ll + (nl ? 1 : 0);
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = line, *e;
        while (*s == ' ' || *s == '\t') s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
        if (!*s) continue;
        if (strncmp(s, "test_accuracy=", 14) == 0) {
            char *end;
            double v = strtod(s + 14, &end);
            if (end == s + 14 || *end || !(v >= 0 && v <= 1))
                return nn_errf(err, errlen, "%.500s:%d: test_accuracy must be 0..1", path, lineno);
            *accuracy = v;
            continue;
        }
        if (strchr(s, ','))
            return nn_errf(err, errlen, "%.500s:%d: member file names cannot contain ','", path,
                           lineno);
        char member[2200];
        if (s[0] == '/')
            snprintf(member, sizeof member, "%s", s);
        else
            snprintf(member, sizeof member, "%s/%s", dir, s);
        size_t n = strlen(member);
        if (o + n + 2 > pathslen) return nn_errf(err, errlen, "%.500s: member list too long", path);
        if (o) paths[o++] = ',';
        memcpy(paths + o, member, n + 1);
        o += n;
        members++;
    }
    if (members == 0) return nn_errf(err, errlen, "%.500s: lists no member weights files", path);
    return 0;
}

int nn_ensemble_list_read(const char *path, char *paths, size_t pathslen, double *accuracy,
                          char *err, size_t errlen)
{
    /* O_NONBLOCK + fstat: a FIFO named NAME.ensemble must not hang the
     * caller waiting for a writer; only a regular file is read. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return nn_errf(err, errlen, "%.500s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return nn_errf(err, errlen, "%.500s: not a regular file", path);
    }
    if (sb.st_size > NN_LIST_MAX) {
        close(fd);
        return nn_errf(err, errlen, "%.500s: %lld bytes, more than a list's %d", path,
                       (long long)sb.st_size, NN_LIST_MAX);
    }
    char *text = malloc((size_t)sb.st_size + 1);
    if (!text) {
        close(fd);
        return nn_errf(err, errlen, "%.500s: out of memory", path);
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, text + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(text);
            close(fd);
            return nn_errf(err, errlen, "%.500s: read error: %s", path, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    int rc = nn_ensemble_list_parse(text, got, path, paths, pathslen, accuracy, err, errlen);
    free(text);
    return rc;
}

nn_ensemble *nn_ensemble_load(const char *paths, char *err, size_t errlen)
{
    nn_net *nets[NN_MAX_MEMBERS];
    char names[NN_MAX_MEMBERS][512];
    int n = 0;
    const char *p = paths;
    if (!paths || !*paths) {
        nn_errf(err, errlen, "ensemble: no model path given");
        return NULL;
    }
    int is_list;
    if (!strchr(paths, ',') && nn_model_stem(paths, &is_list) && is_list) {
        char list[NN_MAX_MEMBERS * 520];
        double acc;
        if (nn_ensemble_list_read(paths, list, sizeof list, &acc, err, errlen)) return NULL;
        return nn_ensemble_load(list, err, errlen);
    }
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || len >= sizeof names[0]) {
            nn_errf(err, errlen, "ensemble: empty or too long path in \"%.100s\"", paths);
            goto bad;
        }
        if (n == NN_MAX_MEMBERS) {
            nn_errf(err, errlen, "ensemble: more than %d members", NN_MAX_MEMBERS);
            goto bad;
        }
        memcpy(names[n], p, len);
        names[n][len] = 0;
        nets[n] = nn_net_load(names[n], err, errlen);
        if (!nets[n]) goto bad;
        n++;
        p += len + (q ? 1 : 0);
        if (q && !*p) {
            nn_errf(err, errlen, "ensemble: trailing comma in \"%.100s\"", paths);
            goto bad;
        }
    }
    nn_ensemble *e = from_nets(nets, (const char(*)[512])names, n, err, errlen);
    if (e)
        for (int i = 0; i < n; i++) memcpy(e->paths[i], names[i], sizeof e->paths[i]);
    return e;
bad:
    for (int i = 0; i < n; i++) nn_net_free(nets[i]);
    return NULL;
}

nn_ensemble *nn_ensemble_view(const nn_net *net)
{
    nn_ensemble *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->n = 1;
    e->nets[0] = (nn_net *)net; /* never written through, never freed */
    e->borrowed = 1;
    return e;
}

int nn_ensemble_size(const nn_ensemble *e) { return e->n; }
const nn_net *nn_ensemble_member(const nn_ensemble *e, int i) { return e->nets[i]; }
const char *nn_ensemble_path(const nn_ensemble *e, int i) { return e->paths[i]; }

void nn_ensemble_free(nn_ensemble *e)
{
    if (!e) return;
    if (e->borrowed) {
        free(e);
        return;
    }
    for (int i = 0; i < e->n; i++) {
        if (e->infer[i] != e->nets[i]) nn_net_free(e->infer[i]); /* NULL: harmless */
        nn_net_free(e->nets[i]);
    }
    free(e);
}

const nn_meta *nn_ensemble_meta(const nn_ensemble *e) { return &e->nets[0]->meta; }
int nn_ensemble_classes(const nn_ensemble *e) { return nn_net_outputs(e->nets[0]); }

size_t nn_ensemble_params(const nn_ensemble *e)
{
    size_t s = 0;
    for (int i = 0; i < e->n; i++) s += e->nets[i]->nparams;
    return s;
}

/* The net forward runs: the folded copy, or the member itself in a view
 * (infer[i] left NULL). */
static const nn_net *runs(const nn_ensemble *e, int i)
{
    return e->infer[i] ? e->infer[i] : e->nets[i];
}

const nn_net *nn_ensemble_member_infer(const nn_ensemble *e, int i) { return runs(e, i); }

void nn_ensemble_unplan(nn_ensemble *e)
{
    for (int i = 0; i < e->n; i++)
        if (e->infer[i]) nn_net_unplan(e->infer[i]);
}

nn_ensemble_ws *nn_ensemble_ws_create(const nn_ensemble *e, int max_batch)
{
    nn_ensemble_ws *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->n = e->n;
    w->k = nn_ensemble_classes(e);
    w->max_batch = max_batch;
    for (int i = 0; i < e->n; i++)
        if (!(w->ws[i] = nn_ws_create(runs(e, i), max_batch, 0))) goto bad;
    if (e->n > 1 && !(w->tmp = malloc(sizeof(float) * max_batch * w->k))) goto bad;
    if (!(w->logits = malloc(sizeof(float) * max_batch * w->k))) goto bad;
    if (e->n > 1 && !(w->mp = malloc(sizeof(float) * e->n * max_batch * w->k))) goto bad;
    return w;
bad:
    nn_ensemble_ws_free(w);
    return NULL;
}

void nn_ensemble_ws_free(nn_ensemble_ws *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) nn_ws_free(w->ws[i]);
    free(w->tmp);
    free(w->logits);
    free(w->mp);
    free(w);
}

const struct nn_ood *nn_ensemble_ood(const nn_ensemble *e) { return runs(e, 0)->ood; }

/* energy[r] += -logsumexp(z[r]) for n rows of k logits. */
static void add_energy(float *energy, const float *z, int n, int k)
{
    for (int r = 0; r < n; r++) energy[r] += nn_energy(z + (size_t)r * k, k);
}

/* Entropy of k probabilities, in nats, in double; p = 0 adds nothing. */
static double entropy(const float *p, int k)
{
    double h = 0;
    for (int j = 0; j < k; j++)
        if (p[j] > 0) h -= p[j] * log((double)p[j]);
    return h;
}

float nn_disagreement(const float *p, int m, int k)
{
    double mean_h = 0, hm = 0;
    for (int i = 0; i < m; i++) mean_h += entropy(p + (size_t)i * k, k);
    mean_h /= m;
    for (int j = 0; j < k; j++) {
        double q = 0;
        for (int i = 0; i < m; i++) q += p[(size_t)i * k + j];
        q /= m;
        if (q > 0) hm -= q * log(q);
    }
    /* Exactly 0 or more: rounding must not make agreement look negative. */
    return hm > mean_h ? (float)(hm - mean_h) : 0.0f;
}

void nn_ensemble_forward_scores(const nn_ensemble *e, nn_ensemble_ws *w, const float *x, int n,
                                float *probs, float *energy, float *ood)
{
    nn_ensemble_forward_disagree(e, w, x, n, probs, energy, ood, NULL);
}

void nn_ensemble_forward_disagree(const nn_ensemble *e, nn_ensemble_ws *w, const float *x, int n,
                                  float *probs, float *energy, float *ood, float *disagree)
{
    size_t m = (size_t)n * w->k;
    const nn_ood *o0 = ood ? runs(e, 0)->ood : NULL;
    float *z = energy || o0 ? w->logits : NULL;
    if (energy) memset(energy, 0, sizeof(float) * n);
    nn_net_forward(runs(e, 0), w->ws[0], x, n, probs, z);
    if (energy) add_energy(energy, z, n, w->k);
    /* Member 0's features and logits, read before anything overwrites them. */
    if (o0) nn_ood_score_pass(o0, nn_ws_features(w->ws[0]), z, n, w->k, ood);
    /* Members' probabilities kept side by side: mp[i] is member i's. */
    float *mp = disagree ? w->mp : NULL;
    if (mp) memcpy(mp, probs, sizeof(float) * m);
    for (int i = 1; i < e->n; i++) {
        float *pi = mp ? mp + (size_t)i * w->max_batch * w->k : w->tmp;
        nn_net_forward(runs(e, i), w->ws[i], x, n, pi, z);
        if (energy) add_energy(energy, z, n, w->k);
        for (size_t j = 0; j < m; j++) probs[j] += pi[j];
    }
    if (disagree) {
        if (!mp) {
            memset(disagree, 0, sizeof(float) * n); /* one member agrees with itself */
        } else {
            float row[NN_MAX_MEMBERS * NN_MAX_CLASSES];
            size_t stride = (size_t)w->max_batch * w->k;
            for (int r = 0; r < n; r++) {
                for (int i = 0; i < e->n; i++)
                    memcpy(row + (size_t)i * w->k, mp + i * stride + (size_t)r * w->k,
                           sizeof(float) * w->k);
                disagree[r] = nn_disagreement(row, e->n, w->k);
            }
        }
    }
    if (e->n > 1) {
        float inv = 1.0f / e->n;
        for (size_t j = 0; j < m; j++) probs[j] *= inv;
        if (energy)
            for (int r = 0; r < n; r++) energy[r] *= inv;
    }
}

void nn_ensemble_forward(const nn_ensemble *e, nn_ensemble_ws *w, const float *x, int n,
                         float *probs)
{
    nn_ensemble_forward_scores(e, w, x, n, probs, NULL, NULL);
}
