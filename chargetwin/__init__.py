"""ChargeTwin's shared infrastructure: settings, the MQTT client and its outbox, the
database, topics, correlation, the embedded broker, leadership, the audit log.

The components live in the top-level packages ``bridge``, ``twin``, ``rules``, ``fleet``
and ``api``; they talk to each other only through MQTT (``chargetwin.mqtt``,
``chargetwin.topics``) and the stores. Modules here import no component; the composition
root (the ``chargetwin`` command) is the package ``launch``.
"""

__version__ = "0.1.0"
