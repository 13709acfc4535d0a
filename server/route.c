/* route.c - see route.h. */
#include "server/route.h"
#include "server/oip.h"

#include <string.h>

static const struct {
    const char *path;
    int post;
} routes[SRV_NROUTES] = {
    [SRV_ROUTE_PREDICT] = {"/predict", 1},
    [SRV_ROUTE_BATCH] = {"/predict/batch", 1},
    [SRV_ROUTE_HEALTHZ] = {"/healthz", 0},
    [SRV_ROUTE_READYZ] = {"/readyz", 0},
    [SRV_ROUTE_MODELS] = {"/v1/models", 0},
    [SRV_ROUTE_METRICS] = {"/metrics", 0},
    [SRV_ROUTE_OPENAPI] = {"/openapi.yaml", 0},
    [SRV_ROUTE_V2] = {"/v2", 0},
    [SRV_ROUTE_V2_LIVE] = {"/v2/health/live", 0},
    [SRV_ROUTE_V2_READY] = {"/v2/health/ready", 0},
    [SRV_ROUTE_V2_MODEL] = {"/v2/models/{name}", 0},
    [SRV_ROUTE_V2_MODEL_READY] = {"/v2/models/{name}/ready", 0},
    [SRV_ROUTE_V2_INFER] = {"/v2/models/{name}/infer", 1},
    [SRV_ROUTE_REPO_INDEX] = {"/v2/repository/index", 1},
    [SRV_ROUTE_REPO_LOAD] = {"/v2/repository/models/{name}/load", 1},
    [SRV_ROUTE_REPO_UNLOAD] = {"/v2/repository/models/{name}/unload", 1},
    [SRV_ROUTE_PAGE] = {"page", 0},
    [SRV_ROUTE_OTHER] = {"other", 0},
};

#define REPO_MODELS "/v2/repository/models/"

/* The part of url between REPO_MODELS and its last '/', or NULL. */
static const char *repo_name(const char *url, size_t *len, const char **rest)
{
    size_t p = strlen(REPO_MODELS);
    if (strncmp(url, REPO_MODELS, p) != 0) return NULL;
    const char *slash = strrchr(url + p, '/');
    if (!slash || slash == url + p) return NULL;
    *len = (size_t)(slash - (url + p));
    *rest = slash;
    return url + p;
}

void srv_route_repo_name(const char *url, char *name, size_t len)
{
    size_t n = 0;
    const char *rest, *p = repo_name(url, &n, &rest);
    if (len == 0) return;
    if (!p) n = 0;
    if (n >= len) n = len - 1;
    memcpy(name, p ? p : "", n);
    name[n] = '\0';
}

srv_route srv_route_of(const char *url)
{
    /* The repository extension first: its paths are not the protocol's
     * model paths. */
    if (strcmp(url, routes[SRV_ROUTE_REPO_INDEX].path) == 0) return SRV_ROUTE_REPO_INDEX;
    size_t len;
    const char *rest;
    if (repo_name(url, &len, &rest)) {
        if (strcmp(rest, "/load") == 0) return SRV_ROUTE_REPO_LOAD;
        if (strcmp(rest, "/unload") == 0) return SRV_ROUTE_REPO_UNLOAD;
    }
    srv_oip_path p;
    switch (srv_oip_path_parse(url, &p)) {
    case SRV_OIP_PATH_NONE: break;
    case SRV_OIP_PATH_SERVER: return SRV_ROUTE_V2;
    case SRV_OIP_PATH_LIVE: return SRV_ROUTE_V2_LIVE;
    case SRV_OIP_PATH_READY: return SRV_ROUTE_V2_READY;
    case SRV_OIP_PATH_MODEL: return SRV_ROUTE_V2_MODEL;
    case SRV_OIP_PATH_MODEL_READY: return SRV_ROUTE_V2_MODEL_READY;
    case SRV_OIP_PATH_INFER: return SRV_ROUTE_V2_INFER;
    case SRV_OIP_PATH_UNKNOWN: return SRV_ROUTE_OTHER;
    }
    for (int r = 0; r < SRV_ROUTE_V2; r++)
        if (strcmp(url, routes[r].path) == 0) return (srv_route)r;
    return SRV_ROUTE_OTHER;
}

const char *srv_route_name(srv_route r)
{
    return (unsigned)r < SRV_NROUTES ? routes[r].path : "other";
}

int srv_route_is_post(srv_route r) { return (unsigned)r < SRV_NROUTES && routes[r].post; }

const char *srv_route_allow(srv_route r) { return srv_route_is_post(r) ? "POST" : "GET, HEAD"; }
