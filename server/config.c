/* config.c - see config.h. One table lists every option once, so a flag and
 * its environment variable cannot drift apart. */
#include "server/config.h"
#include "pipeline/batch.h"
#include "pipeline/pipeline.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum {
    OPT_HOST,
    OPT_PORT,
    OPT_THREADS,
    OPT_MODEL,
    OPT_MODELS_DIR,
    OPT_DEFAULT_MODEL,
    OPT_BODY_LIMIT,
    OPT_MAX_PIXELS,
    OPT_TIMEOUT,
    OPT_MAX_CONNECTIONS,
    OPT_BALANCE,
    OPT_MAX_BATCH,
    OPT_BATCH_DELAY,
    OPT_MAX_BATCH_SIZE,
    OPT_DRAIN_DELAY,
    OPT_DRAIN_TIMEOUT,
    OPT_GRACE,
    OPT_LOG_FORMAT,
    OPT_ACCESS_LOG,
    OPT_CORS_ORIGIN,
    OPT_KEEP_VERSIONS,
    OPT_POLL,
    OPT_MODEL_CONTROL,
    OPT_UI
} opt_id;

static const struct {
    opt_id id;
    const char *flag, *env, *arg, *help;
} opts[] = {
    {OPT_HOST, "host", "MNIST_HOST", "ADDR",
     "address to listen on (default 0.0.0.0, all IPv4 interfaces)"},
    {OPT_PORT, "port", "MNIST_PORT", "N",
     "TCP port (default 8080; 0 picks a free port, see the start-up line)"},
    {OPT_THREADS, "threads", "MNIST_THREADS", "N",
     "worker threads (default: number of available cores)"},
    {OPT_MODEL, "model", "MNIST_MODELS", "NAME=PATH[,PATH...]",
     "serve a model; several paths make an ensemble; repeatable\n"
     "                        (env: entries separated by ';')"},
    {OPT_MODELS_DIR, "models-dir", "MNIST_MODELS_DIR", "DIR",
     "serve every *.safetensors and *.ensemble in DIR (default models,\n"
     "                        used when no --model is given)"},
    {OPT_DEFAULT_MODEL, "default-model", "MNIST_DEFAULT_MODEL", "NAME",
     "model used without ?model= (default: the most accurate single model)"},
    {OPT_BODY_LIMIT, "body-limit", "MNIST_BODY_LIMIT", "BYTES",
     "largest request body, e.g. 2MiB, 512k (default 2MiB)"},
    {OPT_MAX_PIXELS, "max-pixels", "MNIST_MAX_PIXELS", "N",
     "largest decoded image, width*height (default 16777216)"},
    {OPT_TIMEOUT, "timeout", "MNIST_TIMEOUT", "SECONDS",
     "close connections idle this long (default 30)"},
    {OPT_MAX_CONNECTIONS, "max-connections", "MNIST_MAX_CONNECTIONS", "N",
     "concurrent connections (default 1024)"},
    {OPT_BALANCE, "balance-connections", "MNIST_BALANCE_CONNECTIONS", "on|off",
     "deal new connections out to the threads in turn, so that each\n"
     "                        holds an equal share (default off: the first\n"
     "                        free thread takes each; see README, \"Threads and\n"
     "                        connections\")"},
    {OPT_MAX_BATCH, "max-batch", "MNIST_MAX_BATCH", "N",
     "images per /predict/batch or v2 infer request (default 64)"},
    {OPT_BATCH_DELAY, "batch-delay", "MNIST_BATCH_DELAY", "MICROSECONDS",
     "dynamic batching: run concurrent requests for one model as one\n"
     "                        forward pass, waiting at most this long to gather\n"
     "                        them (default 0: off; see README, \"Dynamic batching\")"},
    {OPT_MAX_BATCH_SIZE, "max-batch-size", "MNIST_MAX_BATCH_SIZE", "N",
     "dynamic batching: images per forward pass (default 16, up to 256)"},
    {OPT_DRAIN_DELAY, "drain-delay", "MNIST_DRAIN_DELAY", "SECONDS",
     "on SIGTERM, keep accepting this long while /readyz says 503, so\n"
     "                        load balancers stop sending first (default 5;\n"
     "                        0: stop accepting at once)"},
    {OPT_DRAIN_TIMEOUT, "drain-timeout", "MNIST_DRAIN_TIMEOUT", "SECONDS",
     "then time to finish requests in flight (default 10)"},
    {OPT_GRACE, "grace", "MNIST_GRACE", "SECONDS", "older name of --drain-timeout"},
    {OPT_LOG_FORMAT, "log-format", "MNIST_LOG_FORMAT", "text|json",
     "log line format on stderr (default text)"},
    {OPT_ACCESS_LOG, "access-log", "MNIST_ACCESS_LOG", "on|off",
     "one log line per request (default on)"},
    {OPT_CORS_ORIGIN, "cors-origin", "MNIST_CORS_ORIGIN", "ORIGIN[,ORIGIN...]",
     "let browsers on these origins call the API (CORS); '*' for any;\n"
     "                        repeatable (default: no CORS headers)"},
    {OPT_KEEP_VERSIONS, "keep-versions", "MNIST_KEEP_VERSIONS", "K",
     "serve the K highest versions of each model (default 1, up to 16)"},
    {OPT_POLL, "poll-interval", "MNIST_POLL_INTERVAL", "SECONDS",
     "rescan the models every SECONDS for new, changed and removed\n"
     "                        files (default 0: only on SIGHUP)"},
    /* A switch: "--enable-model-control" alone means on. */
    {OPT_MODEL_CONTROL, "enable-model-control", "MNIST_ENABLE_MODEL_CONTROL", NULL,
     "allow POST /v2/repository/models/NAME/load and /unload\n"
     "                        (anyone who reaches the port may then change "
     "what is served)"},
    {OPT_UI, "ui", "MNIST_UI", "on|off", "serve the drawing page at GET / (default on)"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

void srv_config_defaults(srv_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->host, "0.0.0.0");
    c->port = 8080;
    c->threads = 0;
    c->body_limit = PIPE_MAX_BYTES_DEFAULT;
    c->max_pixels = 4096u * 4096u;
    c->timeout_s = 30;
    c->max_connections = 1024;
    c->max_batch = 64;
    c->batch_delay_us = 0;
    c->max_batch_size = 16;
    c->drain_delay_s = 5;
    c->drain_timeout_s = 10;
    c->access_log = 1;
    c->keep_versions = 1;
    c->ui = 1;
}

int srv_config_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= SRV_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-') return 0;
    }
    return 1;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return -1;
    *out = v;
    return 0;
}

