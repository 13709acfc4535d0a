/* safetensors.h - read and write the safetensors container.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header,
 * then the raw data block. The header maps tensor names to
 * {"dtype": "F32"|"I64", "shape": [...], "data_offsets": [begin, end]}
 * (offsets relative to the data block) plus an optional "__metadata__"
 * object of string -> string.
 *
 * Reading validates everything before any value is used: the header length
 * against the file size and a hard cap (16 MiB), JSON syntax, every entry's
 * dtype, shape (non-negative, product overflow-checked) against its byte
 * size, offsets in range, non-overlapping, and covering the data block with
 * no gaps (as the format requires). Errors: NULL / -1 and a one-line
 * message in err.
 */
#ifndef NN_SAFETENSORS_H
#define NN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define NN_ST_MAX_DIMS 8
#define NN_ST_MAX_HEADER (16u << 20)
/* nn_st_read refuses bigger files, and the writer refuses to produce them. */
#define NN_ST_MAX_FILE (1u << 30)

typedef enum { NN_ST_F32 = 0, NN_ST_I64 = 1 } nn_st_dtype;

typedef struct {
    char *name; /* owned by the nn_st_file                   */
    nn_st_dtype dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    uint64_t nelem;
    const uint8_t *data; /* points into the nn_st_file's buffer       */
    uint64_t nbytes;
} nn_st_tensor;

typedef struct {
    uint8_t *buf; /* whole file (owned)                     */
    size_t len;
    const uint8_t *data; /* start of the data block                */
    uint64_t data_len;
    int ntensors;
    nn_st_tensor *tensors; /* sorted by data offset                  */
    int nmeta;
    char **meta_keys, **meta_vals; /* owned                               */
} nn_st_file;

/* Takes ownership of buf (malloc'ed, len bytes) in all cases. Tensor data
 * is little-endian and starts at its offset in the data block; files from
 * nn_st_writer_write keep it 8-byte aligned, others may not, so read elements
 * with memcpy unless aligned. */
nn_st_file *nn_st_parse(uint8_t *buf, size_t len, char *err, size_t errlen);
/* Reads the whole file (size-checked) and parses it. */
nn_st_file *nn_st_read(const char *path, char *err, size_t errlen);
void nn_st_free(nn_st_file *f);

const nn_st_tensor *nn_st_find(const nn_st_file *f, const char *name);
const char *nn_st_meta(const nn_st_file *f, const char *key); /* NULL if absent */

/* Writer: collects tensors and metadata, then writes the file atomically
 * (temporary file + rename). Data pointers must stay valid until
 * nn_st_writer_write returns. Tensors are stored in the order added. */
typedef struct nn_st_writer nn_st_writer;
nn_st_writer *nn_st_writer_create(void);
void nn_st_writer_free(nn_st_writer *w);
int nn_st_writer_add(nn_st_writer *w, const char *name, nn_st_dtype dt, int ndim,
                     const int64_t *shape, const void *data);
int nn_st_writer_meta(nn_st_writer *w, const char *key, const char *val);
int nn_st_writer_write(nn_st_writer *w, const char *path, char *err, size_t errlen);

/* FNV-1a 64-bit hash, used as the checksum of tensor data. */
uint64_t nn_st_fnv1a64(const void *data, size_t len, uint64_t h);
#define NN_ST_FNV_INIT 0xcbf29ce484222325ULL

#endif
