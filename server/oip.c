/* oip.c - see oip.h.
 *
 * The JSON is read by a small validating tokenizer over the body in place
 * (no tree, no copies): a request holds a few keys and one large "data"
 * array, and a tree of one allocation per number would cost more memory
 * than the body itself. Parsing is two passes over "data": the first,
 * while reading the request object, only checks its syntax and remembers
 * where it starts; the second, once datatype and shape are known and
 * checked and the destination is allocated, converts the elements.
 */
#include "server/oip.h"
#include "server/base64.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokenizer -------------------------------------------------------------- */

typedef struct {
    const char *p, *end;
    const char *base; /* start of the text, for error offsets */
    int depth;
    char *err;
    size_t errlen;
    int failed;
} jp;

typedef struct {
    const char *s; /* between the quotes, escapes as written */
    size_t n;
} slice;

static int jfail(jp *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int jfail(jp *j, const char *fmt, ...)
{
    if (!j->failed && j->err && j->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->err, j->errlen, fmt, ap);
        va_end(ap);
    }
    j->failed = 1;
    return -1;
}

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* The next character after white space, or 0 at the end. */
static char peek(jp *j)
{
    ws(j);
    return j->p < j->end ? *j->p : 0;
}

static int expect(jp *j, char c, const char *what)
{
    if (peek(j) != c) {
        if (j->p >= j->end)
            return jfail(j, "invalid JSON: the body ends where %s was expected", what);
        return jfail(j, "invalid JSON at byte %zu: expected %s", (size_t)(j->p - j->base), what);
    }
    j->p++;
    return 0;
}

static size_t offset_of(const jp *j) { return (size_t)(j->p - j->base); }

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A string: validates escapes and refuses raw control characters. */
static int parse_string(jp *j, slice *out)
{
    if (peek(j) != '"') return jfail(j, "invalid JSON: expected a string");
    const char *s = ++j->p;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            out->s = s;
            out->n = (size_t)(j->p - s);
            j->p++;
            return 0;
        }
        if (c < 0x20) return jfail(j, "invalid JSON: control character in a string");
        if (c == '\\') {
            if (j->end - j->p < 2) break;
            char e = j->p[1];
            if (e == 'u') {
                if (j->end - j->p < 6 || !is_hex(j->p[2]) || !is_hex(j->p[3]) || !is_hex(j->p[4]) ||
                    !is_hex(j->p[5]))
                    return jfail(j, "invalid JSON: bad \\u escape in a string");
                j->p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return jfail(j, "invalid JSON: bad escape in a string");
            j->p += 2;
            continue;
        }
        j->p++;
    }
    return jfail(j, "invalid JSON: unterminated string");
}

typedef struct {
    const char *s;
    size_t n;
    int neg, integral;
} number;

