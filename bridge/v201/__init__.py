"""OCPP 2.0.1 on the bridge's endpoint, beside 1.6, with one set of shadow semantics.

A charger that offers ``ocpp2.0.1`` first (bridge.server) is served by these modules; the
shadow, topics and session records are the 1.6 ones wherever the meaning is the same
(``docs/ocpp201.md`` has the mapping). One concept per module:

- ``endpoints``     — OCPP-J 2.0.1 framing: 2.0.1 error codes, compiled schema checks.
- ``handlers``      — every charger-initiated 2.0.1 message: answered and mirrored.
- ``devicemodel``   — NotifyReport assembly (the key scheme: ``twin.devicemodel``).
- ``transactions``  — TransactionEvent into the shared session records, idempotent by seqNo.
- ``reconcilers``   — desired config -> SetVariables, availability -> ChangeAvailability.
- ``charging_profiles`` — the 2.0.1 shapes of desired charging limits (SetChargingProfile).
- ``firmwares``     — desired firmware -> UpdateFirmware, progress by requestId.
- ``credentials``   — password rotation -> SetVariables SecurityCtrlr/BasicAuthPassword.
- ``commands``      — operator command names and their 2.0.1 actions.
- ``connections``   — one station's connection: receive loop, boot sequence, owned tasks.
"""
