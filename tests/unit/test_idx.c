/* test_idx.c - IDX parsing and dataset loading: good files load exactly,
 * every malformed one is refused with a message naming the problem, and the
 * real MNIST files (make data) load with their known counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "nn/idx.h"

#define TMPDIR_PREFIX "test_idx"
#include "tmpdir.h"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An image file of n rows x cols images, pixel k = k % 251, plus extra
 * bytes appended (negative: that many bytes cut off). */
static uint8_t *make_images(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, long extra,
                            size_t *len)
{
    size_t payload = (size_t)n * rows * cols;
    *len = (size_t)((long)(16 + payload) + extra);
    uint8_t *b = calloc(16 + payload + (extra > 0 ? (size_t)extra : 0), 1);
    assert_non_null(b);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t k = 0; k < payload; k++) b[16 + k] = (uint8_t)(k % 251);
    return b;
}

/* A label file with labels i % mod. */
static uint8_t *make_labels(uint32_t magic, uint32_t n, int mod, long extra, size_t *len)
{
    *len = (size_t)((long)(8 + n) + extra);
    uint8_t *b = calloc(8 + n + (extra > 0 ? (size_t)extra : 0), 1);
    assert_non_null(b);
    put_be32(b, magic);
    put_be32(b + 4, n);
    for (uint32_t i = 0; i < n; i++) b[8 + i] = (uint8_t)(i % (uint32_t)mod);
    return b;
}

