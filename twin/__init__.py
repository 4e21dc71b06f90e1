"""Device shadows: the source of truth for what every charger is and what it should be.

Modules: ``documents`` (the shadow document and its merge, delta and metadata rules),
``schemas`` (the desired-state contract), ``stores`` (persistence on SQLite or
PostgreSQL), ``registry`` (registered chargers and their credentials), ``service`` (the
MQTT shadow service and presence).
"""
