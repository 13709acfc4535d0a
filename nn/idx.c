/* idx.c - MNIST-style IDX files: validating parsers and the dataset loader.
 *
 * Every header field is bounded before it is multiplied, and the payload
 * must match the header exactly: a short file means a broken download, and
 * trailing bytes mean we are reading something other than what we think.
 */
#include "nn/err.h"
#include "nn/idx.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_COUNT 10000000u
#define IDX_MAX_SIDE 1024u
/* Cap on a file (compressed or not) read into memory. MNIST's largest file
 * is 47 MB; the cap stops a hostile .gz from inflating without bound. */
#define IDX_MAX_BYTES (256u << 20)

static uint32_t idx_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int idx_check_magic(uint32_t magic, uint32_t want, char *err, size_t errlen)
{
    if (magic == want) return 0;
    const char *hint = "";
    if (magic == IDX_MAGIC_LABELS)
        hint = " (this is a label file)";
    else if (magic == IDX_MAGIC_IMAGES)
        hint = " (this is an image file)";
    else if ((magic >> 16) == 0x1f8b)
        hint = " (gzip data: name the file .gz)";
    nn_errf(err, errlen, "bad magic 0x%08x, expected 0x%08x for %s%s", magic, want,
            want == IDX_MAGIC_IMAGES ? "images" : "labels", hint);
    return -1;
}

int nn_idx_parse_images(const uint8_t *buf, size_t len, const uint8_t **out, int *n, int *rows,
                        int *cols, char *err, size_t errlen)
{
    /* Magic first when there is one: a wrong file type is the likelier
     * mistake, and its message is the more useful. */
    if (buf && len >= 4 && idx_check_magic(idx_be32(buf), IDX_MAGIC_IMAGES, err, errlen) != 0)
        return -1;
    if (!buf || len < 16) {
        nn_errf(err, errlen, "file too short for an IDX image header: %zu bytes, need 16", len);
        return -1;
    }
    uint32_t cnt = idx_be32(buf + 4), r = idx_be32(buf + 8), c = idx_be32(buf + 12);
    if (cnt == 0 || cnt > IDX_MAX_COUNT) {
        nn_errf(err, errlen, "image count %u out of range [1, %u]", cnt, IDX_MAX_COUNT);
        return -1;
    }
    if (r == 0 || c == 0 || r > IDX_MAX_SIDE || c > IDX_MAX_SIDE) {
        nn_errf(err, errlen, "image size %ux%u out of range [1, %u]", r, c, IDX_MAX_SIDE);
        return -1;
    }
    /* All three factors are bounded above, so the product fits in 64 bits. */
    uint64_t want = (uint64_t)cnt * r * c;
    if (want != (uint64_t)(len - 16)) {
        nn_errf(err, errlen, "expected %llu bytes of pixels, file has %zu",
                (unsigned long long)want, len - 16);
        return -1;
    }
    *out = buf + 16;
    *n = (int)cnt;
    *rows = (int)r;
    *cols = (int)c;
    return 0;
}

int nn_idx_parse_labels(const uint8_t *buf, size_t len, const uint8_t **out, int *n, char *err,
                        size_t errlen)
{
    if (buf && len >= 4 && idx_check_magic(idx_be32(buf), IDX_MAGIC_LABELS, err, errlen) != 0)
        return -1;
    if (!buf || len < 8) {
        nn_errf(err, errlen, "file too short for an IDX label header: %zu bytes, need 8", len);
        return -1;
    }
    uint32_t cnt = idx_be32(buf + 4);
    if (cnt == 0 || cnt > IDX_MAX_COUNT) {
        nn_errf(err, errlen, "label count %u out of range [1, %u]", cnt, IDX_MAX_COUNT);
        return -1;
    }
    if ((uint64_t)cnt != (uint64_t)(len - 8)) {
        nn_errf(err, errlen, "expected %u bytes of labels, file has %zu", cnt, len - 8);
        return -1;
    }
    *out = buf + 8;
    *n = (int)cnt;
    return 0;
}

