"""The composition root: the ``chargetwin`` command (``cli``) and the runner that starts a
process's components in order and stops them in reverse (``runner``).

Layers read top-down: ``launch`` → the components (``bridge``, ``twin``, ``rules``,
``fleet``, ``api``) → the shared infrastructure in ``chargetwin`` (settings, MQTT client,
database, topics, outbox, correlation, broker, leadership). Nothing below imports upward.
"""
