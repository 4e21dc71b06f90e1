"""The HTTP API: operators and tools read the fleet and change desired state here.

Modules: ``app`` (the application factory and the server runner), ``backends`` (the
stores and clients a running API holds), ``problems`` (RFC 9457 errors), ``auth`` and
``tokens`` (bearer tokens and roles), ``patches`` (RFC 7396 merge patches), ``models``
(request and response bodies), ``ocpp_schemas`` (OCPP requests as bodies), ``params``
(shared parameters), ``limits`` (body size), ``operations`` and ``diagnostics`` (what the
remote-operation routes hold), ``routes`` (one module per resource), ``dashboard`` (its
static files). The API runs no engine: it writes the stores and wakes the ``fleet``
component; who changed what goes to the audit log (:mod:`chargetwin.audit`).

Errors reach clients only as problem details; inside, one exception carries them::

    Problem                      api.problems: status, title, detail, type, errors
     (raised by routes, auth, limits; any other exception becomes a logged 500)
    starlette HTTPException      404 unknown route, 405 wrong method -> Problem
    RequestValidationError       FastAPI's own 422 -> Problem with errors[].pointer
"""