/* A number by JSON's grammar; the text is kept for the caller to convert. */
static int parse_number(jp *j, number *out)
{
    ws(j);
    const char *s = j->p, *e = j->end, *p = s;
    out->neg = 0;
    out->integral = 1;
    if (p < e && *p == '-') {
        out->neg = 1;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9') return jfail(j, "invalid JSON: expected a number");
    if (*p == '0')
        p++;
    else
        while (p < e && *p >= '0' && *p <= '9') p++;
    if (p < e && *p == '.') {
        out->integral = 0;
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return jfail(j, "invalid JSON: digits expected after '.'");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        out->integral = 0;
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9')
            return jfail(j, "invalid JSON: digits expected in an exponent");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    out->s = s;
    out->n = (size_t)(p - s);
    j->p = p;
    return 0;
}

static int parse_literal(jp *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return jfail(j, "invalid JSON: unexpected character");
    j->p += n;
    return 0;
}

static int enter(jp *j)
{
    if (++j->depth > SRV_OIP_MAX_DEPTH)
        return jfail(j, "JSON nested deeper than %d levels", SRV_OIP_MAX_DEPTH);
    return 0;
}

static int skip_value(jp *j);

/* Walks an object's members: for each, calls member(j, key, ctx) with the
 * tokenizer before the value; member must consume the value. */
typedef int (*member_fn)(jp *j, slice key, void *ctx);

static int parse_object(jp *j, member_fn member, void *ctx)
{
    if (expect(j, '{', "'{'") < 0 || enter(j) < 0) return -1;
    if (peek(j) == '}') {
        j->p++;
        j->depth--;
        return 0;
    }
    for (;;) {
        slice key;
        if (parse_string(j, &key) < 0 || expect(j, ':', "':'") < 0) return -1;
        if (member(j, key, ctx) < 0) return -1;
        char c = peek(j);
        if (c == '}') {
            j->p++;
            break;
        }
        if (c != ',')
            return jfail(j, c ? "invalid JSON: expected ',' or '}'"
                              : "invalid JSON: the body ends inside an object");
        j->p++;
    }
    j->depth--;
    return 0;
}

/* Walks an array's elements: element(j, index, ctx) consumes each. */
typedef int (*element_fn)(jp *j, size_t index, void *ctx);

static int parse_array(jp *j, element_fn element, void *ctx)
{
    if (expect(j, '[', "'['") < 0 || enter(j) < 0) return -1;
    if (peek(j) == ']') {
        j->p++;
        j->depth--;
        return 0;
    }
    for (size_t i = 0;; i++) {
        if (element(j, i, ctx) < 0) return -1;
        char c = peek(j);
        if (c == ']') {
            j->p++;
            break;
        }
        if (c != ',')
            return jfail(j, c ? "invalid JSON: expected ',' or ']'"
                              : "invalid JSON: the body ends inside a list");
        j->p++;
    }
    j->depth--;
    return 0;
}

static int skip_member(jp *j, slice key, void *ctx)
{
    (void)key;
    (void)ctx;
    return skip_value(j);
}

static int skip_element(jp *j, size_t i, void *ctx)
{
    (void)i;
    (void)ctx;
    return skip_value(j);
}

static int skip_value(jp *j)
{
    slice s;
    number num;
    switch (peek(j)) {
    case '{': return parse_object(j, skip_member, NULL);
    case '[': return parse_array(j, skip_element, NULL);
    case '"': return parse_string(j, &s);
    case 't': return parse_literal(j, "true");
    case 'f': return parse_literal(j, "false");
    case 'n': return parse_literal(j, "null");
    case 0:
        if (j->p >= j->end)
            return jfail(j, "invalid JSON: the body ends where a value was "
                            "expected");
        return jfail(j, "invalid JSON: unexpected character");
    default: return parse_number(j, &num);
    }
}

static int key_is(slice k, const char *name)
{
    size_t n = strlen(name);
    return k.n == n && memcmp(k.s, name, n) == 0;
}

/* true/false into *b. */
static int parse_bool(jp *j, int *b, const char *what)
{
    char c = peek(j);
    if (c == 't') {
        *b = 1;
        return parse_literal(j, "true");
    }
    if (c == 'f') {
        *b = 0;
        return parse_literal(j, "false");
    }
    return jfail(j, "%s must be true or false", what);
}

/* A non-negative integer literal of at most 64 bits. */
static int parse_u64(jp *j, uint64_t *v, const char *what)
{
    number num;
    if (peek(j) != '-' && (peek(j) < '0' || peek(j) > '9'))
        return jfail(j, "%s must be an integer", what);
    if (parse_number(j, &num) < 0) return -1;
    if (!num.integral)
        return jfail(j, "%s must be an integer, got %.*s", what, (int)(num.n > 40 ? 40 : num.n),
                     num.s);
    if (num.neg)
        return jfail(j, "%s must not be negative, got %.*s", what, (int)(num.n > 40 ? 40 : num.n),
                     num.s);
    uint64_t x = 0;
    for (size_t i = 0; i < num.n; i++) {
        unsigned d = (unsigned)(num.s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return jfail(j, "%s %.*s does not fit in 64 bits", what, (int)(num.n > 40 ? 40 : num.n),
                         num.s);
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

/* ---- the inference request ---------------------------------------------------- */

/* What the first pass learns; the data itself is converted afterwards. */
typedef struct {
    const char *base; /* body start, for error offsets */
    const char *id_s; /* the id literal, quotes included */
    size_t id_n;
    int seen_id, seen_params, seen_inputs, seen_outputs;
    int bin_out_all, bin_out_all_set;
    int ninputs;
    /* the input */
    slice name, dtype;
    int has_name, has_dtype, has_shape;
    int rank;
    uint64_t shape[SRV_OIP_MAX_RANK];
    int has_bin_size;
    uint64_t bin_size;
    const char *data; /* where "data"'s value starts, or NULL */
    /* outputs */
    unsigned outputs, binary, binary_set;
    unsigned order[SRV_OIP_MAX_OUTPUTS];
    int norder;
    unsigned cur_out; /* the output being read */
    int cur_bin, cur_bin_set;
} draft;

static int input_params_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "binary_data_size")) {
        d->has_bin_size = 1;
        return parse_u64(j, &d->bin_size, "binary_data_size");
    }
    return skip_value(j);
}

static int shape_element(jp *j, size_t i, void *ctx)
{
    draft *d = ctx;
    if (i >= SRV_OIP_MAX_RANK)
        return jfail(j, "shape has more than %d dimensions", SRV_OIP_MAX_RANK);
    char what[48];
    snprintf(what, sizeof what, "shape dimension %zu", i);
    if (parse_u64(j, &d->shape[i], what) < 0) return -1;
    d->rank = (int)i + 1;
    return 0;
}

/* Steps over "data"'s list on the first pass: only the brackets (their
 * depth capped as everywhere) and strings (so a bracket inside one does
 * not count) are looked at. The second pass converts every element by
 * the full grammar and reports what is wrong; on this pass a list of many
 * numbers costs a byte scan instead of a parse. Anything but a list is
 * skipped by the grammar (the second pass then says it is not a list). */
static int skip_data(jp *j)
{
    if (peek(j) != '[') return skip_value(j);
    int base = j->depth;
    while (j->p < j->end) {
        char c = *j->p++;
        if (c == '[') {
            if (enter(j) < 0) return -1;
        } else if (c == ']') {
            if (--j->depth == base) return 0;
        } else if (c == '"') {
            j->p--;
            slice str;
            if (parse_string(j, &str) < 0) return -1;
        } else if (c == '{') {
            return jfail(j, "data holds an object: tensor data is numbers or "
                            "strings in lists");
        }
    }
    return jfail(j, "invalid JSON: the body ends inside a list");
}

static int input_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "name")) {
        d->has_name = 1;
        if (peek(j) != '"') return jfail(j, "input name must be a string");
        return parse_string(j, &d->name);
    }
    if (key_is(key, "datatype")) {
        d->has_dtype = 1;
        if (peek(j) != '"') return jfail(j, "input datatype must be a string");
        return parse_string(j, &d->dtype);
    }
    if (key_is(key, "shape")) {
        if (d->has_shape) return jfail(j, "input has two shapes");
        d->has_shape = 1;
        d->rank = 0;
        if (peek(j) != '[') return jfail(j, "input shape must be a list of integers");
        return parse_array(j, shape_element, d);
    }
    if (key_is(key, "parameters")) {
        if (peek(j) != '{') return jfail(j, "input parameters must be an object");
        return parse_object(j, input_params_member, d);
    }
    if (key_is(key, "data")) {
        if (d->data) return jfail(j, "input has two data fields");
        ws(j);
        d->data = j->p;
        return skip_data(j);
    }
    return skip_value(j);
}

