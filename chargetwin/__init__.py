"""ChargeTwin composition root: settings, the CLI and the pieces every component shares.

The components themselves live in the top-level packages ``twin``, ``bridge``, ``rules``
and ``api``; they talk to each other only through MQTT (``chargetwin.mqtt``,
``chargetwin.topics``) and the stores.
"""

__version__ = "0.1.0"
