/* safetensors.c - the safetensors container: validating reader, atomic writer.
 *
 * The reader treats the file as hostile: every number in the header is
 * checked for type, integrality and range before it is converted, and the
 * tensors must tile the data block exactly (sorted by offset: no overlap,
 * no gap, nothing after the last one). See safetensors.h for the contract.
 */
#include "nn/err.h"
#include "nn/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_DIM_SIZE (1LL << 31)

static size_t nn_st_dtype_size(nn_st_dtype dt) { return dt == NN_ST_I64 ? 8 : 4; }
static const char *nn_st_dtype_name(nn_st_dtype dt) { return dt == NN_ST_I64 ? "I64" : "F32"; }

uint64_t nn_st_fnv1a64(const void *data, size_t len, uint64_t h)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- reader ------------------------------------------------------------ */

void nn_st_free(nn_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->buf);
    free(f);
}

/* A JSON number that must be a non-negative integer <= max. cJSON stores
 * numbers as doubles, so "1.5", "-3", "1e300" and NaN all arrive here and
 * must be refused before the cast, which would otherwise be undefined. */
static int nn_st_json_uint(const cJSON *item, uint64_t max, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v != floor(v) || v > (double)max) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Offsets are remembered beside each tensor while parsing. */
typedef struct {
    nn_st_tensor t;
    uint64_t begin, end;
} st_entry;

static int nn_st_cmp_name(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    return strcmp(x->t.name, y->t.name);
}

static int nn_st_cmp_offset(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int nn_st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int nn_st_parse_meta(nn_st_file *f, const cJSON *meta, char *err, size_t errlen)
{
    if (!cJSON_IsObject(meta)) {
        nn_errf(err, errlen, "__metadata__ must be an object of strings");
        return -1;
    }
    int n = cJSON_GetArraySize(meta);
    if (n == 0) return 0;
    f->meta_keys = calloc((size_t)n, sizeof *f->meta_keys);
    f->meta_vals = calloc((size_t)n, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) {
        nn_errf(err, errlen, "out of memory reading __metadata__");
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, meta)
    {
        if (!cJSON_IsString(it) || !it->valuestring) {
            nn_errf(err, errlen, "__metadata__ value for '%.64s' is not a string",
                    it->string ? it->string : "");
            return -1;
        }
        char *k = strdup(it->string ? it->string : "");
        char *v = strdup(it->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            nn_errf(err, errlen, "out of memory reading __metadata__");
            return -1;
        }
        f->meta_keys[f->nmeta] = k;
        f->meta_vals[f->nmeta] = v;
        f->nmeta++;
    }
    /* Duplicate keys would make nn_st_meta's answer depend on order. */
    char **sorted = malloc((size_t)f->nmeta * sizeof *sorted);
    if (!sorted) {
        nn_errf(err, errlen, "out of memory reading __metadata__");
        return -1;
    }
    memcpy(sorted, f->meta_keys, (size_t)f->nmeta * sizeof *sorted);
    qsort(sorted, (size_t)f->nmeta, sizeof *sorted, nn_st_cmp_str);
    for (int i = 1; i < f->nmeta; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            nn_errf(err, errlen, "duplicate __metadata__ key '%.64s'", sorted[i]);
            free(sorted);
            return -1;
        }
    }
    free(sorted);
    return 0;
}