static int input_element(jp *j, size_t i, void *ctx)
{
    draft *d = ctx;
    if (i > 0)
        return jfail(j, "inputs has more than one tensor: this model takes "
                        "one input named '" SRV_OIP_INPUT_NAME "'");
    if (peek(j) != '{') return jfail(j, "inputs[0] must be an object");
    d->ninputs = 1;
    return parse_object(j, input_member, d);
}

static const struct {
    const char *name;
    unsigned bit;
} out_names[] = {{"probabilities", SRV_OIP_OUT_PROBS},
                 {"prediction", SRV_OIP_OUT_PRED},
                 {"label", SRV_OIP_OUT_LABEL},
                 {"ood_score", SRV_OIP_OUT_OOD}};

static int output_params_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "binary_data")) {
        d->cur_bin_set = 1;
        return parse_bool(j, &d->cur_bin, "binary_data");
    }
    return skip_value(j);
}

static int output_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "name")) {
        slice name;
        if (peek(j) != '"') return jfail(j, "output name must be a string");
        if (parse_string(j, &name) < 0) return -1;
        for (size_t k = 0; k < sizeof out_names / sizeof out_names[0]; k++)
            if (key_is(name, out_names[k].name)) {
                d->cur_out = out_names[k].bit;
                return 0;
            }
        return jfail(j,
                     "unknown output '%.*s': the outputs are "
                     "'probabilities', 'prediction', 'label' and 'ood_score'",
                     (int)(name.n > 64 ? 64 : name.n), name.s);
    }
    if (key_is(key, "parameters")) {
        if (peek(j) != '{') return jfail(j, "output parameters must be an object");
        return parse_object(j, output_params_member, d);
    }
    return skip_value(j);
}

static int output_element(jp *j, size_t i, void *ctx)
{
    (void)i;
    draft *d = ctx;
    if (peek(j) != '{') return jfail(j, "each requested output must be an object with a name");
    d->cur_out = 0;
    d->cur_bin = 0;
    d->cur_bin_set = 0;
    if (parse_object(j, output_member, d) < 0) return -1;
    if (!d->cur_out) return jfail(j, "a requested output has no name");
    if (d->outputs & d->cur_out) return jfail(j, "an output is requested twice");
    d->outputs |= d->cur_out;
    d->order[d->norder++] = d->cur_out;
    if (d->cur_bin_set) {
        d->binary_set |= d->cur_out;
        if (d->cur_bin) d->binary |= d->cur_out;
    }
    return 0;
}

static int request_params_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "binary_data_output")) {
        d->bin_out_all_set = 1;
        return parse_bool(j, &d->bin_out_all, "binary_data_output");
    }
    return skip_value(j);
}

static int request_member(jp *j, slice key, void *ctx)
{
    draft *d = ctx;
    if (key_is(key, "id")) {
        if (d->seen_id++) return jfail(j, "the request has two ids");
        if (peek(j) != '"') return jfail(j, "id must be a string");
        const char *s = j->p;
        slice v;
        if (parse_string(j, &v) < 0) return -1;
        d->id_s = s;
        d->id_n = (size_t)(j->p - s);
        return 0;
    }
    if (key_is(key, "parameters")) {
        if (d->seen_params++) return jfail(j, "the request has two parameters objects");
        if (peek(j) != '{') return jfail(j, "parameters must be an object");
        return parse_object(j, request_params_member, d);
    }
    if (key_is(key, "inputs")) {
        if (d->seen_inputs++) return jfail(j, "the request has two inputs lists");
        if (peek(j) != '[') return jfail(j, "inputs must be a list with one tensor");
        return parse_array(j, input_element, d);
    }
    if (key_is(key, "outputs")) {
        if (d->seen_outputs++) return jfail(j, "the request has two outputs lists");
        if (peek(j) != '[') return jfail(j, "outputs must be a list of {\"name\": ...} objects");
        return parse_array(j, output_element, d);
    }
    return skip_value(j);
}

/* Every byte of the id is valid UTF-8 (it is sent back inside JSON). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k) return 0;
        for (size_t t = 1; t <= k; t++) {
            if ((s[i + t] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + t] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* ---- the second pass: data ------------------------------------------------------ */

typedef struct {
    srv_oip_dtype dtype;
    uint64_t want, count;
    uint8_t *u8; /* UINT8 */
    float *f32;  /* FP32 */
    slice *strs; /* BYTES: the strings, want of them */
} walk;

static int data_value(jp *j, walk *w, int level);

typedef struct {
    walk *w;
    int level;
} data_level;

static int data_element(jp *j, size_t i, void *ctx)
{
    (void)i;
    data_level *dl = ctx;
    return data_value(j, dl->w, dl->level + 1);
}

