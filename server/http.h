/* http.h - the HTTP side of the server: a libmicrohttpd daemon (epoll, a
 * thread pool, one thread per request from headers to response), routes,
 * request bodies, the JSON error envelope, readiness and draining.
 *
 *   srv_server *s = srv_server_create(&cfg, registry, spec, spec_len, err, n);
 *   srv_server_start(s, err, n);          // binds cfg.host:cfg.port
 *   printf("%d\n", srv_server_port(s));   // the real port when cfg.port = 0
 *   srv_server_warmup(s, err, n);         // then /readyz answers 200
 *   ... on SIGTERM: srv_server_set_draining(s); keep serving for the drain
 *       delay; srv_server_quiesce(s); wait while srv_server_inflight(s) > 0
 *       (up to the drain timeout);
 *   srv_server_stop(s); srv_server_free(s);
 *
 * Memory: every model carries a workspace per worker slot (made when it
 * loads, see registry.h and pool.h); a request allocates only its small
 * state, its body (beyond a 4 KiB inline buffer, bounded by the body
 * limit), the decoded image and the response text.
 *
 * Models: each request works on the registry snapshot current when its
 * headers arrived (srv_registry_acquire), released when it completes, so
 * a reload never changes the model under a running request.
 *
 * Files: http.c (this life cycle), http_conn.c (a request on its
 * connection), http_handlers.c (what each route does), pool.c (the
 * workspaces), route.c (the paths); http_int.h says how they fit.
 */
#ifndef SERVER_HTTP_H
#define SERVER_HTTP_H

#include <stddef.h>

#include "server/config.h"
#include "server/registry.h"
#include "server/web.h"

typedef struct srv_server srv_server;

/* cfg, registry and spec must outlive the server; the registry's nslots
 * should be cfg->threads + 1 (see pool.h). NULL + err on failure. */
srv_server *srv_server_create(const srv_config *cfg, srv_registry *registry, const char *openapi,
                              size_t openapi_len, char *err, size_t errlen);
/* Binds and starts serving (not ready yet: /readyz and /predict say 503). */
int srv_server_start(srv_server *s, char *err, size_t errlen);
int srv_server_port(const srv_server *s);
/* Serves the drawing page from web (which must outlive the server); call
 * before srv_server_start. Without it, GET / answers 404. */
void srv_server_set_web(srv_server *s, const srv_web *web);
/* Runs every model once on a private workspace and checks its output; on
 * success the server becomes ready. */
int srv_server_warmup(srv_server *s, char *err, size_t errlen);
/* Reports not-ready (/readyz answers 503) while still accepting and
 * serving everything, so load balancers take this server out of rotation
 * before it stops listening. Responses carry Connection: close from now on,
 * so clients reconnect (to another server) for their next request. */
void srv_server_set_draining(srv_server *s);
/* Stops accepting connections and reports not-ready; requests already
 * received are still answered (with Connection: close). */
void srv_server_quiesce(srv_server *s);
/* Requests between their first byte and their completion. */
int srv_server_inflight(const srv_server *s);
/* Stops the daemon, closing whatever connections remain. */
void srv_server_stop(srv_server *s);
void srv_server_free(srv_server *s);

#endif