int srv_config_parse_size(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return -1;
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
                 {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix) != 0) continue;
        if (v > (max >> units[i].shift)) return -1;
        *out = (uint64_t)v << units[i].shift;
        return 0;
    }
    return -1;
}

static int parse_seconds(const char *s, double max, double *out)
{
    if (!s || !(isdigit((unsigned char)*s) || *s == '.')) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || v > max) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *yes[] = {"1", "on", "yes", "true"};
    static const char *no[] = {"0", "off", "no", "false"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int srv_config_add_model(srv_config *c, const char *spec, char *err, size_t errlen)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1]) {
        snprintf(err, errlen, "model '%s': expected NAME=PATH[,PATH...]", spec);
        return -1;
    }
    size_t nlen = (size_t)(eq - spec);
    char name[SRV_NAME_MAX];
    if (nlen >= sizeof name) {
        snprintf(err, errlen, "model name too long (max %d characters)", SRV_NAME_MAX - 1);
        return -1;
    }
    memcpy(name, spec, nlen);
    name[nlen] = '\0';
    if (!srv_config_valid_name(name)) {
        snprintf(err, errlen, "model name '%s': use letters, digits, '.', '_' and '-'", name);
        return -1;
    }
    if (strlen(eq + 1) >= SRV_PATHS_MAX) {
        snprintf(err, errlen, "model '%s': path list too long", name);
        return -1;
    }
    for (int i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].name, name) == 0) {
            snprintf(err, errlen, "model '%s' given twice", name);
            return -1;
        }
    if (c->nmodels >= SRV_MAX_MODELS) {
        snprintf(err, errlen, "too many models (max %d)", SRV_MAX_MODELS);
        return -1;
    }
    srv_model_spec *m = &c->models[c->nmodels++];
    strcpy(m->name, name);
    strcpy(m->paths, eq + 1);
    return 0;
}