static int data_value(jp *j, walk *w, int level)
{
    char c = peek(j);
    if (c == '[') {
        if (level >= SRV_OIP_MAX_RANK)
            return jfail(j, "data nested deeper than %d levels", SRV_OIP_MAX_RANK);
        data_level dl = {w, level};
        return parse_array(j, data_element, &dl);
    }
    if (level == 0) return jfail(j, "data must be a list");
    if (w->count >= w->want)
        return jfail(j, "data has more elements than the shape's %llu",
                     (unsigned long long)w->want);
    uint64_t k = w->count++;
    if (w->dtype == SRV_OIP_BYTES) {
        if (c != '"')
            return jfail(j,
                         "BYTES data element %llu must be a string "
                         "(a base64 PNG)",
                         (unsigned long long)k);
        return parse_string(j, &w->strs[k]);
    }
    if (c != '-' && (c < '0' || c > '9'))
        return jfail(j, "%s data element %llu is not a number",
                     w->dtype == SRV_OIP_UINT8 ? "UINT8" : "FP32", (unsigned long long)k);
    number num;
    if (parse_number(j, &num) < 0) return -1;
    int shown = (int)(num.n > 32 ? 32 : num.n);
    if (w->dtype == SRV_OIP_UINT8) {
        /* Integers 0..255: at most three digits, no sign but "-0". */
        unsigned v = 0;
        int ok = num.integral && num.n <= 3 + (size_t)num.neg;
        for (size_t i = (size_t)num.neg; ok && i < num.n; i++)
            v = v * 10 + (unsigned)(num.s[i] - '0');
        if (!ok || v > 255 || (num.neg && v != 0))
            return jfail(j,
                         "UINT8 data element %llu is %.*s: values are "
                         "integers 0..255",
                         (unsigned long long)k, shown, num.s);
        w->u8[k] = (uint8_t)v;
        return 0;
    }
    char tmp[64];
    if (num.n >= sizeof tmp)
        return jfail(j,
                     "FP32 data element %llu is a number of %zu "
                     "characters",
                     (unsigned long long)k, num.n);
    memcpy(tmp, num.s, num.n);
    tmp[num.n] = '\0';
    float v = strtof(tmp, NULL);
    if (!(v >= 0.0f && v <= 1.0f))
        return jfail(j,
                     "FP32 data element %llu is %.*s: values are in "
                     "[0,1] (pixel/255)",
                     (unsigned long long)k, shown, num.s);
    w->f32[k] = v;
    return 0;
}

/* Base64 from a JSON string as written: the only escape base64 text can
 * hold is "\/" (some encoders write '/' so); anything else is not base64.
 * tmp has room for s.n characters. Returns 0, or -1. */
static int b64_from_json(slice s, char *tmp, uint8_t *out, size_t *outlen)
{
    const char *src = s.s;
    size_t n = s.n;
    if (memchr(s.s, '\\', s.n)) {
        size_t o = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.s[i] == '\\') {
                if (i + 1 >= s.n || s.s[i + 1] != '/') return -1;
                i++;
            }
            tmp[o++] = s.s[i];
        }
        src = tmp;
        n = o;
    }
    return srv_b64_decode(src, n, out, outlen);
}

/* Decodes want base64 strings into one store; items[i].data = NULL (len
 * 0) for a string that is not base64 when lenient, else fails. */
static srv_oip_status decode_strings(const slice *strs, uint32_t n, int lenient,
                                     srv_oip_item *items, uint8_t **store_out, char *err,
                                     size_t errlen)
{
    size_t total = 0, longest = 0;
    for (uint32_t i = 0; i < n; i++) {
        total += srv_b64_decoded_max(strs[i].n); /* <= 3n/4 + 3 each */
        if (strs[i].n > longest) longest = strs[i].n;
    }
    uint8_t *store = malloc(total ? total : 1);
    char *tmp = malloc(longest ? longest : 1);
    if (!store || !tmp) {
        free(store);
        free(tmp);
        snprintf(err, errlen, "out of memory decoding %u images", n);
        return SRV_OIP_ERR_NOMEM;
    }
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t got = 0;
        if (b64_from_json(strs[i], tmp, store + off, &got) < 0) {
            if (lenient) {
                items[i].data = NULL;
                items[i].len = 0;
                continue;
            }
            free(store);
            free(tmp);
            snprintf(err, errlen, "BYTES element %u is not valid base64", i);
            return SRV_OIP_ERR_BAD;
        }
        items[i].data = store + off;
        items[i].len = got;
        off += got;
    }
    free(tmp);
    *store_out = store;
    return SRV_OIP_OK;
}

static uint32_t rd_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- putting it together ------------------------------------------------------- */

int srv_oip_http_status(srv_oip_status st)
{
    switch (st) {
    case SRV_OIP_OK: return 200;
    case SRV_OIP_ERR_BAD: return 400;
    case SRV_OIP_ERR_TOO_LARGE: return 413;
    default: return 500;
    }
}

void srv_oip_request_free(srv_oip_request *q)
{
    if (!q) return;
    free(q->id);
    free(q->u8);
    free(q->f32);
    free(q->items);
    free(q->store);
    free(q);
}

static void shape_text(const draft *d, char *out, size_t outlen)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, outlen - o, "[");
    for (int i = 0; i < d->rank && o < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s%llu", i ? "," : "",
                              (unsigned long long)d->shape[i]);
    if (o < outlen) snprintf(out + o, outlen - o, "]");
}

static const char *const known_dtypes[] = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
                                           "INT8", "INT16", "INT32",  "INT64",  "FP16",
                                           "FP32", "FP64",  "BYTES",  "BF16"};

static srv_oip_status bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static srv_oip_status bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return SRV_OIP_ERR_BAD;
}

/* Checks the draft's input against this server's conventions and fills
 * q's dtype, shape and n. */
