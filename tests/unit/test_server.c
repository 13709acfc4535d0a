/* test_server.c - the server's pure pieces: SHA-256 (against known vectors
 * and the system's sha256sum), configuration (defaults, env, flags win,
 * bad values), request ids, multipart parsing, JSON writing, metrics
 * rendering, and model loading from a directory with an .ensemble file
 * (reloads and versions: test_registry.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nn/amx.h"
#include "nn/gemm.h"
#include "nn/net.h"
#include "server/buf.h"
#include "server/config.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/multipart.h"
#include "server/sha256.h"
#include "server/web.h"

/* ---- sha256 ------------------------------------------------------------- */

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[65];
    srv_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    srv_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    srv_sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* A million 'a' fed in uneven pieces crosses every block boundary case. */
    srv_sha256_ctx c;
    uint8_t d[32], chunk[1024];
    memset(chunk, 'a', sizeof chunk);
    srv_sha256_init(&c);
    size_t left = 1000000;
    for (size_t piece = 1; left > 0; piece = piece % 1000 + 7) {
        size_t n = piece < left ? piece : left;
        srv_sha256_update(&c, chunk, n);
        left -= n;
    }
    srv_sha256_final(&c, d);
    static const uint8_t want[32] = {0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92,
                                     0x81, 0xa1, 0xc7, 0xe2, 0x84, 0xd7, 0x3e, 0x67,
                                     0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97, 0x20, 0x0e,
                                     0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    assert_memory_equal(d, want, 32);
}

