/* fuzz_ensemble_list.c - nn_ensemble_list_parse, a NAME.ensemble list.
 *
 * Invariants: on success the member list is non-empty, fits the buffer,
 * has no empty entry, and every member is either absolute or under the
 * list's directory; test_accuracy is -1 or in [0, 1]. On failure, a
 * message. */
#include "fuzz.h"
#include "nn/ensemble.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Not NUL-terminated on purpose: the parser takes a length. */
    char *text = malloc(size ? size : 1);
    if (!text) abort();
    memcpy(text, data, size);
    char paths[1024];
    double acc = 42;
    char err[256] = "";
    int rc = nn_ensemble_list_parse(text, size, "models/x.ensemble", paths, sizeof paths, &acc, err,
                                    sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
    } else {
        size_t n = strlen(paths);
        FUZZ_CHECK(n > 0 && n < sizeof paths);
        FUZZ_CHECK(acc == -1 || (acc >= 0 && acc <= 1));
        const char *p = paths;
        for (;;) {
            size_t m = strcspn(p, ",");
            FUZZ_CHECK(m > 0);
            FUZZ_CHECK(p[0] == '/' || strncmp(p, "models/", 7) == 0);
            FUZZ_CHECK(memchr(p, '#', m) == NULL);
            FUZZ_CHECK(memchr(p, '\n', m) == NULL);
            if (!p[m]) break;
            p += m + 1;
        }
    }
    free(text);
    return 0;
}