static srv_oip_status check_input(const draft *d, const srv_oip_limits *lim, srv_oip_request *q,
                                  uint64_t *count, char *err, size_t errlen)
{
    if (!d->has_name)
        return bad(err, errlen, "the input has no name (it is '" SRV_OIP_INPUT_NAME "')");
    if (!key_is(d->name, SRV_OIP_INPUT_NAME))
        return bad(err, errlen,
                   "unknown input '%.*s': this model takes one "
                   "input named '" SRV_OIP_INPUT_NAME "'",
                   (int)(d->name.n > 64 ? 64 : d->name.n), d->name.s);
    if (!d->has_dtype)
        return bad(err, errlen,
                   "the input has no datatype (UINT8, FP32 or "
                   "BYTES)");
    if (key_is(d->dtype, "UINT8"))
        q->dtype = SRV_OIP_UINT8;
    else if (key_is(d->dtype, "FP32"))
        q->dtype = SRV_OIP_FP32;
    else if (key_is(d->dtype, "BYTES"))
        q->dtype = SRV_OIP_BYTES;
    else {
        int known = 0;
        for (size_t i = 0; i < sizeof known_dtypes / sizeof *known_dtypes; i++)
            known |= key_is(d->dtype, known_dtypes[i]);
        return bad(err, errlen,
                   "%s datatype '%.*s': this model takes UINT8, "
                   "FP32 or BYTES",
                   known ? "unsupported" : "unknown", (int)(d->dtype.n > 32 ? 32 : d->dtype.n),
                   d->dtype.s);
    }
    if (!d->has_shape) return bad(err, errlen, "the input has no shape");
    if (d->rank == 0)
        return bad(err, errlen,
                   "the input's shape is empty: a batch of "
                   "images has at least one dimension");
    char st[200];
    shape_text(d, st, sizeof st);
    uint64_t prod = 1;
    for (int i = 0; i < d->rank; i++)
        if (__builtin_mul_overflow(prod, d->shape[i], &prod))
            return bad(err, errlen,
                       "shape %s: its element count overflows "
                       "64 bits",
                       st);
    const uint64_t *s = d->shape;
    int ok;
    if (q->dtype == SRV_OIP_BYTES)
        ok = d->rank == 1;
    else
        ok = (d->rank == 2 && s[1] == SRV_OIP_PIXELS) ||
             (d->rank == 3 && s[1] == 28 && s[2] == 28) ||
             (d->rank == 4 && s[1] == 1 && s[2] == 28 && s[3] == 28);
    if (!ok)
        return bad(err, errlen, "shape %s is not an image batch: %s", st,
                   q->dtype == SRV_OIP_BYTES ? "BYTES takes [N], one PNG per element"
                                             : "use [N,1,28,28], [N,28,28] or [N,784]");
    if (s[0] == 0) return bad(err, errlen, "shape %s: the batch is empty", st);
    if (s[0] > lim->max_batch) {
        snprintf(err, errlen,
                 "batch of %llu images is over the limit of %u "
                 "per request",
                 (unsigned long long)s[0], lim->max_batch);
        return SRV_OIP_ERR_TOO_LARGE;
    }
    q->rank = d->rank;
    memcpy(q->shape, d->shape, sizeof q->shape);
    q->n = (uint32_t)s[0];
    *count = prod;
    return SRV_OIP_OK;
}

/* Binary tensor data (little-endian, row-major) into q. */
static srv_oip_status take_binary(const uint8_t *bin, size_t blen, uint64_t count,
                                  srv_oip_request *q, char *err, size_t errlen)
{
    if (q->dtype == SRV_OIP_UINT8 || q->dtype == SRV_OIP_FP32) {
        uint64_t need = count * (q->dtype == SRV_OIP_UINT8 ? 1 : 4);
        if (blen != need)
            return bad(err, errlen,
                       "binary_data_size is %zu bytes; the "
                       "shape needs %llu",
                       blen, (unsigned long long)need);
        if (q->dtype == SRV_OIP_UINT8) {
            q->u8 = malloc((size_t)count);
            if (!q->u8) goto nomem;
            memcpy(q->u8, bin, (size_t)count);
            return SRV_OIP_OK;
        }
        q->f32 = malloc((size_t)count * sizeof *q->f32);
        if (!q->f32) goto nomem;
        for (uint64_t i = 0; i < count; i++) {
            uint32_t u = rd_u32le(bin + 4 * i);
            float v;
            memcpy(&v, &u, sizeof v);
            if (!(v >= 0.0f && v <= 1.0f))
                return bad(err, errlen,
                           "FP32 element %llu is %g: values are "
                           "in [0,1] (pixel/255)",
                           (unsigned long long)i, (double)v);
            q->f32[i] = v;
        }
        return SRV_OIP_OK;
    }
    /* BYTES: n elements of a 4-byte length and that many bytes. */
    q->items = calloc(q->n, sizeof *q->items);
    q->store = malloc(blen ? blen : 1);
    if (!q->items || !q->store) goto nomem;
    memcpy(q->store, bin, blen);
    size_t off = 0;
    for (uint32_t i = 0; i < q->n; i++) {
        if (blen - off < 4)
            return bad(err, errlen,
                       "binary BYTES data ends before element "
                       "%u's length",
                       i);
        uint32_t n = rd_u32le(q->store + off);
        off += 4;
        if (n > blen - off)
            return bad(err, errlen,
                       "binary BYTES element %u says %u bytes; "
                       "only %zu remain",
                       i, n, blen - off);
        q->items[i].data = q->store + off;
        q->items[i].len = n;
        off += n;
    }
    if (off != blen)
        return bad(err, errlen,
                   "binary BYTES data has %zu bytes after its "
                   "%u elements",
                   blen - off, q->n);
    return SRV_OIP_OK;
nomem:
    snprintf(err, errlen, "out of memory for a batch of %u images", q->n);
    return SRV_OIP_ERR_NOMEM;
}