static void idx_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* hlen header bytes, then len data bytes, through PATH.tmp. */
static int idx_write(const char *path, const uint8_t *hdr, size_t hlen, const uint8_t *data,
                     size_t len, char *err, size_t errlen)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        nn_errf(err, errlen, "%.200s...: path too long", path);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        nn_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int bad = fwrite(hdr, 1, hlen, f) != hlen || fwrite(data, 1, len, f) != len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        nn_errf(err, errlen, "%s: %s", bad ? tmp : path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

int nn_idx_write_images(const char *path, const uint8_t *pixels, int n, int rows, int cols,
                        char *err, size_t errlen)
{
    if (n < 0 || rows < 1 || cols < 1) {
        nn_errf(err, errlen, "%s: bad shape [%d, %d, %d]", path, n, rows, cols);
        return -1;
    }
    uint8_t hdr[16];
    idx_put_be32(hdr, 0x803);
    idx_put_be32(hdr + 4, (uint32_t)n);
    idx_put_be32(hdr + 8, (uint32_t)rows);
    idx_put_be32(hdr + 12, (uint32_t)cols);
    return idx_write(path, hdr, sizeof hdr, pixels, (size_t)n * rows * cols, err, errlen);
}

int nn_idx_write_labels(const char *path, const uint8_t *labels, int n, char *err, size_t errlen)
{
    if (n < 0) {
        nn_errf(err, errlen, "%s: bad count %d", path, n);
        return -1;
    }
    uint8_t hdr[8];
    idx_put_be32(hdr, 0x801);
    idx_put_be32(hdr + 4, (uint32_t)n);
    return idx_write(path, hdr, sizeof hdr, labels, (size_t)n, err, errlen);
}

static int idx_has_suffix(const char *s, const char *suf)
{
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcmp(s + ls - lf, suf) == 0;
}

/* Reads a whole file (through zlib when it ends in .gz), at most
 * IDX_MAX_BYTES. The message does not repeat the path; the caller adds it. */
static uint8_t *idx_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    if (idx_has_suffix(path, ".gz")) {
        errno = 0; /* gzopen sets errno only for system errors */
        gzFile gz = gzopen(path, "rb");
        if (!gz) {
            nn_errf(err, errlen, "cannot open: %s", errno ? strerror(errno) : "zlib error");
            return NULL;
        }
        size_t cap = 1u << 20, got = 0;
        uint8_t *buf = malloc(cap);
        if (!buf) {
            gzclose(gz);
            nn_errf(err, errlen, "out of memory");
            return NULL;
        }
        for (;;) {
            if (got == cap) {
                if (cap >= IDX_MAX_BYTES) {
                    /* Full at the cap: one more byte means too big. */
                    uint8_t probe;
                    int r = gzread(gz, &probe, 1);
                    if (r == 0) break;
                    nn_errf(err, errlen, "decompresses to more than %u bytes", IDX_MAX_BYTES);
                    goto gz_fail;
                }
                size_t ncap = cap * 2 > IDX_MAX_BYTES ? IDX_MAX_BYTES : cap * 2;
                uint8_t *nb = realloc(buf, ncap);
                if (!nb) {
                    nn_errf(err, errlen, "out of memory");
                    goto gz_fail;
                }
                buf = nb;
                cap = ncap;
            }
            size_t want = cap - got;
            if (want > (1u << 30)) want = 1u << 30; /* gzread takes an unsigned int */
            int r = gzread(gz, buf + got, (unsigned)want);
            if (r < 0) {
                int zerr;
                const char *msg = gzerror(gz, &zerr);
                nn_errf(err, errlen, "gzip error: %s", msg ? msg : "unknown");
                goto gz_fail;
            }
            if (r == 0) break;
            got += (size_t)r;
        }
        {
            /* A truncated stream ends with r == 0 but leaves an error set. */
            int zerr = Z_OK;
            const char *msg = gzerror(gz, &zerr);
            if (zerr != Z_OK && zerr != Z_STREAM_END) {
                nn_errf(err, errlen, "gzip error: %s", msg ? msg : "unknown");
                goto gz_fail;
            }
        }
        if (gzclose(gz) != Z_OK) {
            nn_errf(err, errlen, "gzip stream is corrupt or truncated");
            free(buf);
            return NULL;
        }
        *len = got;
        return buf;
    gz_fail:
        gzclose(gz);
        free(buf);
        return NULL;
    }

    FILE *fp = fopen(path, "rb");
    if (!fp) {
        nn_errf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        nn_errf(err, errlen, "not a regular file");
        fclose(fp);
        return NULL;
    }
    if (sb.st_size > (off_t)IDX_MAX_BYTES) {
        nn_errf(err, errlen, "file is %lld bytes, more than the %u-byte limit",
                (long long)sb.st_size, IDX_MAX_BYTES);
        fclose(fp);
        return NULL;
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        nn_errf(err, errlen, "out of memory for %zu bytes", n);
        fclose(fp);
        return NULL;
    }
    size_t got = fread(buf, 1, n, fp);
    if (got != n && ferror(fp)) {
        nn_errf(err, errlen, "read error: %s", strerror(errno));
        free(buf);
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    *len = got; /* a file that shrank is then refused by the parser */
    return buf;
}

void nn_dataset_free(nn_dataset *d)
{
    if (!d) return;
    free(d->images);
    free(d->labels);
    free(d);
}

nn_dataset *nn_dataset_load(const char *images_path, const char *labels_path, int max_label,
                            char *err, size_t errlen)
{
    char why[256];
    size_t ilen = 0, llen = 0;
    uint8_t *ibuf = NULL, *lbuf = NULL;
    nn_dataset *d = NULL;
    const uint8_t *pix, *lab;
    int n, rows, cols, nl;

    if (!images_path || max_label < 1 || max_label > 256) {
        nn_errf(err, errlen, "nn_dataset_load: bad arguments (max_label %d)", max_label);
        return NULL;
    }
    ibuf = idx_read_file(images_path, &ilen, why, sizeof why);
    if (!ibuf) {
        nn_errf(err, errlen, "%s: %s", images_path, why);
        goto fail;
    }
    if (nn_idx_parse_images(ibuf, ilen, &pix, &n, &rows, &cols, why, sizeof why) != 0) {
        nn_errf(err, errlen, "%s: %s", images_path, why);
        goto fail;
    }
    if (!labels_path) { /* images only */
        nl = n;
        lab = NULL;
        goto checked;
    }
    lbuf = idx_read_file(labels_path, &llen, why, sizeof why);
    if (!lbuf) {
        nn_errf(err, errlen, "%s: %s", labels_path, why);
        goto fail;
    }
    if (nn_idx_parse_labels(lbuf, llen, &lab, &nl, why, sizeof why) != 0) {
        nn_errf(err, errlen, "%s: %s", labels_path, why);
        goto fail;
    }
    if (nl != n) {
        nn_errf(err, errlen, "%s has %d images but %s has %d labels", images_path, n, labels_path,
                nl);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (lab[i] >= max_label) {
            nn_errf(err, errlen, "%s: label %u at index %d is out of range (must be < %d)",
                    labels_path, lab[i], i, max_label);
            goto fail;
        }
    }
checked:
    d = calloc(1, sizeof *d);
    if (!d) {
        nn_errf(err, errlen, "out of memory");
        goto fail;
    }
    /* Slide the payloads to the front of the file buffers and keep those:
     * no second copy of a 47 MB image set. */
    size_t npix = (size_t)n * (size_t)rows * (size_t)cols;
    memmove(ibuf, pix, npix);
    uint8_t *im = realloc(ibuf, npix);
    if (im) ibuf = im; /* shrinking cannot really fail; if it does, keep the old block */
    if (lbuf) {
        memmove(lbuf, lab, (size_t)n);
        uint8_t *lb = realloc(lbuf, (size_t)n);
        if (lb) lbuf = lb;
    }
    d->n = n;
    d->rows = rows;
    d->cols = cols;
    d->images = ibuf;
    d->labels = lbuf;
    return d;
fail:
    free(ibuf);
    free(lbuf);
    free(d);
    return NULL;
}

/* Writes into out the first existing candidate name for one file of the
 * set; 0 if found. stem is e.g. "train-images", kind "idx3". */
static int idx_find(const char *dir, const char *stem, const char *kind, char *out, size_t outlen)
{
    static const char *const seps[] = {"-", "."};
    static const char *const sufs[] = {"", ".gz"};
    for (int s = 0; s < 2; s++) {
        for (int z = 0; z < 2; z++) {
            int k = snprintf(out, outlen, "%s/%s%s%s-ubyte%s", dir, stem, seps[s], kind, sufs[z]);
            if (k < 0 || (size_t)k >= outlen) continue;
            struct stat sb;
            if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode)) return 0;
        }
    }
    return -1;
}