static void test_sha256_file_matches_sha256sum(void **state)
{
    (void)state;
    char path[] = "/tmp/test_server_shaXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    assert_non_null(f);
    uint32_t x = 12345;
    for (int i = 0; i < 300001; i++) { /* not a multiple of 64 */
        x = x * 1103515245u + 12345u;
        fputc((int)(x >> 16) & 255, f);
    }
    fclose(f);

    char mine[65], err[256];
    assert_int_equal(srv_sha256_file(path, mine, err, sizeof err), 0);
    char cmd[128], theirs[128] = "";
    snprintf(cmd, sizeof cmd, "sha256sum %s", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(theirs, sizeof theirs, p));
    assert_int_equal(pclose(p), 0);
    theirs[64] = '\0';
    assert_string_equal(mine, theirs);
    unlink(path);

    assert_int_equal(srv_sha256_file("/nonexistent/x", mine, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x"));
}

/* ---- config ------------------------------------------------------------- */

static const char *const *fake_env;

static const char *env_fn(const char *name)
{
    for (const char *const *e = fake_env; e && *e; e += 2)
        if (strcmp(e[0], name) == 0) return e[1];
    return NULL;
}

static srv_config_action parse(srv_config *c, const char *const *env, char *err, size_t errlen, ...)
{
    char *argv[32] = {"mnist-server"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;) argv[argc++] = a;
    va_end(ap);
    fake_env = env;
    return srv_config_parse(c, argc, argv, env_fn, err, errlen);
}

static void test_config_defaults(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    assert_int_equal(parse(&c, NULL, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_string_equal(c.host, "0.0.0.0");
    assert_int_equal(c.port, 8080);
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.body_limit, 2u << 20);
    assert_int_equal(c.max_pixels, 16777216);
    assert_int_equal(c.timeout_s, 30);
    assert_int_equal(c.max_connections, 1024);
    assert_int_equal(c.max_batch, 64);
    assert_true(c.drain_delay_s == 5);
    assert_true(c.drain_timeout_s == 10);
    assert_int_equal(c.log_json, 0);
    assert_int_equal(c.access_log, 1);
    assert_int_equal(c.nmodels, 0);
    assert_string_equal(c.models_dir, "models");
}

static void test_config_env_and_flags(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    static const char *const env[] = {"MNIST_PORT",
                                      "9000",
                                      "MNIST_THREADS",
                                      "3",
                                      "MNIST_BODY_LIMIT",
                                      "512k",
                                      "MNIST_LOG_FORMAT",
                                      "json",
                                      "MNIST_MODELS",
                                      "a=x.safetensors; best=p.safetensors,q.safetensors",
                                      "MNIST_GRACE",
                                      "2.5",
                                      "MNIST_ACCESS_LOG",
                                      "off",
                                      "MNIST_DRAIN_DELAY",
                                      "0",
                                      NULL};
    assert_int_equal(parse(&c, env, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.port, 9000);
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.body_limit, 512 * 1024);
    assert_int_equal(c.log_json, 1);
    assert_int_equal(c.access_log, 0);
    assert_true(c.drain_timeout_s == 2.5);
    assert_true(c.drain_delay_s == 0);
    assert_int_equal(c.nmodels, 2);
    assert_string_equal(c.models[1].name, "best");
    assert_string_equal(c.models[1].paths, "p.safetensors,q.safetensors");
    /* Models were given, so no default directory is scanned. */
    assert_string_equal(c.models_dir, "");

    /* Flags win over env, both forms of flag work, --model replaces. */
    assert_int_equal(parse(&c, env, err, sizeof err, "--port=0", "--threads", "1", "--model",
                           "z=z.safetensors", "--body-limit", "2MiB", "--log-format", "text",
                           "--models-dir", "m2", "--drain-delay", "1.5", "--drain-timeout", "7",
                           NULL),
                     SRV_CONFIG_RUN);
    assert_true(c.drain_delay_s == 1.5);
    assert_true(c.drain_timeout_s == 7);
    assert_int_equal(c.port, 0);
    assert_int_equal(c.threads, 1);
    assert_int_equal(c.nmodels, 1);
    assert_string_equal(c.models[0].name, "z");
    assert_int_equal(c.body_limit, 2u << 20);
    assert_int_equal(c.log_json, 0);
    assert_string_equal(c.models_dir, "m2");

    assert_int_equal(parse(&c, NULL, err, sizeof err, "--help", NULL), SRV_CONFIG_HELP);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "-V", NULL), SRV_CONFIG_VERSION);
}

static void test_config_cors(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    assert_int_equal(parse(&c, NULL, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ncors, 0);
    assert_false(srv_config_cors_allows(&c, "https://a.example"));

    /* A comma list from env; the flags (repeatable) replace it. */
    static const char *const env[] = {"MNIST_CORS_ORIGIN",
                                      "https://a.example, http://b.example:8080", NULL};
    assert_int_equal(parse(&c, env, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ncors, 2);
    assert_true(srv_config_cors_allows(&c, "https://a.example"));
    assert_true(srv_config_cors_allows(&c, "http://b.example:8080"));
    assert_false(srv_config_cors_allows(&c, "http://b.example"));
    assert_false(srv_config_cors_allows(&c, "https://a.example.evil"));
    assert_false(srv_config_cors_allows(&c, NULL));
    assert_int_equal(parse(&c, env, err, sizeof err, "--cors-origin", "https://c.example",
                           "--cors-origin=http://[::1]:3000", NULL),
                     SRV_CONFIG_RUN);
    assert_int_equal(c.ncors, 2);
    assert_false(srv_config_cors_allows(&c, "https://a.example"));
    assert_true(srv_config_cors_allows(&c, "http://[::1]:3000"));
    assert_int_equal(parse(&c, env, err, sizeof err, "--cors-origin", "*", NULL), SRV_CONFIG_RUN);
    assert_true(srv_config_cors_allows(&c, "https://anything.example"));

    static const char *const bad[] = {"",
                                      "a.example",
                                      "https://",
                                      "https://a/b",
                                      "https://a b",
                                      "https://a,,https://b",
                                      "https://a:",
                                      "javascript:alert(1)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        srv_config_action act = parse(&c, NULL, err, sizeof err, "--cors-origin", bad[i], NULL);
        if (act != SRV_CONFIG_ERROR || !strstr(err, "--cors-origin"))
            fail_msg("--cors-origin '%s': action %d, message '%s'", bad[i], act, err);
    }
}

static void test_config_errors(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    struct {
        const char *a, *b, *needle;
    } bad[] = {
        {"--port", "70000", "--port"},
        {"--port", "80x", "--port"},
        {"--port", "-1", "--port"},
        {"--threads", "0", "--threads"},
        {"--body-limit", "2XB", "--body-limit"},
        {"--body-limit", "5GiB", "--body-limit"},
        {"--log-format", "xml", "--log-format"},
        {"--model", "noequals", "NAME=PATH"},
        {"--model", "bad/name=x", "bad/name"},
        {"--grace", "soon", "--grace"},
        {"--drain-delay", "-1", "--drain-delay"},
        {"--drain-delay", "3601", "--drain-delay"},
        {"--drain-timeout", "1s", "--drain-timeout"},
        {"--access-log", "maybe", "--access-log"},
        {"--frobnicate", "1", "unknown option '--frobnicate'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(parse(&c, NULL, err, sizeof err, bad[i].a, bad[i].b, NULL),
                         SRV_CONFIG_ERROR);
        if (!strstr(err, bad[i].needle))
            fail_msg("%s %s: message '%s' lacks '%s'", bad[i].a, bad[i].b, err, bad[i].needle);
    }
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--port", NULL), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--model", "a=x", "--model", "a=y", NULL),
                     SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "twice"));
    static const char *const env[] = {"MNIST_PORT", "http", NULL};
    assert_int_equal(parse(&c, env, err, sizeof err, NULL), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "MNIST_PORT"));

    uint64_t v;
    assert_int_equal(srv_config_parse_size("1", 10, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(srv_config_parse_size("3M", 1u << 30, &v), 0);
    assert_int_equal(v, 3u << 20);
    assert_int_equal(srv_config_parse_size("", 10, &v), -1);
    assert_int_equal(srv_config_parse_size("k", 10, &v), -1);
}

/* --ui on|off, MNIST_UI, and the --no-NAME form of every on|off option;
 * --balance-connections likewise. */
static void test_config_ui(void **state)
{
    (void)state;
    srv_config c;
    char err[256];
    assert_int_equal(parse(&c, NULL, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ui, 1);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--no-ui", NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ui, 0);
    assert_int_equal(c.access_log, 1);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--no-access-log", "--ui", "off", NULL),
                     SRV_CONFIG_RUN);
    assert_int_equal(c.ui, 0);
    assert_int_equal(c.access_log, 0);
    static const char *const off[] = {"MNIST_UI", "0", NULL};
    assert_int_equal(parse(&c, off, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ui, 0);
    /* The flag wins over the environment. */
    assert_int_equal(parse(&c, off, err, sizeof err, "--ui=on", NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.ui, 1);

    static const char *const bad_env[] = {"MNIST_UI", "sometimes", NULL};
    assert_int_equal(parse(&c, bad_env, err, sizeof err, NULL), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "MNIST_UI"));
    /* --no- only negates on|off options, and takes no value. */
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--no-port", NULL), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "unknown option '--no-port'"));
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--no-ui=1", NULL), SRV_CONFIG_ERROR);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--ui", "maybe", NULL), SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "--ui"));

    /* --balance-connections: off unless asked, by flag or variable. */
    assert_int_equal(parse(&c, NULL, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.balance, 0);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--balance-connections", "on", NULL),
                     SRV_CONFIG_RUN);
    assert_int_equal(c.balance, 1);
    static const char *const bal[] = {"MNIST_BALANCE_CONNECTIONS", "on", NULL};
    assert_int_equal(parse(&c, bal, err, sizeof err, NULL), SRV_CONFIG_RUN);
    assert_int_equal(c.balance, 1);
    assert_int_equal(parse(&c, bal, err, sizeof err, "--no-balance-connections", NULL),
                     SRV_CONFIG_RUN);
    assert_int_equal(c.balance, 0);
    assert_int_equal(parse(&c, NULL, err, sizeof err, "--balance-connections=even", NULL),
                     SRV_CONFIG_ERROR);
    assert_non_null(strstr(err, "--balance-connections"));
}