/* Fills e from one header entry; data_len bounds the offsets. */
static int nn_st_parse_entry(st_entry *e, const cJSON *obj, uint64_t data_len, char *err,
                             size_t errlen)
{
    const char *name = e->t.name;
    if (!cJSON_IsObject(obj)) {
        nn_errf(err, errlen, "tensor '%.64s': entry is not an object", name);
        return -1;
    }
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL, *it;
    cJSON_ArrayForEach(it, obj)
    {
        const cJSON **slot = NULL;
        if (it->string && strcmp(it->string, "dtype") == 0)
            slot = &dtype;
        else if (it->string && strcmp(it->string, "shape") == 0)
            slot = &shape;
        else if (it->string && strcmp(it->string, "data_offsets") == 0)
            slot = &offs;
        if (slot && *slot) {
            nn_errf(err, errlen, "tensor '%.64s': key \"%s\" appears twice", name, it->string);
            return -1;
        }
        if (slot) *slot = it;
    }

    if (!cJSON_IsString(dtype) || !dtype->valuestring) {
        nn_errf(err, errlen, "tensor '%.64s': missing or non-string \"dtype\"", name);
        return -1;
    }
    if (strcmp(dtype->valuestring, "F32") == 0) {
        e->t.dtype = NN_ST_F32;
    } else if (strcmp(dtype->valuestring, "I64") == 0) {
        e->t.dtype = NN_ST_I64;
    } else {
        nn_errf(err, errlen,
                "tensor '%.64s': unsupported dtype '%.16s' (only F32 and I64 are accepted)", name,
                dtype->valuestring);
        return -1;
    }

    if (!cJSON_IsArray(shape)) {
        nn_errf(err, errlen, "tensor '%.64s': missing or non-array \"shape\"", name);
        return -1;
    }
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NN_ST_MAX_DIMS) {
        nn_errf(err, errlen, "tensor '%.64s': shape has %d dimensions (at most %d)", name, ndim,
                NN_ST_MAX_DIMS);
        return -1;
    }
    e->t.ndim = ndim;
    uint64_t nelem = 1;
    int d = 0;
    cJSON_ArrayForEach(it, shape)
    {
        uint64_t v;
        if (nn_st_json_uint(it, (uint64_t)ST_MAX_DIM_SIZE, &v) != 0) {
            nn_errf(err, errlen, "tensor '%.64s': shape[%d] is not an integer in [0, 2^31]", name,
                    d);
            return -1;
        }
        if (v != 0 && nelem > UINT64_MAX / v) {
            nn_errf(err, errlen, "tensor '%.64s': shape element count overflows", name);
            return -1;
        }
        nelem *= v;
        e->t.shape[d++] = (int64_t)v;
    }
    size_t dsize = nn_st_dtype_size(e->t.dtype);
    if (nelem > UINT64_MAX / dsize) {
        nn_errf(err, errlen, "tensor '%.64s': byte size overflows", name);
        return -1;
    }
    e->t.nelem = nelem;
    e->t.nbytes = nelem * dsize;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
        nn_errf(err, errlen, "tensor '%.64s': \"data_offsets\" must be [begin, end]", name);
        return -1;
    }
    /* Bounded by 2^53 so the double held every digit; the real bound is the
     * data block, checked next with a message that names the cause. */
    const uint64_t exact = 1ULL << 53;
    if (nn_st_json_uint(cJSON_GetArrayItem(offs, 0), exact, &e->begin) != 0 ||
        nn_st_json_uint(cJSON_GetArrayItem(offs, 1), exact, &e->end) != 0) {
        nn_errf(err, errlen, "tensor '%.64s': data_offsets must be non-negative integers", name);
        return -1;
    }
    if (e->begin > e->end) {
        nn_errf(err, errlen, "tensor '%.64s': data_offsets [%llu, %llu] begin after end", name,
                (unsigned long long)e->begin, (unsigned long long)e->end);
        return -1;
    }
    if (e->end > data_len) {
        nn_errf(err, errlen,
                "tensor '%.64s': data_offsets [%llu, %llu] out of range: data block is "
                "%llu bytes (file truncated?)",
                name, (unsigned long long)e->begin, (unsigned long long)e->end,
                (unsigned long long)data_len);
        return -1;
    }
    if (e->end - e->begin != e->t.nbytes) {
        char dims[160] = "";
        size_t pos = 0;
        for (int i = 0; i < ndim && pos < sizeof dims; i++)
            pos += (size_t)snprintf(dims + pos, sizeof dims - pos, "%s%lld", i ? "," : "",
                                    (long long)e->t.shape[i]);
        nn_errf(err, errlen,
                "tensor '%.64s': shape [%s] of %s needs %llu bytes but data_offsets "
                "span %llu",
                name, dims, nn_st_dtype_name(e->t.dtype), (unsigned long long)e->t.nbytes,
                (unsigned long long)(e->end - e->begin));
        return -1;
    }
    return 0;
}