static srv_oip_status take_json_data(const draft *d, const char *jend, uint64_t count,
                                     srv_oip_request *q, char *err, size_t errlen)
{
    walk w = {.dtype = q->dtype, .want = count};
    slice *strs = NULL;
    if (q->dtype == SRV_OIP_BYTES) {
        strs = calloc(q->n, sizeof *strs);
        q->items = calloc(q->n, sizeof *q->items);
        if (!strs || !q->items) {
            free(strs);
            snprintf(err, errlen, "out of memory for a batch of %u images", q->n);
            return SRV_OIP_ERR_NOMEM;
        }
        w.strs = strs;
    } else {
        if (q->dtype == SRV_OIP_UINT8)
            w.u8 = q->u8 = malloc((size_t)count);
        else
            w.f32 = q->f32 = malloc((size_t)count * sizeof *q->f32);
        if (!q->u8 && !q->f32) {
            snprintf(err, errlen, "out of memory for a batch of %u images", q->n);
            return SRV_OIP_ERR_NOMEM;
        }
    }
    jp j = {.p = d->data, .end = jend, .base = d->base, .err = err, .errlen = errlen};
    if (data_value(&j, &w, 0) < 0) {
        free(strs);
        return SRV_OIP_ERR_BAD;
    }
    if (w.count != count) {
        free(strs);
        return bad(err, errlen, "data has %llu elements; the shape needs %llu",
                   (unsigned long long)w.count, (unsigned long long)count);
    }
    srv_oip_status st = SRV_OIP_OK;
    if (q->dtype == SRV_OIP_BYTES)
        st = decode_strings(strs, q->n, 0, q->items, &q->store, err, errlen);
    free(strs);
    return st;
}

srv_oip_status srv_oip_request_parse(const uint8_t *body, size_t len, int64_t json_len,
                                     const srv_oip_limits *lim, srv_oip_request **out, char *err,
                                     size_t errlen)
{
    *out = NULL;
    if (errlen) err[0] = '\0';
    size_t jlen = len;
    if (json_len >= 0) {
        if ((uint64_t)json_len > len)
            return bad(err, errlen,
                       "Inference-Header-Content-Length %lld is "
                       "larger than the body (%zu bytes)",
                       (long long)json_len, len);
        jlen = (size_t)json_len;
    }
    if (jlen == 0) return bad(err, errlen, "empty body: send an inference request object");
    const char *base = (const char *)body;
    draft d;
    memset(&d, 0, sizeof d);
    d.base = base;
    jp j = {.p = base, .end = base + jlen, .base = base, .err = err, .errlen = errlen};
    if (peek(&j) != '{')
        return bad(err, errlen,
                   j.p >= j.end ? "empty body: send an inference "
                                  "request object"
                                : "the body is not a JSON object");
    if (parse_object(&j, request_member, &d) < 0) return SRV_OIP_ERR_BAD;
    if (peek(&j) != 0 || j.p < j.end)
        return bad(err, errlen,
                   "invalid JSON: characters after the request "
                   "object (at byte %zu)",
                   offset_of(&j));
    if (!d.seen_inputs) return bad(err, errlen, "the request has no inputs");
    if (d.ninputs == 0)
        return bad(err, errlen, "inputs is empty: send one tensor named '" SRV_OIP_INPUT_NAME "'");
    if (d.id_s && !utf8_valid((const unsigned char *)d.id_s, d.id_n))
        return bad(err, errlen, "id is not valid UTF-8");

    size_t blen = len - jlen;
    if (d.data && d.has_bin_size)
        return bad(err, errlen,
                   "the input has both data and "
                   "binary_data_size");
    if (!d.data && !d.has_bin_size) return bad(err, errlen, "the input has no data");
    if (d.has_bin_size) {
        if (json_len < 0)
            return bad(err, errlen,
                       "binary_data_size without an "
                       "Inference-Header-Content-Length header");
        if (d.bin_size != blen)
            return bad(err, errlen,
                       "binary_data_size is %llu but %zu bytes "
                       "follow the JSON",
                       (unsigned long long)d.bin_size, blen);
    } else if (blen) {
        return bad(err, errlen,
                   "%zu bytes follow the JSON but no input has "
                   "binary_data_size",
                   blen);
    }

    srv_oip_request *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return SRV_OIP_ERR_NOMEM;
    }
    uint64_t count = 0;
    srv_oip_status st = check_input(&d, lim, q, &count, err, errlen);
    if (st == SRV_OIP_OK)
        st = d.has_bin_size ? take_binary(body + jlen, blen, count, q, err, errlen)
                            : take_json_data(&d, base + jlen, count, q, err, errlen);
    if (st == SRV_OIP_OK && d.id_s) {
        q->id = malloc(d.id_n + 1);
        if (!q->id) {
            snprintf(err, errlen, "out of memory");
            st = SRV_OIP_ERR_NOMEM;
        } else {
            memcpy(q->id, d.id_s, d.id_n);
            q->id[d.id_n] = '\0';
            q->id_len = d.id_n;
        }
    }
    if (st != SRV_OIP_OK) {
        srv_oip_request_free(q);
        return st;
    }
    /* Outputs: as requested, else all three in the model's order; binary
     * per output, else the request-wide default. */
    q->bin_out_all = d.bin_out_all;
    if (d.outputs) {
        q->outputs = d.outputs;
        memcpy(q->order, d.order, sizeof q->order);
        q->norder = d.norder;
        q->outputs_named = 1;
    } else {
        q->outputs = SRV_OIP_OUT_ALL;
        for (int k = 0; k < 3; k++) q->order[k] = out_names[k].bit;
        q->norder = 3;
    }
    unsigned dflt = d.bin_out_all ? q->outputs : 0;
    q->binary = (d.binary | (dflt & ~d.binary_set)) & q->outputs;
    *out = q;
    return SRV_OIP_OK;
}