/* ---- the drawing page's files -------------------------------------------- */

static void test_web(void **state)
{
    (void)state;
    static const srv_web_file files[] = {{"app.js", "let x = 1;\n", 11},
                                         {"index.html", "<!doctype html>", 15},
                                         {"style.css", "", 0},
                                         {"logo.svg", "<svg/>", 6},
                                         {"notes.bin", "\x01", 1}};
    char err[256];
    srv_web *w = srv_web_create(files, 5, err, sizeof err);
    assert_non_null(w);

    const srv_web_asset *a = srv_web_find(w, "/");
    assert_non_null(a);
    assert_ptr_equal(a->data, files[1].data);
    assert_int_equal(a->len, 15);
    assert_string_equal(a->ctype, "text/html; charset=utf-8");
    /* The ETag is the quoted start of the content's SHA-256. */
    char hex[65], want[32];
    srv_sha256_hex("<!doctype html>", 15, hex);
    snprintf(want, sizeof want, "\"%.20s\"", hex);
    assert_string_equal(a->etag, want);

    assert_string_equal(srv_web_find(w, "/app.js")->ctype, "text/javascript; charset=utf-8");
    assert_string_equal(srv_web_find(w, "/style.css")->ctype, "text/css; charset=utf-8");
    assert_int_equal(srv_web_find(w, "/style.css")->len, 0);
    assert_string_equal(srv_web_find(w, "/logo.svg")->ctype, "image/svg+xml; charset=utf-8");
    assert_string_equal(srv_web_find(w, "/notes.bin")->ctype, "application/octet-stream");
    /* index.html is only "/"; nothing outside the table is found. */
    assert_null(srv_web_find(w, "/index.html"));
    assert_null(srv_web_find(w, "/app.js/"));
    assert_null(srv_web_find(w, "app.js"));
    assert_null(srv_web_find(w, "/../app.js"));
    assert_null(srv_web_find(w, ""));
    assert_null(srv_web_find(w, NULL));
    assert_null(srv_web_find(NULL, "/"));
    assert_string_not_equal(srv_web_find(w, "/app.js")->etag, a->etag);

    /* If-None-Match, weak comparison (RFC 9110 13.1.2). */
    const char *e = a->etag;
    char buf[128];
    assert_false(srv_web_etag_match(NULL, e));
    assert_false(srv_web_etag_match("", e));
    assert_true(srv_web_etag_match(e, e));
    assert_true(srv_web_etag_match("*", e));
    assert_true(srv_web_etag_match(" * ", e));
    snprintf(buf, sizeof buf, "W/%s", e);
    assert_true(srv_web_etag_match(buf, e));
    snprintf(buf, sizeof buf, "\"abc\", %s ,\"def\"", e);
    assert_true(srv_web_etag_match(buf, e));
    snprintf(buf, sizeof buf, "\"abc\",W/%s", e);
    assert_true(srv_web_etag_match(buf, e));
    assert_false(srv_web_etag_match("\"abc\", \"def\"", e));
    snprintf(buf, sizeof buf, "%.*s", (int)strlen(e) - 1, e); /* cut */
    assert_false(srv_web_etag_match(buf, e));
    snprintf(buf, sizeof buf, "%sx", e);
    assert_false(srv_web_etag_match(buf, e));
    assert_false(srv_web_etag_match("**", e));
    assert_false(srv_web_etag_match(",,,", e));
    srv_web_free(w);
    srv_web_free(NULL);

    /* No index.html, or a name a URL would need to escape: refused. */
    assert_null(srv_web_create(files, 1, err, sizeof err));
    assert_non_null(strstr(err, "index.html"));
    static const srv_web_file bad[] = {{"index.html", "", 0}, {"a b.js", "", 0}};
    assert_null(srv_web_create(bad, 2, err, sizeof err));
    assert_non_null(strstr(err, "'a b.js'"));
    static const srv_web_file hidden[] = {{"index.html", "", 0}, {".env", "", 0}};
    assert_null(srv_web_create(hidden, 2, err, sizeof err));
    assert_non_null(strstr(err, "'.env'"));
}