/* Everything after the header is checked here; f->buf/len/data/data_len
 * are set. */
static int nn_st_parse_header(nn_st_file *f, const char *hdr, size_t hlen, char *err, size_t errlen)
{
    if (memchr(hdr, '\0', hlen)) {
        nn_errf(err, errlen, "header contains a NUL byte");
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) {
        /* end marks the error position (cJSON_GetErrorPtr is a global and
         * not safe with several loaders in parallel). */
        size_t off = (end && end >= hdr && end <= hdr + hlen) ? (size_t)(end - hdr) : 0;
        nn_errf(err, errlen, "header is not valid JSON (error near byte %zu)", off);
        return -1;
    }
    /* The format pads the header with spaces; anything else after the
     * JSON value means the length or the JSON is wrong. */
    for (const char *p = end; p && p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            nn_errf(err, errlen, "header has data after the JSON value (at byte %zu)",
                    (size_t)(p - hdr));
            cJSON_Delete(root);
            return -1;
        }
    }
    if (!cJSON_IsObject(root)) {
        nn_errf(err, errlen, "header is not a JSON object");
        cJSON_Delete(root);
        return -1;
    }

    int rc = -1;
    int nitems = cJSON_GetArraySize(root);
    st_entry *ents = calloc((size_t)(nitems > 0 ? nitems : 1), sizeof *ents);
    if (!ents) {
        nn_errf(err, errlen, "out of memory reading the header");
        goto out;
    }
    int n = 0;
    const cJSON *meta = NULL, *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *name = it->string ? it->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (meta) {
                nn_errf(err, errlen, "duplicate __metadata__");
                goto out;
            }
            meta = it;
            continue;
        }
        ents[n].t.name = strdup(name);
        if (!ents[n].t.name) {
            nn_errf(err, errlen, "out of memory reading the header");
            goto out;
        }
        n++;
        if (nn_st_parse_entry(&ents[n - 1], it, f->data_len, err, errlen) != 0) goto out;
    }
    if (meta && nn_st_parse_meta(f, meta, err, errlen) != 0) goto out;

    qsort(ents, (size_t)n, sizeof *ents, nn_st_cmp_name);
    for (int i = 1; i < n; i++) {
        if (strcmp(ents[i - 1].t.name, ents[i].t.name) == 0) {
            nn_errf(err, errlen, "duplicate tensor name '%.64s'", ents[i].t.name);
            goto out;
        }
    }

    /* Sorted by offset, the tensors must tile [0, data_len) exactly. */
    qsort(ents, (size_t)n, sizeof *ents, nn_st_cmp_offset);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (ents[i].begin < pos) {
            nn_errf(err, errlen, "tensors '%.64s' and '%.64s' overlap in the data block",
                    ents[i - 1].t.name, ents[i].t.name);
            goto out;
        }
        if (ents[i].begin > pos) {
            nn_errf(err, errlen, "gap of %llu bytes in the data block before tensor '%.64s'",
                    (unsigned long long)(ents[i].begin - pos), ents[i].t.name);
            goto out;
        }
        pos = ents[i].end;
    }
    if (pos != f->data_len) {
        nn_errf(err, errlen, "data block has %llu bytes after the last tensor (it must end there)",
                (unsigned long long)(f->data_len - pos));
        goto out;
    }

    f->tensors = calloc((size_t)(n > 0 ? n : 1), sizeof *f->tensors);
    if (!f->tensors) {
        nn_errf(err, errlen, "out of memory reading the header");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        f->tensors[i] = ents[i].t;
        f->tensors[i].data = f->data + ents[i].begin;
        ents[i].t.name = NULL; /* now owned by f */
    }
    f->ntensors = n;
    rc = 0;
out:
    if (ents) {
        for (int i = 0; i < n; i++) free(ents[i].t.name);
        free(ents);
    }
    cJSON_Delete(root);
    return rc;
}

