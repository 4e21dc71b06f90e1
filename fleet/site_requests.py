"""A site's energy state over MQTT, shaped like a charger's shadow requests.

    {prefix}/sites/{site}/energy/get      {"clientToken"?}
        -> .../get/accepted     {"site", "desired", "version", "reported", "clientToken"}
        -> .../get/rejected     {"code": 404 | 503, "message", "clientToken"}
    {prefix}/sites/{site}/energy/update   {"desired": {merge patch}, "version"?, "clientToken"?}
        -> .../update/accepted  {"site", "desired", "version", "clientToken"}
        -> .../update/rejected  {"code": 400 | 404 | 409 | 422 | 503, "message",
                                 "errors"? [{"pointer", "message"}], "clientToken"}

Served by the leading ``fleet`` process (the one that runs the allocator, woken at once by
an accepted update), so a script or a building's energy manager can steer a site without
the HTTP API. Every update is audited as the API's (chargerId ``site:<site>``, action
``site.energy``, actor ``mqtt``). A request published while no process leads is lost (QoS
1 to a subscriber that is not there yet): the requester times out and asks again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from chargetwin.audit import AuditLog, Outcome
from chargetwin.database import DatabaseError
from chargetwin.json_text import JsonTextError, parse_json
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from fleet.sites import SiteNotFound, SiteStore, VersionConflict

log = logging.getLogger(__name__)

ACTION = "site.energy"
ACTOR = "mqtt"
MAX_REQUEST_BYTES = 128 * 1024


class _Refused(Exception):
    def __init__(self, code: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors


@dataclass
class SiteRequests:
    sites: SiteStore
    audit: AuditLog
    mqtt: MqttClient
    topics: Topics
    on_change: Callable[[], None]

    def _filters(self) -> dict[str, Any]:
        base = f"{self.topics.prefix}/sites/+/energy"
        return {f"{base}/get": self._on_get, f"{base}/update": self._on_update}

    async def start(self) -> None:
        for topic_filter, handler in self._filters().items():
            await self.mqtt.subscribe_acked(topic_filter, handler, qos=1)

    async def stop(self) -> None:
        for topic_filter in self._filters():
            self.mqtt.unsubscribe(topic_filter)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SiteRequests]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def _site_of(self, topic: str) -> str:
        return topic[len(f"{self.topics.prefix}/sites/") :].split("/", 1)[0]

    def _answer(self, topic: str, result: str, body: dict[str, Any]) -> None:
        self.mqtt.publish(f"{topic}/{result}", json.dumps(body, allow_nan=False), qos=1)

    async def _on_get(self, topic: str, payload: bytes) -> None:
        site = self._site_of(topic)
        token: Any = None
        try:
            token = _request(payload).get("clientToken")
            energy = await self.sites.energy(site)
            reported = await self.sites.report(site)
        except _Refused as exc:
            self._refuse(topic, exc, token)
            return
        except SiteNotFound as exc:
            self._refuse(topic, _Refused(404, str(exc)), token)
            return
        except DatabaseError as exc:
            self._refuse(topic, _Refused(503, f"the database is unavailable: {exc}"), token)
            return
        self._answer(topic, "accepted", {
            "site": site, "desired": energy.desired, "version": energy.version,
            "reported": reported, "clientToken": token,
        })  # fmt: skip

    async def _on_update(self, topic: str, payload: bytes) -> None:
        site = self._site_of(topic)
        token: Any = None
        patch: Any = None
        try:
            request = _request(payload)
            token = request.get("clientToken")
            patch = request.get("desired")
            version = request.get("version")
            if not isinstance(patch, dict):
                raise _Refused(400, "give the merge patch of the desired state as 'desired': {...}")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                raise _Refused(400, "'version' must be an integer")
            energy, errors = await self.sites.patch_energy(
                site, patch, actor=ACTOR, expected_version=version
            )
            if errors:
                problems = [{"pointer": p, "message": m} for p, m in errors]
                raise _Refused(422, "the desired energy state after the patch is not valid",
                               problems)  # fmt: skip
        except _Refused as exc:
            await self._audit(site, patch, _outcome(exc.code), exc.code, exc.message)
            self._refuse(topic, exc, token)
            return
        except SiteNotFound as exc:
            self._refuse(topic, _Refused(404, str(exc)), token)
            return
        except VersionConflict as exc:
            await self._audit(site, patch, Outcome.PRECONDITION_FAILED, 409, str(exc))
            self._refuse(topic, _Refused(409, str(exc)), token)
            return
        except DatabaseError as exc:
            self._refuse(topic, _Refused(503, f"the database is unavailable: {exc}"), token)
            return
        await self._audit(site, patch, Outcome.ACCEPTED, 200, None, energy.version)
        self.on_change()
        self._answer(topic, "accepted", {
            "site": site, "desired": energy.desired, "version": energy.version,
            "clientToken": token,
        })  # fmt: skip

    def _refuse(self, topic: str, exc: _Refused, token: Any) -> None:
        body: dict[str, Any] = {"code": exc.code, "message": exc.message, "clientToken": token}
        if exc.errors:
            body["errors"] = exc.errors
        self._answer(topic, "rejected", body)

    async def _audit(
        self,
        site: str,
        patch: Any,
        outcome: Outcome,
        status: int,
        detail: str | None,
        version: int | None = None,
    ) -> None:
        try:
            await self.audit.record(
                actor=ACTOR, actor_id=None, role="mqtt", charger_id=f"site:{site}",
                action=ACTION, patch=patch if isinstance(patch, dict) else None,
                outcome=outcome, status=status, version=version, detail=detail,
            )  # fmt: skip
        except DatabaseError as exc:
            log.warning("site %s: energy change not audited: %s", site, exc)


def _request(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_REQUEST_BYTES:
        raise _Refused(413, f"a request is at most {MAX_REQUEST_BYTES} bytes")
    if not payload:
        return {}
    try:
        request = parse_json(payload)
    except JsonTextError as exc:
        raise _Refused(400, f"the request is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise _Refused(400, "the request must be a JSON object")
    return request


def _outcome(code: int) -> Outcome:
    return Outcome.INVALID if code in (400, 413, 422) else Outcome.REJECTED