nn_dataset *nn_dataset_load_dir(const char *dir, int which, int max_label, char *err, size_t errlen)
{
    if (!dir || (which != 0 && which != 1)) {
        nn_errf(err, errlen, "nn_dataset_load_dir: bad arguments");
        return NULL;
    }
    const char *set = which == 0 ? "train" : "t10k";
    char stem[32], ipath[4096], lpath[4096];
    snprintf(stem, sizeof stem, "%s-images", set);
    if (idx_find(dir, stem, "idx3", ipath, sizeof ipath) != 0) {
        nn_errf(err, errlen,
                "%s: no %s images (looked for %s-idx3-ubyte or %s.idx3-ubyte, "
                "optionally .gz)",
                dir, set, stem, stem);
        return NULL;
    }
    snprintf(stem, sizeof stem, "%s-labels", set);
    if (idx_find(dir, stem, "idx1", lpath, sizeof lpath) != 0) {
        nn_errf(err, errlen,
                "%s: no %s labels (looked for %s-idx1-ubyte or %s.idx1-ubyte, "
                "optionally .gz)",
                dir, set, stem, stem);
        return NULL;
    }
    return nn_dataset_load(ipath, lpath, max_label, err, errlen);
}

nn_dataset *nn_dataset_load_set(const char *where, int which, int max_label, char *err,
                                size_t errlen)
{
    struct stat sb;
    if (!where || !*where) {
        nn_errf(err, errlen, "nn_dataset_load_set: bad arguments");
        return NULL;
    }
    if (stat(where, &sb) == 0 && S_ISDIR(sb.st_mode))
        return nn_dataset_load_dir(where, which, max_label, err, errlen);
    /* A prefix: the directory part and the files' common stem. */
    char dir[4096], stem[1024], ipath[4096], lpath[4096];
    const char *slash = strrchr(where, '/');
    const char *base = slash ? slash + 1 : where;
    size_t dlen = slash ? (size_t)(slash - where) : 1;
    if (dlen >= sizeof dir || strlen(base) + 8 > sizeof stem || !*base) {
        nn_errf(err, errlen, "%s: not a directory, nor a usable file prefix", where);
        return NULL;
    }
    if (slash) {
        memcpy(dir, where, dlen);
        dir[dlen] = 0;
        if (!dlen) strcpy(dir, "/");
    } else {
        strcpy(dir, ".");
    }
    snprintf(stem, sizeof stem, "%s-images", base);
    int found = idx_find(dir, stem, "idx3", ipath, sizeof ipath) == 0;
    snprintf(stem, sizeof stem, "%s-labels", base);
    if (!found || idx_find(dir, stem, "idx1", lpath, sizeof lpath) != 0) {
        nn_errf(err, errlen,
                "%s: no such directory, nor %s-%s-ubyte files (looked for %s-images-idx3-ubyte "
                "and %s-labels-idx1-ubyte, optionally .gz)",
                where, where, found ? "labels-idx1" : "images-idx3", where, where);
        return NULL;
    }
    return nn_dataset_load(ipath, lpath, max_label, err, errlen);
}
