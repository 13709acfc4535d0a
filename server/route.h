/* route.h - the server's paths, in one table: which route a URL is, its
 * name in metrics and logs, and the methods it accepts.
 *
 *   srv_route r = srv_route_of("/predict");       // SRV_ROUTE_PREDICT
 *   srv_route_name(r);                             // "/predict"
 *   srv_route_allow(r);                            // "POST"
 *
 * Adding an endpoint: a value here, a row in route.c's table, its handler
 * in http_handlers.c (see CONTRIBUTING.md).
 */
#ifndef SERVER_ROUTE_H
#define SERVER_ROUTE_H

#include <stddef.h>

typedef enum {
    SRV_ROUTE_PREDICT = 0,
    SRV_ROUTE_BATCH,
    SRV_ROUTE_HEALTHZ,
    SRV_ROUTE_READYZ,
    SRV_ROUTE_MODELS,
    SRV_ROUTE_METRICS,
    SRV_ROUTE_OPENAPI,
    SRV_ROUTE_V2,             /* /v2: server metadata                 */
    SRV_ROUTE_V2_LIVE,        /* /v2/health/live                      */
    SRV_ROUTE_V2_READY,       /* /v2/health/ready                     */
    SRV_ROUTE_V2_MODEL,       /* /v2/models/{name}[/versions/{v}]     */
    SRV_ROUTE_V2_MODEL_READY, /* /v2/models/{name}[/versions/{v}]/ready */
    SRV_ROUTE_V2_INFER,       /* /v2/models/{name}[/versions/{v}]/infer */
    SRV_ROUTE_REPO_INDEX,     /* POST /v2/repository/index                */
    SRV_ROUTE_REPO_LOAD,      /* POST /v2/repository/models/{name}/load   */
    SRV_ROUTE_REPO_UNLOAD,    /* POST /v2/repository/models/{name}/unload */
    SRV_ROUTE_PAGE,           /* the drawing page's files (web.h): "/",
                                 "/app.js", ...; found by http_handlers.c */
    SRV_ROUTE_OTHER,          /* unknown paths, answered 404 */
    SRV_NROUTES
} srv_route;

/* The route of a request path (query already split off): an exact match,
 * one of the Open Inference Protocol's /v2 paths (srv_oip_path_parse:
 * model name and version are path segments), or a repository path. */
srv_route srv_route_of(const char *url);

/* The {name} of a /v2/repository/models/{name}/... path into name (up to
 * len - 1 bytes, truncated beyond; "" for other paths). */
void srv_route_repo_name(const char *url, char *name, size_t len);

/* The path of a route, e.g. "/predict" or "/v2/models/{name}/infer" (model
 * names and versions stay out of metric labels); "other" for
 * SRV_ROUTE_OTHER. */
const char *srv_route_name(srv_route r);

/* Nonzero for routes that take a request body (POST). */
int srv_route_is_post(srv_route r);

/* The Allow header of a route: "POST" or "GET, HEAD". */
const char *srv_route_allow(srv_route r);

#endif
