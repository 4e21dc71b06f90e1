"""Password rotation for an OCPP 2.0.1 station: SetVariables ``SecurityCtrlr/BasicAuthPassword``.

:class:`bridge.credentials.ChargerCredentials` decides when (after an accepted boot, when the
API asks, again after a boot while the rotation is open) and records the outcome in the
registry, the shadow and the audit log; this subclass only carries the password the 2.0.1
way. The value is the password itself (OCPP 2.0.1 part 2, SecurityCtrlr.BasicAuthPassword:
a string of at most 40 characters, WriteOnly, so it never comes back in a report), set on
the Actual attribute; the station's ``attributeStatus`` is the answer (Accepted or
RebootRequired keep both passwords valid until the station connects with the new one).
"""

from __future__ import annotations

from bridge.credentials import ChargerCredentials

COMPONENT = "SecurityCtrlr"
VARIABLE = "BasicAuthPassword"


class StationCredentials(ChargerCredentials):
    """:class:`~bridge.credentials.ChargerCredentials` with the 2.0.1 SetVariables."""

    carrier = f"{COMPONENT}/{VARIABLE}"

    async def _send(self, secret: str) -> str:
        data = {
            "attributeValue": secret,
            "component": {"name": COMPONENT},
            "variable": {"name": VARIABLE},
        }
        answer = await self._request("SetVariables", {"setVariableData": [data]})
        results = answer.get("setVariableResult") or [{}]
        result = results[0] if isinstance(results[0], dict) else {}
        return str(result.get("attributeStatus"))
