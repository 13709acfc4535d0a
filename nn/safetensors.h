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

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (16u << 20)
/* st_read refuses bigger files, and the writer refuses to produce them. */
#define ST_MAX_FILE (1u << 30)

typedef enum { ST_F32 = 0, ST_I64 = 1 } st_dtype;

typedef struct {
    char *name;                 /* owned by the st_file                   */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nelem;
    const uint8_t *data;        /* points into the st_file's buffer       */
    uint64_t nbytes;
} st_tensor;

typedef struct {
    uint8_t *buf;               /* whole file (owned)                     */
    size_t len;
    const uint8_t *data;        /* start of the data block                */
    uint64_t data_len;
    int ntensors;
    st_tensor *tensors;         /* sorted by data offset                  */
    int nmeta;
    char **meta_keys, **meta_vals; /* owned                               */
} st_file;

/* Takes ownership of buf (malloc'ed, len bytes) in all cases. Tensor data
 * is little-endian and starts at its offset in the data block; files from
 * st_writer_write keep it 8-byte aligned, others may not, so read elements
 * with memcpy unless aligned. */
st_file *st_parse(uint8_t *buf, size_t len, char *err, size_t errlen);
/* Reads the whole file (size-checked) and parses it. */
st_file *st_read(const char *path, char *err, size_t errlen);
void st_free(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key);   /* NULL if absent */

/* Writer: collects tensors and metadata, then writes the file atomically
 * (temporary file + rename). Data pointers must stay valid until
 * st_writer_write returns. Tensors are stored in the order added. */
typedef struct st_writer st_writer;
st_writer *st_writer_create(void);
void st_writer_free(st_writer *w);
int st_writer_add(st_writer *w, const char *name, st_dtype dt, int ndim,
                  const int64_t *shape, const void *data);
int st_writer_meta(st_writer *w, const char *key, const char *val);
int st_writer_write(st_writer *w, const char *path, char *err, size_t errlen);

/* FNV-1a 64-bit hash, used as the checksum of tensor data. */
uint64_t st_fnv1a64(const void *data, size_t len, uint64_t h);
#define ST_FNV_INIT 0xcbf29ce484222325ULL

#endif