/* ---- request ids and log sanitising ------------------------------------- */

static void test_reqid(void **state)
{
    (void)state;
    assert_true(srv_reqid_valid("abc-123_X.y:z"));
    assert_false(srv_reqid_valid(""));
    assert_false(srv_reqid_valid("has space"));
    assert_false(srv_reqid_valid("quote\"d"));
    assert_false(srv_reqid_valid("back\\slash"));
    assert_false(srv_reqid_valid("new\nline"));
    assert_false(srv_reqid_valid("caf\xc3\xa9"));
    char id[200];
    memset(id, 'a', 128);
    id[128] = '\0';
    assert_true(srv_reqid_valid(id));
    id[128] = 'a';
    id[129] = '\0';
    assert_false(srv_reqid_valid(id));

    char a[17], b[17];
    srv_log_init(0);
    srv_reqid_generate(a);
    srv_reqid_generate(b);
    assert_int_equal(strlen(a), 16);
    assert_true(srv_reqid_valid(a));
    assert_string_not_equal(a, b);

    char out[64];
    srv_log_sanitize("/p a\nth\"%", out, sizeof out);
    assert_string_equal(out, "/p%20a%0Ath%22%25");
    srv_log_sanitize("abcdef", out, 4);
    assert_string_equal(out, "abc");
}

/* ---- JSON writing --------------------------------------------------------- */

