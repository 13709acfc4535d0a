/* route.c - see route.h. */
#include "route.h"
#include "oip.h"

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
    [SRV_ROUTE_OTHER] = {"other", 0},
};

srv_route srv_route_of(const char *url)
{
    srv_oip_path p;
    switch (srv_oip_path_parse(url, &p)) {
    case SRV_OIP_PATH_NONE:
        break;
    case SRV_OIP_PATH_SERVER:
        return SRV_ROUTE_V2;
    case SRV_OIP_PATH_LIVE:
        return SRV_ROUTE_V2_LIVE;
    case SRV_OIP_PATH_READY:
        return SRV_ROUTE_V2_READY;
    case SRV_OIP_PATH_MODEL:
        return SRV_ROUTE_V2_MODEL;
    case SRV_OIP_PATH_MODEL_READY:
        return SRV_ROUTE_V2_MODEL_READY;
    case SRV_OIP_PATH_INFER:
        return SRV_ROUTE_V2_INFER;
    case SRV_OIP_PATH_UNKNOWN:
        return SRV_ROUTE_OTHER;
    }
    for (int r = 0; r < SRV_ROUTE_V2; r++)
        if (strcmp(url, routes[r].path) == 0)
            return (srv_route)r;
    return SRV_ROUTE_OTHER;
}

const char *srv_route_name(srv_route r)
{
    return (unsigned)r < SRV_NROUTES ? routes[r].path : "other";
}

int srv_route_is_post(srv_route r)
{
    return (unsigned)r < SRV_NROUTES && routes[r].post;
}

const char *srv_route_allow(srv_route r)
{
    return srv_route_is_post(r) ? "POST" : "GET, HEAD";
}
