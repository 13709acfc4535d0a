/* fuzz_oip_images.c - srv_oip_images_parse, the JSON bodies of POST
 * /predict {"image": "<base64>"} and /predict/batch {"images": [...]}.
 *
 * Input: byte 0 picks the key (bit 0: "images", else "image"); the body
 * follows. Invariants: on success 1 <= n <= the limit (1 for "image"),
 * every item readable to its end inside the store; on failure nothing is
 * returned and err holds a message. */
#include "fuzz.h"
#include "server/oip.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *key = (data[0] & 1) ? "images" : "image";
    uint32_t max = (data[0] & 1) ? 8 : 1;
    size_t len = size - 1;
    uint8_t *body = malloc(len ? len : 1);
    if (!body) abort();
    memcpy(body, data + 1, len);
    srv_oip_item *items = (srv_oip_item *)1;
    uint8_t *store = (uint8_t *)1;
    uint32_t n = 99;
    char err[256] = "";
    srv_oip_status st =
        srv_oip_images_parse(body, len, key, max, &items, &store, &n, err, sizeof err);
    free(body);
    if (st != SRV_OIP_OK) {
        FUZZ_CHECK(items == NULL && store == NULL && n == 0);
        FUZZ_CHECK(fuzz_msg_ok(err, sizeof err));
        return 0;
    }
    FUZZ_CHECK(n >= 1 && n <= max);
    FUZZ_CHECK(items != NULL);
    unsigned sum = 0;
    for (uint32_t i = 0; i < n; i++)
        for (size_t k = 0; k < items[i].len; k++) sum += items[i].data[k];
    (void)sum;
    free(items);
    free(store);
    return 0;
}