static void test_buf_json(void **state)
{
    (void)state;

    char store[8];
    srv_buf b;
    srv_buf_init(&b, store, sizeof store); /* forces growth to the heap */
    srv_buf_json_str(&b, "a\"b\\c\n\x01");
    assert_false(b.oom);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    srv_buf_free(&b);

    /* Every float comes back exactly, and ten probabilities still sum to 1. */
    srand(7);
    for (int i = 0; i < 20000; i++) {
        float f = i % 2 ? (float)rand() / (float)RAND_MAX
                        : powf(10.f, -40.f * (float)rand() / (float)RAND_MAX);
        srv_buf_init(&b, store, sizeof store);
        srv_buf_json_float(&b, f);
        char *end;
        double back = strtod(b.data, &end);
        assert_int_equal(*end, '\0');
        if ((float)back != f) fail_msg("%.9g printed as %s", (double)f, b.data);
        srv_buf_free(&b);
    }
    float p[10] = {0.9f, 0.05f, 0.03f, 0.01f, 0.004f, 0.003f, 0.002f, 0.0009f, 0.00009f, 0.00001f};
    double sum_in = 0, sum_out = 0;
    srv_buf_init(&b, NULL, 0);
    for (int i = 0; i < 10; i++) {
        sum_in += p[i];
        if (i) srv_buf_puts(&b, ",");
        srv_buf_json_float(&b, p[i]);
    }
    for (char *s = b.data; *s;) {
        sum_out += strtod(s, &s);
        if (*s == ',') s++;
    }
    srv_buf_free(&b);
    assert_true(fabs(sum_in - sum_out) < 1e-7);
    srv_buf_init(&b, NULL, 0);
    srv_buf_json_float(&b, NAN);
    assert_string_equal(b.data, "0");
    srv_buf_free(&b);
}

/* ---- multipart ------------------------------------------------------------- */

static void test_multipart(void **state)
{
    (void)state;
    char bnd[SRV_BOUNDARY_MAX], err[256];
    assert_int_equal(
        srv_multipart_boundary("multipart/form-data; boundary=----X1", bnd, sizeof bnd), 0);
    assert_string_equal(bnd, "----X1");
    assert_int_equal(
        srv_multipart_boundary("multipart/form-data; charset=x; boundary=\"a b\"", bnd, sizeof bnd),
        0);
    assert_string_equal(bnd, "a b");
    assert_int_equal(srv_multipart_boundary("multipart/form-data", bnd, sizeof bnd), -1);
    assert_int_equal(srv_multipart_boundary("multipart/form-data; boundary=", bnd, sizeof bnd), -1);

    const char body[] =
        "preamble\r\n"
        "--XY\r\n"
        "Content-Disposition: form-data; name=\"other\"\r\n\r\n"
        "ignored\r\n"
        "--XY\r\n"
        "Content-Disposition: form-data; filename=\"name=image\"; name=\"image\"\r\n"
        "Content-Type: image/png\r\n\r\n"
        "\x89PNG\r\n--X\r\n"
        "--XY\r\n"
        "content-disposition: form-data; name=image\r\n\r\n"
        "\r\n"
        "--XY--\r\n";
    srv_part parts[4];
    int n = -1;
    assert_int_equal(srv_multipart_parse((const uint8_t *)body, sizeof body - 1, "XY", "image",
                                         parts, 4, &n, err, sizeof err),
                     SRV_MP_OK);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0].len, 9); /* binary data with CRLF and "--X" */
    assert_memory_equal(parts[0].data, "\x89PNG\r\n--X", 9);
    assert_int_equal(parts[1].len, 0);

    /* A field named "filename" or "xname" must not count as "image". */
    const char fname[] = "--B\r\nContent-Disposition: form-data; name=\"imagex\"; "
                         "filename=\"image\"\r\n\r\nzz\r\n--B--";
    assert_int_equal(srv_multipart_parse((const uint8_t *)fname, sizeof fname - 1, "B", "image",
                                         parts, 4, &n, err, sizeof err),
                     SRV_MP_OK);
    assert_int_equal(n, 0);

    assert_int_equal(srv_multipart_parse((const uint8_t *)body, sizeof body - 1, "XY", "image",
                                         parts, 1, &n, err, sizeof err),
                     SRV_MP_TOO_MANY);
    assert_int_equal(n, 1);

    /* Truncated: the closing boundary is missing. */
    assert_int_equal(srv_multipart_parse((const uint8_t *)body, 150, "XY", "image", parts, 4, &n,
                                         err, sizeof err),
                     SRV_MP_MALFORMED);
    assert_non_null(strstr(err, "part"));
    const char *junk[] = {"",
                          "no boundary at all",
                          "--XY",
                          "--XYjunk\r\n",
                          "--XY\r\nNo-Colon-Header\r\n\r\nx\r\n--XY--",
                          "--XY\r\nContent-Type: a/b\r\n\r\nx\r\n--XY--",
                          "--XY\r\nContent-Disposition: form-data; name=\"x\r\n\r\n"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        err[0] = '\0';
        if (srv_multipart_parse((const uint8_t *)junk[i], strlen(junk[i]), "XY", "image", parts, 4,
                                &n, err, sizeof err) != SRV_MP_MALFORMED)
            fail_msg("junk %zu accepted", i);
        assert_true(err[0] != '\0');
    }
}