/* Applies one option; src names where it came from, for messages. */
static int apply(srv_config *c, opt_id id, const char *src, const char *v, char *err, size_t errlen)
{
    uint64_t u;
    double d;
    switch (id) {
    case OPT_HOST:
        if (!*v || strlen(v) >= sizeof c->host) goto bad;
        strcpy(c->host, v);
        return 0;
    case OPT_PORT:
        if (parse_u64(v, 65535, &u) < 0) goto bad;
        c->port = (int)u;
        return 0;
    case OPT_THREADS:
        if (parse_u64(v, 1024, &u) < 0 || u == 0) goto bad;
        c->threads = (int)u;
        return 0;
    case OPT_MODEL: return srv_config_add_model(c, v, err, errlen);
    case OPT_MODELS_DIR:
        if (!*v || strlen(v) >= sizeof c->models_dir) goto bad;
        strcpy(c->models_dir, v);
        return 0;
    case OPT_DEFAULT_MODEL:
        if (!srv_config_valid_name(v)) goto bad;
        strcpy(c->default_model, v);
        return 0;
    case OPT_BODY_LIMIT:
        /* 1 GiB cap: bodies are held in memory. */
        if (srv_config_parse_size(v, 1u << 30, &u) < 0 || u == 0) goto bad;
        c->body_limit = (size_t)u;
        return 0;
    case OPT_MAX_PIXELS:
        if (parse_u64(v, (uint64_t)1 << 32, &u) < 0 || u == 0) goto bad;
        c->max_pixels = u;
        return 0;
    case OPT_TIMEOUT:
        if (parse_u64(v, 86400, &u) < 0 || u == 0) goto bad;
        c->timeout_s = (unsigned)u;
        return 0;
    case OPT_MAX_CONNECTIONS:
        if (parse_u64(v, 1000000, &u) < 0 || u == 0) goto bad;
        c->max_connections = (unsigned)u;
        return 0;
    case OPT_MAX_BATCH:
        if (parse_u64(v, 1024, &u) < 0 || u == 0) goto bad;
        c->max_batch = (int)u;
        return 0;
    case OPT_BATCH_DELAY:
        if (parse_u64(v, PIPE_BATCH_MAX_DELAY_US, &u) < 0) goto bad;
        c->batch_delay_us = (unsigned)u;
        return 0;
    case OPT_MAX_BATCH_SIZE:
        if (parse_u64(v, PIPE_BATCH_MAX_SIZE, &u) < 0 || u == 0) goto bad;
        c->max_batch_size = (int)u;
        return 0;
    case OPT_DRAIN_DELAY:
        if (parse_seconds(v, 3600, &d) < 0) goto bad;
        c->drain_delay_s = d;
        return 0;
    case OPT_DRAIN_TIMEOUT:
    case OPT_GRACE:
        if (parse_seconds(v, 3600, &d) < 0) goto bad;
        c->drain_timeout_s = d;
        return 0;
    case OPT_LOG_FORMAT:
        if (strcmp(v, "text") == 0)
            c->log_json = 0;
        else if (strcmp(v, "json") == 0)
            c->log_json = 1;
        else
            goto bad;
        return 0;
    case OPT_ACCESS_LOG:
        if (parse_bool(v, &c->access_log) < 0) goto bad;
        return 0;
    case OPT_CORS_ORIGIN: {
        char inner[200];
        if (srv_config_add_cors(c, v, inner, sizeof inner) == 0) return 0;
        snprintf(err, errlen, "%s: %s", src, inner);
        return -1;
    }
    case OPT_KEEP_VERSIONS:
        if (parse_u64(v, 16, &u) < 0 || u == 0) goto bad;
        c->keep_versions = (int)u;
        return 0;
    case OPT_POLL:
        /* Under 0.1 s a scan would hardly finish before the next. */
        if (parse_seconds(v, 86400, &d) < 0 || (d > 0 && d < 0.1)) goto bad;
        c->poll_s = d;
        return 0;
    case OPT_MODEL_CONTROL:
        if (parse_bool(v, &c->model_control) < 0) goto bad;
        return 0;
    case OPT_UI:
        if (parse_bool(v, &c->ui) < 0) goto bad;
        return 0;
    case OPT_BALANCE:
        if (parse_bool(v, &c->balance) < 0) goto bad;
        return 0;
    }
bad:
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].id == id) {
            snprintf(err, errlen, "%s: invalid value '%s' (expected %s)", src, v,
                     opts[i].arg ? opts[i].arg : "on|off");
            break;
        }
    return -1;
}