void srv_oip_request_add_ood(srv_oip_request *q)
{
    if (q->outputs_named || (q->outputs & SRV_OIP_OUT_OOD) || q->norder >= SRV_OIP_MAX_OUTPUTS)
        return;
    q->outputs |= SRV_OIP_OUT_OOD;
    q->order[q->norder++] = SRV_OIP_OUT_OOD;
    if (q->bin_out_all) q->binary |= SRV_OIP_OUT_OOD;
}

/* ---- the response ------------------------------------------------------------- */

static void put_u32le(srv_buf *b, uint32_t v)
{
    char p[4] = {(char)(v & 0xff), (char)(v >> 8 & 0xff), (char)(v >> 16 & 0xff),
                 (char)(v >> 24 & 0xff)};
    srv_buf_append(b, p, 4);
}

static size_t out_binary_size(const srv_oip_result *r, unsigned bit)
{
    if (bit == SRV_OIP_OUT_PROBS) return (size_t)r->n * (size_t)r->nclasses * 4;
    if (bit == SRV_OIP_OUT_PRED) return (size_t)r->n * 8;
    if (bit == SRV_OIP_OUT_OOD) return (size_t)r->n * 4;
    size_t s = 0;
    for (uint32_t i = 0; i < r->n; i++) s += 4 + strlen(r->labels[r->pred[i]]);
    return s;
}

static void out_binary(srv_buf *b, const srv_oip_result *r, unsigned bit)
{
    for (uint32_t i = 0; i < r->n; i++) {
        if (bit == SRV_OIP_OUT_PROBS) {
            for (int c = 0; c < r->nclasses; c++) {
                uint32_t u;
                memcpy(&u, &r->probs[(size_t)i * (size_t)r->nclasses + (size_t)c], sizeof u);
                put_u32le(b, u);
            }
        } else if (bit == SRV_OIP_OUT_OOD) {
            uint32_t u;
            memcpy(&u, &r->ood[i], sizeof u);
            put_u32le(b, u);
        } else if (bit == SRV_OIP_OUT_PRED) {
            uint64_t v = (uint64_t)(int64_t)r->pred[i];
            put_u32le(b, (uint32_t)v);
            put_u32le(b, (uint32_t)(v >> 32));
        } else {
            const char *l = r->labels[r->pred[i]];
            put_u32le(b, (uint32_t)strlen(l));
            srv_buf_puts(b, l);
        }
    }
}

void srv_oip_response_write(srv_buf *out, const srv_oip_result *r, size_t *json_len)
{
    const srv_oip_request *q = r->req;
    size_t start = out->len;
    srv_buf_puts(out, "{\"model_name\":");
    srv_buf_json_str(out, r->model_name);
    if (r->model_version) {
        srv_buf_puts(out, ",\"model_version\":");
        srv_buf_json_str(out, r->model_version);
    }
    if (q->id) {
        srv_buf_puts(out, ",\"id\":");
        srv_buf_append(out, q->id, q->id_len);
    }
    srv_buf_puts(out, ",\"outputs\":[");
    for (int k = 0; k < q->norder; k++) {
        unsigned bit = q->order[k];
        if (k) srv_buf_puts(out, ",");
        if (bit == SRV_OIP_OUT_PROBS)
            srv_buf_printf(out,
                           "{\"name\":\"probabilities\",\"datatype\":"
                           "\"FP32\",\"shape\":[%u,%d]",
                           r->n, r->nclasses);
        else if (bit == SRV_OIP_OUT_PRED)
            srv_buf_printf(out,
                           "{\"name\":\"prediction\",\"datatype\":"
                           "\"INT64\",\"shape\":[%u]",
                           r->n);
        else if (bit == SRV_OIP_OUT_OOD)
            srv_buf_printf(out,
                           "{\"name\":\"ood_score\",\"datatype\":"
                           "\"FP32\",\"shape\":[%u]",
                           r->n);
        else
            srv_buf_printf(out,
                           "{\"name\":\"label\",\"datatype\":"
                           "\"BYTES\",\"shape\":[%u]",
                           r->n);
        if (q->binary & bit) {
            srv_buf_printf(out, ",\"parameters\":{\"binary_data_size\":%zu}}",
                           out_binary_size(r, bit));
            continue;
        }
        srv_buf_puts(out, ",\"data\":[");
        for (uint32_t i = 0; i < r->n; i++) {
            if (bit == SRV_OIP_OUT_PROBS) {
                for (int c = 0; c < r->nclasses; c++) {
                    if (i || c) srv_buf_append(out, ",", 1);
                    srv_buf_json_float(out, r->probs[(size_t)i * (size_t)r->nclasses + (size_t)c]);
                }
                continue;
            }
            if (i) srv_buf_append(out, ",", 1);
            if (bit == SRV_OIP_OUT_PRED)
                srv_buf_printf(out, "%d", r->pred[i]);
            else if (bit == SRV_OIP_OUT_OOD)
                srv_buf_json_float(out, r->ood[i]);
            else
                srv_buf_json_str(out, r->labels[r->pred[i]]);
        }
        srv_buf_puts(out, "]}");
    }
    srv_buf_puts(out, "]}");
    *json_len = out->len - start;
    for (int k = 0; k < q->norder; k++)
        if (q->binary & q->order[k]) out_binary(out, r, q->order[k]);
}

