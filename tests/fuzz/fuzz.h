/* fuzz.h - what every libFuzzer harness in tests/fuzz/ shares.
 *
 * A harness is one file fuzz_NAME.c defining LLVMFuzzerTestOneInput over
 * one parser of untrusted bytes, reached through its public header as any
 * caller would. Besides "no crash, no sanitizer report, no leak", each
 * checks the parser's promises with FUZZ_CHECK: a broken invariant prints
 * the condition and aborts, so libFuzzer saves the input as a crash.
 * Build and run: make fuzz (see README.md, "Security").
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* A NUL-terminated copy of data (parsers of C strings get no terminator
 * from libFuzzer). Caller frees. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    for (size_t i = 0; i < size; i++) s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

/* True when err holds a non-empty, NUL-terminated one-line message: every
 * parser here promises one on failure. */
static inline int fuzz_msg_ok(const char *err, size_t errlen)
{
    size_t n = 0;
    while (n < errlen && err[n]) n++;
    if (n == 0 || n == errlen) return 0;
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\n') return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