nn_st_file *nn_st_parse(uint8_t *buf, size_t len, char *err, size_t errlen)
{
    nn_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        free(buf);
        nn_errf(err, errlen, "out of memory");
        return NULL;
    }
    f->buf = buf;
    f->len = len;
    if (!buf || len < 8) {
        nn_errf(err, errlen, "file too short: %zu bytes, need at least 8 for the header length",
                len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen < 2) {
        nn_errf(err, errlen, "header length %llu is too small (an empty header is {})",
                (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > NN_ST_MAX_HEADER) {
        nn_errf(err, errlen, "header length %llu exceeds the limit of %u bytes",
                (unsigned long long)hlen, NN_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > len - 8) {
        nn_errf(err, errlen,
                "header length %llu is larger than the file (%zu bytes after the length)",
                (unsigned long long)hlen, len - 8);
        goto fail;
    }
    f->data = buf + 8 + hlen;
    f->data_len = len - 8 - hlen;
    if (nn_st_parse_header(f, (const char *)buf + 8, (size_t)hlen, err, errlen) != 0) goto fail;
    return f;
fail:
    nn_st_free(f);
    return NULL;
}

nn_st_file *nn_st_read(const char *path, char *err, size_t errlen)
{
    char why[256];
    /* O_NONBLOCK: opening a FIFO (or a device) for reading would otherwise
     * wait for a writer forever; fstat below refuses anything but a
     * regular file, for which the flag changes nothing. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        nn_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        nn_errf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        nn_errf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (sb.st_size > (off_t)NN_ST_MAX_FILE) {
        nn_errf(err, errlen, "%s: file is %lld bytes, larger than the %u-byte limit", path,
                (long long)sb.st_size, NN_ST_MAX_FILE);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        nn_errf(err, errlen, "%s: out of memory for %zu bytes", path, len);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            nn_errf(err, errlen, "%s: read error: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0) break; /* shrank under us: parse what is there, it will be refused */
        got += (size_t)r;
    }
    close(fd);
    nn_st_file *f = nn_st_parse(buf, got, why, sizeof why);
    if (!f) nn_errf(err, errlen, "%s: %s", path, why);
    return f;
}

const nn_st_tensor *nn_st_find(const nn_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *nn_st_meta(const nn_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct {
    char *name;
    nn_st_dtype dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} st_wtensor;

struct nn_st_writer {
    st_wtensor *t;
    int nt, capt;
    char **mkeys, **mvals;
    int nm, capm;
    uint64_t total; /* sum of nbytes, kept below NN_ST_MAX_FILE */
};

nn_st_writer *nn_st_writer_create(void) { return calloc(1, sizeof(nn_st_writer)); }

void nn_st_writer_free(nn_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->nt; i++) free(w->t[i].name);
    free(w->t);
    for (int i = 0; i < w->nm; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->mkeys);
    free(w->mvals);
    free(w);
}

int nn_st_writer_add(nn_st_writer *w, const char *name, nn_st_dtype dt, int ndim,
                     const int64_t *shape, const void *data)
{
    if (!w || !name || strcmp(name, "__metadata__") == 0 || ndim < 0 || ndim > NN_ST_MAX_DIMS ||
        (ndim > 0 && !shape) || (dt != NN_ST_F32 && dt != NN_ST_I64))
        return -1;
    for (int i = 0; i < w->nt; i++)
        if (strcmp(w->t[i].name, name) == 0) return -1;
    uint64_t nelem = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] > ST_MAX_DIM_SIZE) return -1;
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && nelem > UINT64_MAX / d) return -1;
        nelem *= d;
    }
    uint64_t dsize = nn_st_dtype_size(dt);
    if (nelem > (uint64_t)NN_ST_MAX_FILE / dsize) return -1;
    uint64_t nbytes = nelem * dsize;
    if (w->total + nbytes > NN_ST_MAX_FILE || (nbytes > 0 && !data)) return -1;
    if (w->nt == w->capt) {
        int cap = w->capt ? 2 * w->capt : 16;
        st_wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return -1;
        w->t = t;
        w->capt = cap;
    }
    st_wtensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return -1;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->total += nbytes;
    w->nt++;
    return 0;
}