/* ---- metrics ------------------------------------------------------------- */

static void test_metrics_render(void **state)
{
    (void)state;
    srv_metrics_model models[1] = {{.name = "m\"1",
                                    .architecture = "dense(10)",
                                    .sha256 = "ab",
                                    .is_default = 1,
                                    .params = 42,
                                    .test_accuracy = 0.5,
                                    .nclasses = 2,
                                    .labels = {"Shirt", "a\\b"}}};
    models[0].loaded = 1;
    models[0].load_failures = 3;
    srv_metrics *m = srv_metrics_create(1);
    assert_non_null(m);
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 80);       /* <= 100us */
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 200, 3000);     /* <= 5ms */
    srv_metrics_request(m, SRV_ROUTE_PREDICT, 413, 20000000); /* +Inf */
    srv_metrics_request(m, SRV_ROUTE_OTHER, 418, 1);          /* "other" */
    srv_metrics_request(m, SRV_ROUTE_PAGE, 304, 1);           /* a page still current */
    srv_metrics_request(m, SRV_ROUTE_OTHER, 414, 1);
    srv_metrics_request(m, SRV_ROUTE_MODELS, 431, 1);
    srv_metrics_inference(m, 0, 30, 1);
    srv_metrics_inference(m, 0, 30, 1);
    srv_metrics_inference(m, 0, 30, 7); /* class out of range: not counted */
    srv_metrics_inflight_add(m, 1);

    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_metrics_render(m, &b, models, 1, 1, 0);
    assert_false(b.oom);
    const char *want[] = {
        "mnist_http_requests_total{route=\"/predict\",status=\"200\"} 2\n",
        "mnist_http_requests_total{route=\"/predict\",status=\"413\"} 1\n",
        "mnist_http_requests_total{route=\"other\",status=\"other\"} 1\n",
        "mnist_http_requests_total{route=\"page\",status=\"304\"} 1\n",
        "mnist_http_requests_total{route=\"other\",status=\"414\"} 1\n",
        "mnist_http_requests_total{route=\"/v1/models\",status=\"431\"} 1\n",
        "mnist_http_request_duration_seconds_bucket{route=\"/predict\",le=\"5e-05\"} 0\n",
        "mnist_http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.0001\"} 1\n",
        "mnist_http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.005\"} 2\n",
        "mnist_http_request_duration_seconds_bucket{route=\"/predict\",le=\"10\"} 2\n",
        "mnist_http_request_duration_seconds_bucket{route=\"/predict\",le=\"+Inf\"} 3\n",
        "mnist_http_request_duration_seconds_count{route=\"/predict\"} 3\n",
        "mnist_http_request_duration_seconds_sum{route=\"/predict\"} 20.003080\n",
        "mnist_inference_duration_seconds_count{model=\"m\\\"1\"} 3\n",
        "mnist_predictions_total{model=\"m\\\"1\",class=\"a\\\\b\"} 2\n",
        "mnist_predictions_total{model=\"m\\\"1\",class=\"Shirt\"} 0\n",
        "mnist_http_requests_in_flight 1\n",
        "mnist_model_info{model=\"m\\\"1\",architecture=\"dense(10)\",sha256=\"ab\",default="
        "\"true\"} 1\n",
        "mnist_model_parameters{model=\"m\\\"1\"} 42\n",
        "mnist_model_load_failures_total{model=\"m\\\"1\"} 3\n",
        "mnist_ready 1\n",
        "mnist_draining 0\n",
        "# TYPE mnist_http_request_duration_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(b.data, want[i])) fail_msg("metrics lack: %s--- got:\n%s", want[i], b.data);
    /* Routes with no traffic are not listed. */
    assert_null(strstr(b.data, "route=\"/healthz\""));
    srv_buf_free(&b);
    srv_metrics_free(m);
    srv_metrics_free(NULL);
}

/* Build info and the process_* metrics: the values /proc and getrlimit
 * give, and their lines in the exposition. */