/* An origin as browsers send it: scheme "://" host [":" port], nothing
 * after; letters, digits and "-._" in the host (IPv6 literals in []). */
static int valid_origin(const char *o, size_t n)
{
    size_t i = 0;
    while (i < n && (isalnum((unsigned char)o[i]) || o[i] == '+' || o[i] == '-' || o[i] == '.'))
        i++;
    if (i == 0 || n - i < 4 || memcmp(o + i, "://", 3) != 0) return 0;
    i += 3;
    size_t host = i;
    while (i < n && (isalnum((unsigned char)o[i]) || strchr("-._[]:", o[i]))) i++;
    return i == n && i > host && o[n - 1] != ':';
}

int srv_config_add_cors(srv_config *c, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *o = p;
        while (n && (*o == ' ' || *o == '\t')) {
            o++;
            n--;
        }
        while (n && (o[n - 1] == ' ' || o[n - 1] == '\t')) n--;
        if (n == 0) {
            snprintf(err, errlen, "empty origin in '%s'", list);
            return -1;
        }
        int star = n == 1 && o[0] == '*';
        if (n >= SRV_ORIGIN_MAX || (!star && !valid_origin(o, n))) {
            snprintf(err, errlen,
                     "invalid origin '%.*s' (expected '*' or "
                     "scheme://host[:port], e.g. https://app.example.com)",
                     (int)(n > 80 ? 80 : n), o);
            return -1;
        }
        if (c->ncors >= SRV_CORS_MAX) {
            snprintf(err, errlen, "more than %d origins", SRV_CORS_MAX);
            return -1;
        }
        memcpy(c->cors[c->ncors], o, n);
        c->cors[c->ncors][n] = '\0';
        c->ncors++;
        p += strcspn(p, ",");
        if (!*p) return 0;
        p++;
    }
}

int srv_config_cors_allows(const srv_config *c, const char *origin)
{
    if (!origin) return 0;
    for (int i = 0; i < c->ncors; i++)
        /* Origins compare exactly (RFC 6454 serialisation); "*" is any. */
        if (strcmp(c->cors[i], "*") == 0 || strcmp(c->cors[i], origin) == 0) return 1;
    return 0;
}

int srv_config_cors_any(const srv_config *c)
{
    for (int i = 0; i < c->ncors; i++)
        if (strcmp(c->cors[i], "*") == 0) return 1;
    return 0;
}

/* MNIST_MODELS holds entries separated by ';' or whitespace. */
static int apply_env_models(srv_config *c, const char *v, char *err, size_t errlen)
{
    char spec[SRV_NAME_MAX + SRV_PATHS_MAX + 2];
    while (*v) {
        size_t n = strcspn(v, "; \t\n");
        if (n >= sizeof spec) {
            snprintf(err, errlen, "MNIST_MODELS: entry too long");
            return -1;
        }
        if (n > 0) {
            memcpy(spec, v, n);
            spec[n] = '\0';
            if (srv_config_add_model(c, spec, err, errlen) < 0) {
                char inner[300];
                snprintf(inner, sizeof inner, "%s", err);
                snprintf(err, errlen, "MNIST_MODELS: %s", inner);
                return -1;
            }
        }
        v += n;
        if (*v) v++;
    }
    return 0;
}

