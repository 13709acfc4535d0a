/* route.c - see route.h. */
#include "route.h"

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
    [SRV_ROUTE_OTHER] = {"other", 0},
};

srv_route srv_route_of(const char *url)
{
    for (int r = 0; r < SRV_ROUTE_OTHER; r++)
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