static void test_metrics_process(void **state)
{
    (void)state;
    srv_metrics_process_stats p, q;
    int ok = srv_metrics_process(&p);
    assert_int_equal(ok, SRV_PROC_CPU | SRV_PROC_MEMORY | SRV_PROC_FDS | SRV_PROC_MAX_FDS);
    assert_true(p.resident_bytes > 0);
    assert_true(p.virtual_bytes >= p.resident_bytes);
    assert_true(p.cpu_seconds >= 0);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(p.max_fds == (double)rl.rlim_cur);
    /* One more descriptor open: exactly one more counted. */
    int fd = dup(0);
    assert_true(fd >= 0);
    srv_metrics_process(&q);
    assert_true(q.open_fds == p.open_fds + 1);
    assert_true(q.cpu_seconds >= p.cpu_seconds);
    close(fd);
    srv_metrics_process(&q);
    assert_true(q.open_fds == p.open_fds);

    srv_metrics *m = srv_metrics_create(1);
    assert_non_null(m);
    srv_buf b;
    srv_buf_init(&b, NULL, 0);
    srv_metrics_render(m, &b, NULL, 0, 0, 1);
    assert_false(b.oom);
    char info[256];
    snprintf(info, sizeof info,
             "mnist_build_info{version=\"%s\",commit=\"%s\",kernels=\"%s\",precision=\"%s\"} 1\n",
             SRV_VERSION, srv_build_commit[0] ? srv_build_commit : "unknown",
             nn_gemm_path_name(NN_GEMM_PATH_AUTO), nn_precision_name(nn_precision_get()));
    const char *want[] = {
        info,
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
        "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes ",
        "# TYPE process_open_fds gauge\nprocess_open_fds ",
        "# TYPE process_max_fds gauge\nprocess_max_fds ",
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ",
        "mnist_ready 0\n",
        "mnist_draining 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(b.data, want[i])) fail_msg("metrics lack: %s--- got:\n%s", want[i], b.data);
    /* The commit is a plain word (scripts/build-info.sh filters it). */
    for (const char *c = srv_build_commit; *c; c++)
        assert_non_null(strchr("0123456789abcdefghijklmnopqrstuvwxyz"
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-",
                               *c));
    srv_buf_free(&b);
    srv_metrics_free(m);
}

/* ---- models ----------------------------------------------------------------- */

static void save_net(const char *path, const char *arch, double acc, uint64_t seed, double temp)
{
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    assert_int_equal(nn_arch_parse(arch, layers, &nl, err, sizeof err), 0);
    nn_net *net = nn_net_create(layers, nl, 1, 28, 28, NULL, err, sizeof err);
    if (!net) fail_msg("nn_net_create: %s", err);
    nn_net_init(net, seed);
    net->meta.test_accuracy = acc;
    net->meta.temperature = temp;
    if (nn_net_save(net, path, err, sizeof err) != 0) fail_msg("nn_net_save: %s", err);
    nn_net_free(net);
}

static srv_registry *load(const srv_config *c, char *err, size_t errlen)
{
    srv_registry_opts o = {.cfg = c, .nslots = 1, .settle_s = 0};
    return srv_registry_create(&o, err, errlen);
}

static void test_models_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_server_modelsXXXXXX", path[256], err[512];
    assert_non_null(mkdtemp(dir));
    const char *mlp = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    save_net(path, mlp, 0.91, 1, 1.25); /* calibrated: T = 1.25 */
    snprintf(path, sizeof path, "%s/beta.safetensors", dir);
    save_net(path, mlp, 0.95, 2, 1.0);
    snprintf(path, sizeof path, "%s/duo.ensemble", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# two members\nalpha.safetensors\n  beta.safetensors  \n\n"
               "test_accuracy=0.97\n");
    fclose(f);

    srv_config c;
    srv_config_defaults(&c);
    snprintf(c.models_dir, sizeof c.models_dir, "%s", dir);
    srv_registry *reg = load(&c, err, sizeof err);
    if (!reg) fail_msg("srv_registry_create: %s", err);
    srv_snapshot *v = srv_registry_acquire(reg);
    assert_int_equal(v->n, 3);
    const srv_model *ms[3] = {v->s[0].ver[0], v->s[1].ver[0], v->s[2].ver[0]};
    /* Sorted by file name; the most accurate single model is the default,
     * not the ensemble, though its stated accuracy is higher. */
    assert_string_equal(ms[0]->name, "alpha");
    assert_string_equal(ms[1]->name, "beta");
    assert_string_equal(ms[2]->name, "duo");
    assert_int_equal(v->default_idx, 1);
    assert_ptr_equal(srv_snapshot_default(v), ms[1]);
    assert_true(fabs(ms[2]->test_accuracy - 0.97) < 1e-9);
    assert_int_equal(ms[2]->nmembers, 2);
    assert_int_equal(ms[2]->params, ms[0]->params + ms[1]->params);
    assert_true(fabs(ms[0]->test_accuracy - 0.91) < 1e-6);
    /* sha256 of a single model is its file's; the ensemble's is of the
     * members' hex digests joined by ','. */
    char hex[65], joined[140];
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    assert_int_equal(srv_sha256_file(path, hex, err, sizeof err), 0);
    assert_string_equal(ms[0]->sha256, hex);
    snprintf(joined, sizeof joined, "%s,%s", ms[0]->sha256, ms[1]->sha256);
    srv_sha256_hex(joined, strlen(joined), hex);
    assert_string_equal(ms[2]->sha256, hex);
    assert_non_null(strstr(v->models_json, "\"default\":\"beta\""));
    assert_non_null(strstr(v->models_json, "\"labels\":[\"0\",\"1\""));
    /* Each file's softmax temperature: alpha's 1.25 (top level and as a
     * member), beta's 1; an ensemble's members keep theirs, and it states
     * none of its own. */
    cJSON *mj = cJSON_Parse(v->models_json);
    assert_non_null(mj);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(mj, "models");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    const double want_t[3] = {1.25, 1.0, -1.0}; /* -1: null */
    for (int i = 0; i < 3; i++) {
        const cJSON *m = cJSON_GetArrayItem(list, i);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "temperature");
        if (want_t[i] < 0)
            assert_true(cJSON_IsNull(t));
        else
            assert_true(cJSON_IsNumber(t) && t->valuedouble == want_t[i]);
        const cJSON *mem = cJSON_GetObjectItemCaseSensitive(m, "members");
        for (int j = 0; j < cJSON_GetArraySize(mem); j++) {
            const cJSON *mt =
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(mem, j), "temperature");
            assert_true(cJSON_IsNumber(mt));
            assert_true(mt->valuedouble == (i == 2 ? (j == 0 ? 1.25 : 1.0) : want_t[i]));
        }
    }
    cJSON_Delete(mj);
    assert_ptr_equal(srv_snapshot_find(v, "beta", 0), ms[1]);
    assert_ptr_equal(srv_snapshot_find(v, "beta", 1), ms[1]);
    assert_null(srv_snapshot_find(v, "beta", 2));
    assert_null(srv_snapshot_find(v, "gamma", 0));
    srv_snapshot_release(v);
    srv_registry_free(reg);

    /* --default-model picks, an ensemble too; an unknown one stops
     * start-up. */
    snprintf(c.default_model, sizeof c.default_model, "alpha");
    reg = load(&c, err, sizeof err);
    assert_non_null(reg);
    v = srv_registry_acquire(reg);
    assert_int_equal(v->default_idx, 0);
    srv_snapshot_release(v);
    srv_registry_free(reg);
    snprintf(c.default_model, sizeof c.default_model, "duo");
    reg = load(&c, err, sizeof err);
    assert_non_null(reg);
    v = srv_registry_acquire(reg);
    assert_int_equal(v->default_idx, 2);
    assert_non_null(strstr(v->models_json, "\"default\":\"duo\""));
    srv_snapshot_release(v);
    srv_registry_free(reg);
    snprintf(c.default_model, sizeof c.default_model, "nope");
    assert_null(load(&c, err, sizeof err));
    assert_non_null(strstr(err, "nope"));
    c.default_model[0] = '\0';

    /* A name clash between --model and the directory is refused. */
    snprintf(path, sizeof path, "%s/alpha.safetensors", dir);
    assert_int_equal(srv_config_add_model(&c, "beta=x", err, sizeof err), 0);
    snprintf(c.models[0].paths, sizeof c.models[0].paths, "%s", path);
    assert_null(load(&c, err, sizeof err));
    assert_non_null(strstr(err, "beta"));
    c.nmodels = 0;

    /* A corrupt weights file stops start-up with a message naming it. */
    snprintf(path, sizeof path, "%s/broken.safetensors", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a safetensors file", f);
    fclose(f);
    assert_null(load(&c, err, sizeof err));
    assert_non_null(strstr(err, "broken"));
    unlink(path);

    /* An ensemble listing a missing member, likewise. */
    snprintf(path, sizeof path, "%s/duo.ensemble", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("alpha.safetensors\nmissing.safetensors\n", f);
    fclose(f);
    assert_null(load(&c, err, sizeof err));
    assert_non_null(strstr(err, "missing"));
    unlink(path);

    /* An empty directory: a clear message, not an empty server. */
    const char *names[] = {"alpha.safetensors", "beta.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    assert_null(load(&c, err, sizeof err));
    assert_non_null(strstr(err, "no models"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_file_matches_sha256sum),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_env_and_flags),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_cors),
        cmocka_unit_test(test_config_ui),
        cmocka_unit_test(test_web),
        cmocka_unit_test(test_reqid),
        cmocka_unit_test(test_buf_json),
        cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_metrics_process),
        cmocka_unit_test(test_models_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
