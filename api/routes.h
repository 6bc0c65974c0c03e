/* routes.h: what each URL of the HTTP API does (see /work/shared/API.md and
 * openapi/openapi.yaml). */
#ifndef CORRAL_API_ROUTES_H
#define CORRAL_API_ROUTES_H

#include "http.h"

/* Handles a complete request (headers and body read): either stores its response
 * (api_request_respond*) or submits it to the engine (api_request_engine_wait), in
 * which case the engine's done callback stores the response later. */
void routes_dispatch(struct api_request *r);

#endif