int nn_st_writer_meta(nn_st_writer *w, const char *key, const char *val)
{
    if (!w || !key || !val) return -1;
    char *v = strdup(val);
    if (!v) return -1;
    for (int i = 0; i < w->nm; i++) {
        if (strcmp(w->mkeys[i], key) == 0) { /* later value wins */
            free(w->mvals[i]);
            w->mvals[i] = v;
            return 0;
        }
    }
    if (w->nm == w->capm) {
        int cap = w->capm ? 2 * w->capm : 16;
        char **k = realloc(w->mkeys, (size_t)cap * sizeof *k);
        if (!k) {
            free(v);
            return -1;
        }
        w->mkeys = k;
        char **vv = realloc(w->mvals, (size_t)cap * sizeof *vv);
        if (!vv) {
            free(v);
            return -1;
        }
        w->mvals = vv;
        w->capm = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return -1;
    }
    w->mkeys[w->nm] = k;
    w->mvals[w->nm] = v;
    w->nm++;
    return 0;
}

/* The header JSON, unpadded; NULL when out of memory. */
static char *nn_st_writer_header(const nn_st_writer *w)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    char *out = NULL;
    if (w->nm > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto done;
        for (int i = 0; i < w->nm; i++)
            if (!cJSON_AddStringToObject(meta, w->mkeys[i], w->mvals[i])) goto done;
    }
    uint64_t off = 0;
    for (int i = 0; i < w->nt; i++) {
        const st_wtensor *t = &w->t[i];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        if (!e || !cJSON_AddStringToObject(e, "dtype", nn_st_dtype_name(t->dtype))) goto done;
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        if (!shape) goto done;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *n = cJSON_CreateNumber((double)t->shape[d]);
            if (!n || !cJSON_AddItemToArray(shape, n)) {
                cJSON_Delete(n);
                goto done;
            }
        }
        /* Offsets stay below NN_ST_MAX_FILE, so the doubles are exact and
         * cJSON prints them as plain integers. */
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        if (!offs) goto done;
        double be[2] = {(double)off, (double)(off + t->nbytes)};
        for (int k = 0; k < 2; k++) {
            cJSON *n = cJSON_CreateNumber(be[k]);
            if (!n || !cJSON_AddItemToArray(offs, n)) {
                cJSON_Delete(n);
                goto done;
            }
        }
        off += t->nbytes;
    }
    out = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return out;
}

static int nn_st_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int nn_st_writer_write(nn_st_writer *w, const char *path, char *err, size_t errlen)
{
    if (!w || !path) {
        nn_errf(err, errlen, "nn_st_writer_write: no writer or path");
        return -1;
    }
    char *json = nn_st_writer_header(w);
    if (!json) {
        nn_errf(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    /* Pad with spaces so the data block starts 8-byte aligned (8 + hlen is
     * a multiple of 8): readers can then map F32/I64 data in place. */
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) & ~(size_t)7;
    if (hlen > NN_ST_MAX_HEADER || 8 + hlen + w->total > NN_ST_MAX_FILE) {
        nn_errf(err, errlen, "%s: file would exceed the format limits", path);
        free(json);
        return -1;
    }
    char *hdr = malloc(8 + hlen);
    if (!hdr) {
        nn_errf(err, errlen, "%s: out of memory building the header", path);
        free(json);
        return -1;
    }
    for (int i = 0; i < 8; i++) hdr[i] = (char)((uint64_t)hlen >> (8 * i));
    memcpy(hdr + 8, json, jlen);
    memset(hdr + 8 + jlen, ' ', hlen - jlen);
    free(json);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        nn_errf(err, errlen, "%s: out of memory", path);
        free(hdr);
        return -1;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        nn_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    if (nn_st_write_all(fd, hdr, 8 + hlen) != 0) goto io_error;
    for (int i = 0; i < w->nt; i++)
        if (w->t[i].nbytes && nn_st_write_all(fd, w->t[i].data, (size_t)w->t[i].nbytes) != 0)
            goto io_error;
    /* fsync before rename: otherwise a crash can leave the new name
     * pointing at an empty file. */
    if (fsync(fd) != 0) goto io_error;
    int cr = close(fd);
    fd = -1;
    if (cr != 0) goto io_error;
    if (rename(tmp, path) != 0) {
        nn_errf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
    goto out;
io_error:
    nn_errf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
out:
    free(tmp);
    free(hdr);
    return rc;
}
