"""The HTTP API: operators and tools read the fleet and change desired state here.

Modules: ``app`` (the application factory and the server runner), ``backends`` (the
stores and clients a running API holds), ``problems`` (RFC 9457 errors), ``auth`` and
``tokens`` (bearer tokens and roles), ``audit`` (who changed what), ``patches``
(RFC 7396 merge patches), ``models`` (request and response bodies), ``limits`` (body
size), ``routes`` (one module per resource).

Errors reach clients only as problem details; inside, one exception carries them::

    Problem                      api.problems: status, title, detail, type, errors
     (raised by routes, auth, limits; any other exception becomes a logged 500)
    starlette HTTPException      404 unknown route, 405 wrong method -> Problem
    RequestValidationError       FastAPI's own 422 -> Problem with errors[].pointer
"""
