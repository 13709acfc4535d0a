/* idx.h - the IDX files of MNIST and Fashion-MNIST. The parsers take
 * uncompressed bytes; nn_dataset_load reads files, plain or gzip'ed.
 *
 * Images: magic 0x00000803, count, rows, cols, then count*rows*cols bytes.
 * Labels: magic 0x00000801, count, then count bytes.
 * Big-endian 32-bit header fields. Every count and size is checked against
 * the file length and sane bounds before use.
 */
#ifndef NN_IDX_H
#define NN_IDX_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n, rows, cols;
    uint8_t *images; /* n*rows*cols, owned */
    uint8_t *labels; /* n, owned (NULL for images alone) */
} nn_dataset;

/* Loads an images file and a labels file (plain or .gz: a path ending in
 * ".gz" is read through zlib) and checks they agree on the count and that
 * every label is < max_label. labels_path NULL loads the images alone
 * (labels is NULL then). NULL + err on failure. */
nn_dataset *nn_dataset_load(const char *images_path, const char *labels_path, int max_label,
                            char *err, size_t errlen);
void nn_dataset_free(nn_dataset *d);

/* Parsers over memory, for tests and the loader. On success *out points
 * into buf (not copied). Return 0 / -1 + err. */
int nn_idx_parse_images(const uint8_t *buf, size_t len, const uint8_t **out, int *n, int *rows,
                        int *cols, char *err, size_t errlen);
int nn_idx_parse_labels(const uint8_t *buf, size_t len, const uint8_t **out, int *n, char *err,
                        size_t errlen);

/* Writers: an images file [n, rows, cols] and a labels file [n], each
 * written to PATH.tmp and renamed into place, so that a failed run leaves
 * no half file. 0, or -1 + err naming the file. */
int nn_idx_write_images(const char *path, const uint8_t *pixels, int n, int rows, int cols,
                        char *err, size_t errlen);
int nn_idx_write_labels(const char *path, const uint8_t *labels, int n, char *err, size_t errlen);

/* Finds the dataset directory: dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte
 * (optionally .gz). which: 0 train, 1 test. */
nn_dataset *nn_dataset_load_dir(const char *dir, int which, int max_label, char *err,
                                size_t errlen);

/* A directory as nn_dataset_load_dir, or else where is the common prefix P
 * of one set's two files, P-{images-idx3,labels-idx1}-ubyte (or "." before
 * idx3/idx1, optionally .gz), such as data/glyphs/digits-eval for
 * data/glyphs/digits-eval-images-idx3-ubyte; which then plays no part.
 * NULL + err naming what was looked for. */
nn_dataset *nn_dataset_load_set(const char *where, int which, int max_label, char *err,
                                size_t errlen);

#endif
