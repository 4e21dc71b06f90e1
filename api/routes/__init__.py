"""One router per resource, each mounted under ``/api/v1`` by :func:`api.app.create_app`."""