srv_config_action srv_config_parse(srv_config *c, int argc, char **argv, srv_env_fn env, char *err,
                                   size_t errlen)
{
    srv_config_defaults(c);
    err[0] = '\0';
    int dir_given = 0;

    for (size_t i = 0; env && i < NOPTS; i++) {
        const char *v = env(opts[i].env);
        if (!v || !*v) continue;
        if (opts[i].id == OPT_MODEL) {
            if (apply_env_models(c, v, err, errlen) < 0) return SRV_CONFIG_ERROR;
            continue;
        }
        if (apply(c, opts[i].id, opts[i].env, v, err, errlen) < 0) return SRV_CONFIG_ERROR;
        if (opts[i].id == OPT_MODELS_DIR) dir_given = 1;
    }

    int flag_models = 0, flag_cors = 0;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) return SRV_CONFIG_HELP;
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) return SRV_CONFIG_VERSION;
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return SRV_CONFIG_ERROR;
        }
        const char *name = arg + 2, *val = strchr(name, '=');
        size_t nlen = val ? (size_t)(val - name) : strlen(name);
        size_t i;
        for (i = 0; i < NOPTS; i++)
            if (strlen(opts[i].flag) == nlen && strncmp(opts[i].flag, name, nlen) == 0) break;
        /* --no-NAME turns an on|off option off: --no-ui, --no-access-log. */
        if (i == NOPTS && !val && strncmp(name, "no-", 3) == 0) {
            for (i = 0; i < NOPTS; i++)
                if (opts[i].arg && strcmp(opts[i].arg, "on|off") == 0 &&
                    strcmp(opts[i].flag, name + 3) == 0)
                    break;
            if (i < NOPTS) {
                if (apply(c, opts[i].id, arg, "off", err, errlen) < 0) return SRV_CONFIG_ERROR;
                continue;
            }
        }
        if (i == NOPTS) {
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)(nlen + 2), arg);
            return SRV_CONFIG_ERROR;
        }
        if (val) {
            val++;
        } else if (!opts[i].arg) {
            val = "on"; /* a switch */
        } else {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "option --%s needs a value (%s)", opts[i].flag, opts[i].arg);
                return SRV_CONFIG_ERROR;
            }
            val = argv[++a];
        }
        /* Flags win: the first --model drops the models from MNIST_MODELS,
         * the first --cors-origin the origins from MNIST_CORS_ORIGIN. */
        if (opts[i].id == OPT_MODEL && !flag_models) {
            flag_models = 1;
            c->nmodels = 0;
        }
        if (opts[i].id == OPT_CORS_ORIGIN && !flag_cors) {
            flag_cors = 1;
            c->ncors = 0;
        }
        char src[64];
        snprintf(src, sizeof src, "--%s", opts[i].flag);
        if (apply(c, opts[i].id, src, val, err, errlen) < 0) return SRV_CONFIG_ERROR;
        if (opts[i].id == OPT_MODELS_DIR) dir_given = 1;
    }

    /* The default directory applies only when nothing says what to serve. */
    if (!dir_given && c->nmodels == 0) strcpy(c->models_dir, "models");
    return SRV_CONFIG_RUN;
}

void srv_config_usage(FILE *f)
{
    fprintf(f, "Usage: mnist-server [OPTION...]\n"
               "Serves handwritten-digit (and other 28x28 image) classifiers "
               "over HTTP.\n\nOptions (each also read from its environment "
               "variable; flags win):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].flag, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-22s%s%s\n                        [%s]\n", left,
                strlen(left) > 21 ? "\n                        " : "", opts[i].help, opts[i].env);
    }
    fprintf(f, "  --no-ui, --no-access-log\n"
               "                        the same as --ui off, --access-log off\n"
               "  -h, --help            this text\n"
               "  -V, --version         print the version\n\n"
               "A file NAME.ensemble in the models directory serves an "
               "ensemble named NAME:\none member weights file per line "
               "(relative to that directory), '#' comments,\nand optionally "
               "a line 'test_accuracy=0.9981' with the ensemble's figure.\n");
}