void srv_oip_error_write(srv_buf *out, const char *msg)
{
    srv_buf_puts(out, "{\"error\":");
    srv_buf_json_str(out, msg);
    srv_buf_puts(out, "}");
}

/* ---- paths --------------------------------------------------------------------- */

/* Copies the segment at *s (up to '/' or the end) into out, or "" when it
 * does not fit; advances *s past it. */
static void take_segment(const char **s, char *out)
{
    size_t n = strcspn(*s, "/");
    if (n < SRV_OIP_SEGMENT_MAX) {
        memcpy(out, *s, n);
        out[n] = '\0';
    } else {
        out[0] = '\0';
    }
    *s += n;
}

srv_oip_path_kind srv_oip_path_parse(const char *path, srv_oip_path *p)
{
    memset(p, 0, sizeof *p);
    if (strncmp(path, "/v2", 3) != 0 || (path[3] != '\0' && path[3] != '/'))
        return p->kind = SRV_OIP_PATH_NONE;
    const char *s = path + 3;
    p->kind = SRV_OIP_PATH_UNKNOWN;
    if (*s == '\0') return p->kind = SRV_OIP_PATH_SERVER;
    if (strcmp(s, "/health/live") == 0) return p->kind = SRV_OIP_PATH_LIVE;
    if (strcmp(s, "/health/ready") == 0) return p->kind = SRV_OIP_PATH_READY;
    if (strncmp(s, "/models/", 8) != 0) return p->kind;
    s += 8;
    if (*s == '/' || *s == '\0') return p->kind;
    take_segment(&s, p->name);
    if (strncmp(s, "/versions/", 10) == 0) {
        s += 10;
        if (*s == '/' || *s == '\0') return p->kind;
        take_segment(&s, p->version);
        p->has_version = 1;
    }
    if (*s == '\0')
        p->kind = SRV_OIP_PATH_MODEL;
    else if (strcmp(s, "/ready") == 0)
        p->kind = SRV_OIP_PATH_MODEL_READY;
    else if (strcmp(s, "/infer") == 0)
        p->kind = SRV_OIP_PATH_INFER;
    return p->kind;
}

/* ---- {"image": ...} and {"images": [...]} ---------------------------------------- */

typedef struct {
    const char *key;
    int many;
    uint32_t max, n;
    slice *strs;
    int found, too_many;
} images_ctx;

static int image_string(jp *j, size_t i, void *vctx)
{
    images_ctx *c = vctx;
    if (i >= c->max) {
        c->too_many = 1;
        return jfail(j, "more than %u images in one request", c->max);
    }
    if (peek(j) != '"')
        return jfail(j, "'%s' element %zu must be a string (a base64 PNG)", c->key, i);
    c->n = (uint32_t)i + 1;
    return parse_string(j, &c->strs[i]);
}

static int images_member(jp *j, slice key, void *vctx)
{
    images_ctx *c = vctx;
    if (!key_is(key, c->key)) return skip_value(j);
    if (c->found++) return jfail(j, "the body has two '%s' fields", c->key);
    if (!c->many) {
        if (peek(j) != '"') return jfail(j, "'image' must be a string (a base64 PNG)");
        c->n = 1;
        return parse_string(j, &c->strs[0]);
    }
    if (peek(j) != '[') return jfail(j, "'images' must be a list of base64 PNG strings");
    return parse_array(j, image_string, c);
}

srv_oip_status srv_oip_images_parse(const uint8_t *body, size_t len, const char *key,
                                    uint32_t max_items, srv_oip_item **items, uint8_t **store,
                                    uint32_t *n, char *err, size_t errlen)
{
    *items = NULL;
    *store = NULL;
    *n = 0;
    images_ctx c = {.key = key, .many = strcmp(key, "images") == 0, .max = max_items};
    if (!c.many) c.max = 1;
    if (c.max == 0) return bad(err, errlen, "no images are accepted");
    c.strs = calloc(c.max, sizeof *c.strs);
    if (!c.strs) {
        snprintf(err, errlen, "out of memory");
        return SRV_OIP_ERR_NOMEM;
    }
    const char *base = (const char *)body;
    jp j = {.p = base, .end = base + len, .base = base, .err = err, .errlen = errlen};
    srv_oip_status st = SRV_OIP_OK;
    if (peek(&j) != '{') {
        st = bad(err, errlen, "the body is not a JSON object");
    } else if (parse_object(&j, images_member, &c) < 0) {
        st = c.too_many ? SRV_OIP_ERR_TOO_LARGE : SRV_OIP_ERR_BAD;
    } else if (peek(&j) != 0 || j.p < j.end) {
        st = bad(err, errlen, "invalid JSON: characters after the object");
    } else if (!c.found) {
        st = bad(err, errlen,
                 c.many ? "the body has no 'images' list of "
                          "base64 PNGs"
                        : "the body has no 'image' field with a "
                          "base64 PNG");
    } else if (c.n == 0) {
        st = bad(err, errlen, "'images' is empty");
    }
    if (st == SRV_OIP_OK) {
        *items = calloc(c.n, sizeof **items);
        if (!*items) {
            snprintf(err, errlen, "out of memory");
            st = SRV_OIP_ERR_NOMEM;
        } else {
            st = decode_strings(c.strs, c.n, 1, *items, store, err, errlen);
        }
        if (st != SRV_OIP_OK) {
            free(*items);
            *items = NULL;
        } else {
            *n = c.n;
        }
    }
    free(c.strs);
    return st;
}