static void write_file(const char *path, const uint8_t *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void write_gz(const char *path, const uint8_t *b, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, b, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void assert_contains(const char *err, const char *want)
{
    if (!strstr(err, want)) fail_msg("message \"%s\" does not contain \"%s\"", err, want);
}

/* ---- parsers over memory ------------------------------------------------ */

static void test_parse_valid(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = make_images(0x803, 3, 4, 5, 0, &len);
    const uint8_t *px;
    int n, r, c;
    char err[256] = "";
    assert_int_equal(nn_idx_parse_images(b, len, &px, &n, &r, &c, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(r, 4);
    assert_int_equal(c, 5);
    assert_ptr_equal(px, b + 16);
    free(b);

    b = make_labels(0x801, 7, 10, 0, &len);
    const uint8_t *lb;
    assert_int_equal(nn_idx_parse_labels(b, len, &lb, &n, err, sizeof err), 0);
    assert_int_equal(n, 7);
    assert_ptr_equal(lb, b + 8);
    free(b);
}

static void images_refused(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols, long extra,
                           const char *want)
{
    size_t len;
    /* Header-only buffers for huge dims: the payload must never be touched. */
    int huge = (uint64_t)n * rows * cols > (1u << 24);
    uint8_t *b = huge ? make_images(magic, 0, 0, 0, 0, &len)
                      : make_images(magic, n, rows, cols, extra, &len);
    if (huge) {
        put_be32(b + 4, n);
        put_be32(b + 8, rows);
        put_be32(b + 12, cols);
    }
    const uint8_t *px = NULL;
    int on = -1, r = -1, c = -1;
    char err[256] = "";
    assert_int_equal(nn_idx_parse_images(b, len, &px, &on, &r, &c, err, sizeof err), -1);
    assert_contains(err, want);
    assert_null(px); /* outputs untouched on failure */
    assert_int_equal(on, -1);
    free(b);
}

static void test_images_refused(void **state)
{
    (void)state;
    images_refused(0x801, 2, 3, 3, 0, "bad magic 0x00000801, expected 0x00000803");
    images_refused(0x801, 2, 3, 3, 0, "this is a label file");
    images_refused(0x1f8b0800, 2, 3, 3, 0, "gzip data");
    images_refused(0x0803 | 0x01000000, 2, 3, 3, 0, "bad magic");
    images_refused(0x803, 2, 3, 3, -1, "expected 18 bytes of pixels, file has 17");
    images_refused(0x803, 2, 3, 3, 5, "expected 18 bytes of pixels, file has 23");
    images_refused(0x803, 0, 3, 3, 0, "image count 0");
    images_refused(0x803, 10000001, 1, 1, 0, "image count 10000001");
    images_refused(0x803, 0xffffffffu, 28, 28, 0, "image count 4294967295");
    images_refused(0x803, 2, 0, 3, 0, "image size 0x3");
    images_refused(0x803, 2, 1025, 3, 0, "image size 1025x3");
    images_refused(0x803, 2, 3, 0xffffffffu, 0, "image size 3x4294967295");
    /* In bounds one by one; the product is far beyond the file. */
    images_refused(0x803, 10000000, 1024, 1024, 0,
                   "expected 10485760000000 bytes of pixels, file has 0");

    char err[256] = "";
    const uint8_t *px;
    int n, r, c;
    uint8_t hdr[15] = {0, 0, 8, 3};
    assert_int_equal(nn_idx_parse_images(hdr, sizeof hdr, &px, &n, &r, &c, err, sizeof err), -1);
    assert_contains(err, "too short");
    assert_int_equal(nn_idx_parse_images(NULL, 0, &px, &n, &r, &c, err, sizeof err), -1);
    assert_contains(err, "too short");
}

static void test_labels_refused(void **state)
{
    (void)state;
    struct {
        uint32_t magic, n;
        long extra;
        const char *want;
    } cases[] = {
        {0x803, 4, 0, "this is an image file"},
        {0x802, 4, 0, "bad magic 0x00000802"},
        {0x801, 4, -1, "expected 4 bytes of labels, file has 3"},
        {0x801, 4, 2, "expected 4 bytes of labels, file has 6"},
        {0x801, 0, 0, "label count 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *b = make_labels(cases[i].magic, cases[i].n, 10, cases[i].extra, &len);
        const uint8_t *lb;
        int n;
        char err[256] = "";
        assert_int_equal(nn_idx_parse_labels(b, len, &lb, &n, err, sizeof err), -1);
        assert_contains(err, cases[i].want);
        free(b);
    }
    uint8_t big[8] = {0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff};
    const uint8_t *lb;
    int n;
    char err[256] = "";
    assert_int_equal(nn_idx_parse_labels(big, 8, &lb, &n, err, sizeof err), -1);
    assert_contains(err, "label count 4294967295");
    assert_int_equal(nn_idx_parse_labels(big, 7, &lb, &n, err, sizeof err), -1);
    assert_contains(err, "too short");
}

/* ---- files ---------------------------------------------------------------- */

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

static void test_load_files(void **state)
{
    (void)state;
    char ip[128], lp[128], err[512] = "";
    size_t il, ll;
    uint8_t *im = make_images(0x803, 6, 2, 3, 0, &il);
    uint8_t *lb = make_labels(0x801, 6, 10, 0, &ll);
    lb[8 + 5] = 9;
    path_in(ip, sizeof ip, "a-images");
    path_in(lp, sizeof lp, "a-labels");
    write_file(ip, im, il);
    write_file(lp, lb, ll);

    nn_dataset *d = nn_dataset_load(ip, lp, 10, err, sizeof err);
    if (!d) fail_msg("load failed: %s", err);
    assert_int_equal(d->n, 6);
    assert_int_equal(d->rows, 2);
    assert_int_equal(d->cols, 3);
    assert_memory_equal(d->images, im + 16, 36);
    assert_memory_equal(d->labels, lb + 8, 6);
    nn_dataset_free(d);
    nn_dataset_free(NULL);

    /* Label 9 with only 9 classes. */
    assert_null(nn_dataset_load(ip, lp, 9, err, sizeof err));
    assert_contains(err, "label 9 at index 5 is out of range (must be < 9)");
    assert_contains(err, lp);
    assert_null(nn_dataset_load(ip, lp, 0, err, sizeof err));
    assert_contains(err, "bad arguments");

    /* Swapped files: the magic check names the mistake and the file. */
    assert_null(nn_dataset_load(lp, ip, 10, err, sizeof err));
    assert_contains(err, lp);
    assert_contains(err, "this is a label file");

    /* Count mismatch between the two files. */
    char lp5[128];
    size_t l5;
    uint8_t *lb5 = make_labels(0x801, 5, 10, 0, &l5);
    path_in(lp5, sizeof lp5, "b-labels");
    write_file(lp5, lb5, l5);
    assert_null(nn_dataset_load(ip, lp5, 10, err, sizeof err));
    assert_contains(err, "has 6 images but");
    assert_contains(err, "has 5 labels");

    /* Truncated payload and trailing bytes, through the file path. */
    char tp[128];
    path_in(tp, sizeof tp, "train-images-idx3-ubyte");
    write_file(tp, im, il - 1);
    assert_null(nn_dataset_load(tp, lp, 10, err, sizeof err));
    assert_contains(err, "train-images-idx3-ubyte: expected 36 bytes of pixels, file has 35");
    uint8_t *im2 = make_images(0x803, 6, 2, 3, 1000, &il);
    write_file(tp, im2, il);
    assert_null(nn_dataset_load(tp, lp, 10, err, sizeof err));
    assert_contains(err, "expected 36 bytes of pixels, file has 1036");
    unlink(tp);

    /* Missing and non-regular files. */
    assert_null(nn_dataset_load("/nonexistent/x", lp, 10, err, sizeof err));
    assert_contains(err, "/nonexistent/x: cannot open");
    assert_null(nn_dataset_load(tmpdir, lp, 10, err, sizeof err));
    assert_contains(err, "not a regular file");

    free(im);
    free(im2);
    free(lb);
    free(lb5);
}

static void test_gzip(void **state)
{
    (void)state;
    char ip[] = "/tmp/test_idx_imgXXXXXX.gz", lp[] = "/tmp/test_idx_lblXXXXXX.gz";
    int fi = mkstemps(ip, 3), fl = mkstemps(lp, 3);
    assert_true(fi >= 0 && fl >= 0);
    close(fi);
    close(fl);

    size_t il, ll;
    uint8_t *im = make_images(0x803, 50, 28, 28, 0, &il);
    uint8_t *lb = make_labels(0x801, 50, 10, 0, &ll);
    write_gz(ip, im, il);
    write_gz(lp, lb, ll);

    char err[512] = "";
    nn_dataset *d = nn_dataset_load(ip, lp, 10, err, sizeof err);
    if (!d) fail_msg("gz load failed: %s", err);
    assert_int_equal(d->n, 50);
    assert_int_equal(d->rows, 28);
    assert_memory_equal(d->images, im + 16, 50 * 28 * 28);
    assert_memory_equal(d->labels, lb + 8, 50);
    nn_dataset_free(d);

    /* A gzip file cut short is refused, not read as a short dataset. */
    FILE *fp = fopen(ip, "rb");
    assert_non_null(fp);
    uint8_t gzb[65536];
    size_t gzlen = fread(gzb, 1, sizeof gzb, fp);
    fclose(fp);
    assert_true(gzlen > 40 && gzlen < sizeof gzb);
    write_file(ip, gzb, gzlen - 20);
    assert_null(nn_dataset_load(ip, lp, 10, err, sizeof err));
    assert_contains(err, ip);

    /* Corrupt deflate data in the middle. */
    gzb[gzlen / 2] ^= 0xff;
    gzb[gzlen / 2 + 1] ^= 0xff;
    write_file(ip, gzb, gzlen);
    assert_null(nn_dataset_load(ip, lp, 10, err, sizeof err));
    assert_contains(err, ip);

    unlink(ip);
    unlink(lp);
    free(im);
    free(lb);
}

static void test_gzip_bomb(void **state)
{
    (void)state;
    /* 300 MiB of zeros compresses to ~300 KB; the reader must stop at its
     * cap instead of allocating whatever the stream inflates to. */
    char ip[128], lp[128], err[512] = "";
    path_in(ip, sizeof ip, "bomb-images.gz");
    path_in(lp, sizeof lp, "bomb-labels");
    gzFile gz = gzopen(ip, "wb1");
    assert_non_null(gz);
    static uint8_t zero[1 << 20];
    for (int i = 0; i < 300; i++)
        assert_int_equal(gzwrite(gz, zero, sizeof zero), (int)sizeof zero);
    assert_int_equal(gzclose(gz), Z_OK);
    size_t ll;
    uint8_t *lb = make_labels(0x801, 1, 10, 0, &ll);
    write_file(lp, lb, ll);
    assert_null(nn_dataset_load(ip, lp, 10, err, sizeof err));
    assert_contains(err, "decompresses to more than");
    unlink(ip);
    free(lb);
}

static void test_load_dir(void **state)
{
    (void)state;
    char sub[128], p[192], err[512] = "";
    path_in(sub, sizeof sub, "ds");
    assert_int_equal(mkdir(sub, 0755), 0);

    assert_null(nn_dataset_load_dir(sub, 0, 10, err, sizeof err));
    assert_contains(err, "no train images");
    assert_contains(err, "looked for train-images-idx3-ubyte");

    /* The two spellings in the wild, plain and gzip'ed, mixed. */
    size_t il, ll;
    uint8_t *im = make_images(0x803, 4, 3, 3, 0, &il);
    uint8_t *lb = make_labels(0x801, 4, 10, 0, &ll);
    snprintf(p, sizeof p, "%s/train-images.idx3-ubyte.gz", sub);
    write_gz(p, im, il);
    assert_null(nn_dataset_load_dir(sub, 0, 10, err, sizeof err));
    assert_contains(err, "no train labels");
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", sub);
    write_file(p, lb, ll);
    nn_dataset *d = nn_dataset_load_dir(sub, 0, 10, err, sizeof err);
    if (!d) fail_msg("load_dir failed: %s", err);
    assert_int_equal(d->n, 4);
    nn_dataset_free(d);

    /* The test split is looked up under its own name. */
    assert_null(nn_dataset_load_dir(sub, 1, 10, err, sizeof err));
    assert_contains(err, "no t10k images");
    assert_null(nn_dataset_load_dir(sub, 2, 10, err, sizeof err));
    free(im);
    free(lb);
}

static void test_load_set(void **state)
{
    (void)state;
    char sub[128], p[320], pre[192], err[512] = "";
    path_in(sub, sizeof sub, "sets");
    assert_int_equal(mkdir(sub, 0755), 0);
    size_t il, ll;
    uint8_t *im = make_images(0x803, 5, 4, 4, 0, &il);
    uint8_t *lb = make_labels(0x801, 5, 52, 0, &ll);

    /* A prefix names one set's two files, whatever the split names. */
    snprintf(pre, sizeof pre, "%s/letters-eval", sub);
    assert_null(nn_dataset_load_set(pre, 1, 52, err, sizeof err));
    assert_contains(err, "letters-eval-images-idx3-ubyte files");
    snprintf(p, sizeof p, "%s-images-idx3-ubyte", pre);
    write_file(p, im, il);
    assert_null(nn_dataset_load_set(pre, 1, 52, err, sizeof err));
    assert_contains(err, "letters-eval-labels-idx1-ubyte files");
    snprintf(p, sizeof p, "%s-labels.idx1-ubyte.gz", pre);
    write_gz(p, lb, ll);
    nn_dataset *d = nn_dataset_load_set(pre, 1, 52, err, sizeof err);
    if (!d) fail_msg("load_set of a prefix failed: %s", err);
    assert_int_equal(d->n, 5);
    assert_int_equal(d->rows, 4);
    nn_dataset_free(d);
    /* The labels are still checked against the classes. */
    assert_null(nn_dataset_load_set(pre, 1, 3, err, sizeof err));

    /* A directory is read as nn_dataset_load_dir reads it. */
    assert_null(nn_dataset_load_set(sub, 1, 10, err, sizeof err));
    assert_contains(err, "no t10k images");
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", sub);
    write_file(p, im, il);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", sub);
    write_file(p, lb, ll);
    d = nn_dataset_load_set(sub, 1, 52, err, sizeof err);
    if (!d) fail_msg("load_set of a directory failed: %s", err);
    assert_int_equal(d->n, 5);
    nn_dataset_free(d);

    assert_null(nn_dataset_load_set("", 1, 10, err, sizeof err));
    assert_null(nn_dataset_load_set("/", 1, 10, err, sizeof err));
    assert_null(nn_dataset_load_set("nowhere-at-all", 1, 10, err, sizeof err));
    assert_contains(err, "nowhere-at-all: no such directory");
    assert_null(nn_dataset_load_set("dir/", 1, 10, err, sizeof err));
    assert_contains(err, "not a directory, nor a usable file prefix");
    free(im);
    free(lb);
}

/* ---- the real data ------------------------------------------------------- */

static void check_real(const nn_dataset *d, int n, int first_label)
{
    assert_int_equal(d->n, n);
    assert_int_equal(d->rows, 28);
    assert_int_equal(d->cols, 28);
    assert_int_equal(d->labels[0], first_label);
    int hist[10] = {0};
    for (int i = 0; i < d->n; i++) hist[d->labels[i]]++;
    for (int k = 0; k < 10; k++) assert_true(hist[k] > n / 20); /* every digit well represented */
    /* Pixels use the full 0..255 range, and the border is mostly blank. */
    int maxv = 0;
    for (size_t i = 0; i < (size_t)28 * 28 * 100; i++)
        if (d->images[i] > maxv) maxv = d->images[i];
    assert_int_equal(maxv, 255);
    assert_int_equal(d->images[0], 0);
}

/* The writers: what they write loads back as written (images alone, and
 * with labels); a file that cannot be written is an error naming it, and
 * leaves neither it nor its temporary behind. */
static void test_write(void **state)
{
    (void)state;
    char ip[512], lp[512], bad[512], err[256];
    uint8_t px[3 * 2 * 5], lab[3] = {7, 0, 9};
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37);
    path_in(ip, sizeof ip, "w-images-idx3-ubyte");
    path_in(lp, sizeof lp, "w-labels-idx1-ubyte");
    assert_int_equal(nn_idx_write_images(ip, px, 3, 2, 5, err, sizeof err), 0);
    assert_int_equal(nn_idx_write_labels(lp, lab, 3, err, sizeof err), 0);
    nn_dataset *d = nn_dataset_load(ip, lp, 10, err, sizeof err);
    if (!d) fail_msg("%s", err);
    assert_int_equal(d->n, 3);
    assert_int_equal(d->rows, 2);
    assert_int_equal(d->cols, 5);
    assert_memory_equal(d->images, px, sizeof px);
    assert_memory_equal(d->labels, lab, sizeof lab);
    nn_dataset_free(d);
    d = nn_dataset_load(ip, NULL, 10, err, sizeof err);
    if (!d) fail_msg("%s", err);
    assert_null(d->labels);
    assert_memory_equal(d->images, px, sizeof px);
    nn_dataset_free(d);

    path_in(bad, sizeof bad, "no-such-dir/x-images-idx3-ubyte");
    assert_int_equal(nn_idx_write_images(bad, px, 3, 2, 5, err, sizeof err), -1);
    assert_non_null(strstr(err, "no-such-dir/x-images-idx3-ubyte"));
    assert_int_equal(nn_idx_write_images(ip, px, 3, 0, 5, err, sizeof err), -1);
    struct stat st;
    assert_int_equal(stat(bad, &st), -1);
}

static void test_real_mnist(void **state)
{
    (void)state;
    const char *dir = getenv("MNIST_DIR");
    if (!dir || !*dir) dir = "data/mnist";
    char err[512] = "";
    nn_dataset *tr = nn_dataset_load_dir(dir, 0, 10, err, sizeof err);
    if (!tr)
        fail_msg("MNIST training set not loadable: %s [run make data; MNIST_DIR "
                 "overrides the directory]",
                 err);
    check_real(tr, 60000, 5);
    nn_dataset_free(tr);
    nn_dataset *te = nn_dataset_load_dir(dir, 1, 10, err, sizeof err);
    if (!te)
        fail_msg("MNIST test set not loadable: %s [run make data; MNIST_DIR "
                 "overrides the directory]",
                 err);
    check_real(te, 10000, 7);
    nn_dataset_free(te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),    cmocka_unit_test(test_images_refused),
        cmocka_unit_test(test_labels_refused), cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_gzip),           cmocka_unit_test(test_gzip_bomb),
        cmocka_unit_test(test_load_dir),       cmocka_unit_test(test_load_set),
        cmocka_unit_test(test_real_mnist),     cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
