/* fuzz_route.c - what the server does with a request's path and id before
 * any handler: srv_route_of, the v2 path parser srv_oip_path_parse,
 * srv_log_sanitize (paths and names in log lines and messages) and
 * srv_reqid_valid (X-Request-Id echoed back).
 *
 * Invariants: every route has a name and an Allow value; the two path
 * parsers agree on which v2 endpoint a path is; model name and version
 * are terminated, at most 63 bytes and hold no '/'; a sanitised string is
 * terminated, fits its buffer and holds only 0x21..0x7e minus '"' and
 * '\' (so it cannot forge a log line); an id is echoed only when it is
 * 1..128 such characters. */
#include "fuzz.h"
#include "server/log.h"
#include "server/oip.h"
#include "server/route.h"

#include <string.h>

static void check_sanitized(const char *s, size_t cap)
{
    size_t n = strlen(s);
    FUZZ_CHECK(n < cap);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        FUZZ_CHECK(c >= 0x21 && c <= 0x7e && c != '"' && c != '\\');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 14) return 0;
    char *path = fuzz_cstr(data, size);
    srv_route r = srv_route_of(path);
    FUZZ_CHECK(r >= 0 && r < SRV_NROUTES);
    FUZZ_CHECK(srv_route_name(r) != NULL && srv_route_allow(r) != NULL);
    srv_oip_path p;
    memset(&p, 0x55, sizeof p);
    srv_oip_path_kind k = srv_oip_path_parse(path, &p);
    FUZZ_CHECK(k == p.kind);
    FUZZ_CHECK((r == SRV_ROUTE_V2_INFER) == (k == SRV_OIP_PATH_INFER));
    FUZZ_CHECK((r == SRV_ROUTE_V2_MODEL_READY) == (k == SRV_OIP_PATH_MODEL_READY));
    FUZZ_CHECK((r == SRV_ROUTE_V2_MODEL) == (k == SRV_OIP_PATH_MODEL));
    if (k == SRV_OIP_PATH_MODEL || k == SRV_OIP_PATH_MODEL_READY || k == SRV_OIP_PATH_INFER) {
        FUZZ_CHECK(memchr(p.name, '\0', sizeof p.name));
        FUZZ_CHECK(memchr(p.version, '\0', sizeof p.version));
        FUZZ_CHECK(!strchr(p.name, '/') && !strchr(p.version, '/'));
        if (!p.has_version) FUZZ_CHECK(p.version[0] == '\0');
        if (p.name[0]) FUZZ_CHECK(strstr(path, p.name) != NULL);
    }
    char small[16], big[300];
    srv_log_sanitize(path, small, sizeof small);
    check_sanitized(small, sizeof small);
    srv_log_sanitize(path, big, sizeof big);
    check_sanitized(big, sizeof big);
    /* A longer buffer never holds a different beginning. */
    FUZZ_CHECK(strncmp(small, big, strlen(small)) == 0);
    if (srv_reqid_valid(path)) {
        /* The C string ends at the first NUL of the input. */
        size_t n = strlen(path);
        FUZZ_CHECK(n >= 1 && n <= SRV_REQID_MAX);
        check_sanitized(path, SRV_REQID_MAX + 1);
    }
    free(path);
    return 0;
}
