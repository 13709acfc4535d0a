/* config.h - the server's configuration: defaults, then MNIST_* environment
 * variables, then command-line flags (flags win).
 *
 *   srv_config c;
 *   char err[256];
 *   switch (srv_config_parse(&c, argc, argv, getenv, err, sizeof err)) {
 *   case SRV_CONFIG_RUN: ...; case SRV_CONFIG_HELP: srv_config_usage(stdout); ...
 *   case SRV_CONFIG_ERROR: fprintf(stderr, "%s\n", err); exit(2);
 *   }
 *
 * Pure: reads only argv and the env callback, so tests can drive it.
 */
#ifndef SERVER_CONFIG_H
#define SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_VERSION "1.0.0"
#define SRV_MAX_MODELS 32
#define SRV_NAME_MAX 64
#define SRV_PATHS_MAX 4096
#define SRV_CORS_MAX 16    /* allowed origins                        */
#define SRV_ORIGIN_MAX 256 /* bytes of one origin, NUL included      */

typedef struct {
    char name[SRV_NAME_MAX];   /* [A-Za-z0-9._-], 1..63 chars           */
    char paths[SRV_PATHS_MAX]; /* one path, or several comma-separated  */
} srv_model_spec;

typedef struct {
    char host[256];                        /* default "0.0.0.0"                     */
    int port;                              /* default 8080; 0 = any free port       */
    int threads;                           /* default 0 = one per available core    */
    srv_model_spec models[SRV_MAX_MODELS]; /* --model, MNIST_MODELS    */
    int nmodels;
    char models_dir[1024];            /* "" = do not scan a directory          */
    char default_model[SRV_NAME_MAX]; /* "" = most accurate model        */
    size_t body_limit;                /* bytes, default 2 MiB                  */
    uint64_t max_pixels;              /* decoded width*height, default 4096^2  */
    unsigned timeout_s;               /* idle connection timeout, default 30   */
    unsigned max_connections;         /* default 1024                          */
    int max_batch;                    /* images per batch request, default 64  */
    unsigned batch_delay_us;          /* dynamic batching's wait, 0 = off      */
    int max_batch_size;               /* images per batched forward, def. 16   */
    double drain_delay_s;             /* SIGTERM: serve while not ready, def. 5 */
    double drain_timeout_s;           /* then finish in flight, default 10      */
    int log_json;                     /* --log-format json                     */
    int access_log;                   /* one line per request, default on      */
    /* CORS (--cors-origin, MNIST_CORS_ORIGIN): off when ncors == 0. */
    char cors[SRV_CORS_MAX][SRV_ORIGIN_MAX]; /* "scheme://host[:port]" or "*" */
    int ncors;
    int keep_versions; /* highest versions served per name, 1   */
    double poll_s;     /* rescan the models every N s, 0 = off  */
    int model_control; /* repository load/unload API, default off */
    int ui;            /* the drawing page at GET /, default on */
    int balance;       /* --balance-connections: the acceptor deals them out */
} srv_config;

typedef enum {
    SRV_CONFIG_RUN = 0,
    SRV_CONFIG_HELP,
    SRV_CONFIG_VERSION,
    SRV_CONFIG_ERROR
} srv_config_action;

typedef const char *(*srv_env_fn)(const char *name);

/* Fills c with the defaults. */
void srv_config_defaults(srv_config *c);

/* Defaults, then env (may be NULL for none), then argv[1..argc). On
 * SRV_CONFIG_ERROR err holds one line naming the bad flag or variable. */
srv_config_action srv_config_parse(srv_config *c, int argc, char **argv, srv_env_fn env, char *err,
                                   size_t errlen);

/* Adds one "NAME=PATH[,PATH...]" model. Returns 0, or -1 with err. */
int srv_config_add_model(srv_config *c, const char *spec, char *err, size_t errlen);

/* A model name is 1..63 of [A-Za-z0-9._-]. */
int srv_config_valid_name(const char *name);

/* "2MiB", "512k", "1048576" -> bytes. Returns 0, or -1 when malformed or
 * over max. */
int srv_config_parse_size(const char *s, uint64_t max, uint64_t *out);

/* Adds allowed CORS origins from a comma list ("*" allows any). Each is
 * "*" or scheme://host[:port] (printable ASCII, no path). Returns 0, or -1
 * with err. */
int srv_config_add_cors(srv_config *c, const char *list, char *err, size_t errlen);

/* Whether a request's Origin header value is allowed. The answer's
 * Access-Control-Allow-Origin is then "*" when "*" is configured, else
 * the origin itself. */
int srv_config_cors_allows(const srv_config *c, const char *origin);
/* Whether "*" is among the allowed origins. */
int srv_config_cors_any(const srv_config *c);

void srv_config_usage(FILE *f);

#endif
