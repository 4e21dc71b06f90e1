"""Drive a charger toward its desired state: shadow delta -> OCPP calls -> reported state.

The twin publishes the delta (desired leaves that differ from reported) whenever desired
changes and when the charger comes back online. Per connection one reconciler task runs
at a time: a delta (or a finished boot) wakes it, it applies the latest delta, and a delta
arriving meanwhile wakes it again afterwards.

A value the charger refuses is remembered in memory for the connection and reported under
``reported.refused`` (so the operator sees why the delta stays); it is not sent again until
the desired value changes. A new connection starts with an empty memory and tries once
more: the charger may have new firmware after a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bridge.charging_limits import OCPP16, ChargingLimits, ProfileMessages, TransactionId
from bridge.errors import (
    CallErrorReceived,
    CallTimeoutError,
    ChargerGoneError,
    InvalidCallError,
    InvalidResponseError,
)
from bridge.firmwares import FirmwareReconciler, FirmwareSupport
from bridge.reports import Reporter
from bridge.times import ChargerClock, now

log = logging.getLogger(__name__)

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

ACCEPTED_CONFIG = frozenset({"Accepted", "RebootRequired"})
# Write-only keys holding a secret (OCPP 1.6 security whitepaper: AuthorizationKey is the
# Basic auth password, never returned by GetConfiguration): never mirrored into the shadow,
# which every viewer reads, even from a charger that returns it or a one-off command.
SECRET_CONFIG_KEYS = frozenset({"AuthorizationKey"})


# More connectors than any charger has: a count above it is not believed (and never turned
# into that many TriggerMessages).
MAX_CONNECTORS = 64


def config_text(value: Any) -> str | None:
    """A desired config value as the string ChangeConfiguration carries; None if not scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def connector_count(config: dict[str, str]) -> int | None:
    """The charger's NumberOfConnectors (a required core key, OCPP 1.6 section 9.1.23) from
    its configuration; None when absent or not a sensible count."""
    try:
        count = int(config["NumberOfConnectors"])
    except (KeyError, ValueError):
        return None
    return count if 0 < count <= MAX_CONNECTORS else None


class Reconciler:
    """Applies one charger's config, availability, firmware and charging-limit delta, one
    run at a time."""

    # The request shapes that carry desired charging limits (bridge.charging_limits).
    profile_messages: ProfileMessages = OCPP16

    # How firmware is carried (OCPP 2.0.1 stations have their own UpdateFirmware).
    firmware_reconciler: type[FirmwareReconciler] = FirmwareReconciler

    def __init__(
        self,
        charger_id: str,
        request: Request,
        reporter: Reporter,
        firmware: FirmwareSupport | None = None,
        clock: ChargerClock | None = None,
        accepted: asyncio.Event | None = None,
    ) -> None:
        self.charger_id = charger_id
        self._request = request
        self._reporter = reporter
        # Orders availability reports with the StatusNotifications of the same connector.
        self._clock = clock
        # Nothing is sent before the charger is accepted (OCPP 1.6 section 4.2).
        self._accepted = accepted
        self._delta: dict[str, Any] = {}
        self._metadata: dict[str, Any] = {}
        self.firmware = (
            self.firmware_reconciler(charger_id, request, reporter, firmware) if firmware else None
        )
        self._wake = asyncio.Event()
        # What the charger has (from GetConfiguration, StatusNotification, accepted calls).
        self._known: dict[tuple[str, str], str] = {}
        # Values the charger refused or scheduled: not sent again while desired stays.
        self._refused: dict[tuple[str, str], str] = {}
        self._firmware_noted = False
        self.limits = ChargingLimits(charger_id, request, reporter, self.profile_messages)
        self.runs = 0

    # --- inputs --------------------------------------------------------------------------
    def on_delta(self, message: Mapping[str, Any]) -> None:
        """A delta message from the twin: it replaces the previous one (it is complete)."""
        state = message.get("state")
        if not isinstance(state, dict):
            log.warning("%s: delta without a state object ignored", self.charger_id)
            return
        self._delta = state
        self.limits.on_delta(message)
        self._forget_undesired()
        metadata = message.get("metadata")
        self._metadata = metadata if isinstance(metadata, dict) else {}
        self._wake.set()

    def _forget_undesired(self) -> None:
        """Refusals of leaves the delta no longer holds explain nothing: desired was
        deleted or reached another way. Cleared, so no refusal outlives what was desired."""
        stale: dict[str, dict[str, None]] = {}
        for section, key in list(self._refused):
            leaves = self._delta.get(section)
            if not isinstance(leaves, dict) or key not in leaves:
                del self._refused[(section, key)]
                stale.setdefault(section, {})[key] = None
        if stale:
            self._reporter.report(self.charger_id, {"refused": stale}, now())

    def poke(self) -> None:
        """Run again with the delta we have (after boot and GetConfiguration)."""
        self._wake.set()

    def booted(self) -> None:
        """The charger (re)booted: what it had is unknown until it reports again (its
        connectors' availability; its configuration comes with the GetConfiguration that
        follows), and what it refused is tried once more, as on a new connection."""
        self._known = {leaf: v for leaf, v in self._known.items() if leaf[0] != "availability"}
        self._refused.clear()
        self.limits.booted()

    def transaction_started(
        self, connector_id: int, transaction_id: TransactionId, at: float
    ) -> None:
        """A transaction runs on the connector (its StartTransaction, received at ``at``,
        was answered): a limit set from now on binds it with a TxProfile."""
        self.limits.transaction_started(connector_id, transaction_id, at)
        if self.limits.pending():
            self._wake.set()

    def transaction_stopped(self, transaction_id: TransactionId) -> None:
        if self.limits.transaction_stopped(transaction_id):
            self._wake.set()

    def observe(self, section: str, key: str, value: str) -> None:
        """The charger told us it has ``value`` (config key or connector availability)."""
        self._known[(section, key)] = value

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """The connection's reconciliation task: never two runs at once."""
        while True:
            await self._wake.wait()
            if self._accepted is not None:
                await self._accepted.wait()
            self._wake.clear()
            try:
                await self.reconcile_once()
            except (CallTimeoutError, ChargerGoneError) as exc:
                # An unresponsive charger: try again at the next delta or boot.
                log.warning("%s: reconciliation stopped: %s", self.charger_id, exc)
            except Exception:
                # A bug must not end reconciliation for the rest of the connection.
                log.exception("%s: reconciliation run failed", self.charger_id)

    async def reconcile_once(self) -> None:
        self.runs += 1
        config = self._delta.get("config")
        if isinstance(config, dict):
            for key, value in config.items():
                await self._apply_config(str(key), value)
        availability = self._delta.get("availability")
        if isinstance(availability, dict):
            for connector, value in availability.items():
                await self._apply_availability(str(connector), value)
        firmware = self._delta.get("firmware")
        if isinstance(firmware, dict) and isinstance(firmware.get("version"), str):
            if self.firmware is not None:
                await self.firmware.reconcile(firmware["version"], self._firmware_asked_at())
            elif not self._firmware_noted:
                self._firmware_noted = True
                log.info("%s: firmware delta ignored: no firmware catalog", self.charger_id)
        if self.limits.pending():
            await self.limits.reconcile()

    def _firmware_asked_at(self) -> float:
        """When the operator last wrote ``desired.firmware.version`` (delta metadata)."""
        leaf = (self._metadata.get("firmware") or {}).get("version")
        stamp = leaf.get("timestamp") if isinstance(leaf, dict) else None
        return float(stamp) if isinstance(stamp, int | float) else 0.0

    def _settled(self, section: str, key: str, value: str) -> bool:
        leaf = (section, key)
        return self._known.get(leaf) == value or self._refused.get(leaf) == value

    async def _apply_config(self, key: str, desired: Any) -> None:
        value = config_text(desired)
        if value is None:
            shown = json.dumps(desired)
            if self._refused.get(("config", key)) != shown:
                self._refused[("config", key)] = shown
                self.record_config(key, shown, "Invalid", "a config value must be a scalar")
            return
        if self._settled("config", key, value):
            return
        log.info("%s: ChangeConfiguration %s=%r", self.charger_id, key, value)
        try:
            answer = await self._request("ChangeConfiguration", {"key": key, "value": value})
        except InvalidCallError as exc:
            self.record_config(key, value, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self.record_config(key, value, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self.record_config(key, value, "InvalidResponse", str(exc))
            return
        self.record_config(key, value, str(answer.get("status")))

    async def _apply_availability(self, connector: str, desired: Any) -> None:
        value = str(desired)
        if self._settled("availability", connector, value):
            return
        try:
            connector_id = int(connector)
        except ValueError:
            self.record_availability(connector, value, "Invalid", "connector must be a number")
            return
        log.info("%s: ChangeAvailability %s=%s", self.charger_id, connector, value)
        try:
            answer = await self._request(
                "ChangeAvailability", {"connectorId": connector_id, "type": value}
            )
        except InvalidCallError as exc:
            self.record_availability(connector, value, "Invalid", str(exc))
            return
        except CallErrorReceived as exc:
            self.record_availability(connector, value, "CallError", exc.error_code)
            return
        except InvalidResponseError as exc:
            self.record_availability(connector, value, "InvalidResponse", str(exc))
            return
        self.record_availability(connector, value, str(answer.get("status")))

    # --- results ---------------------------------------------------------------------------
    def record_configuration(
        self,
        answer: Mapping[str, Any],
        *,
        complete: bool = False,
        held: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Report a GetConfiguration answer into ``reported.config`` (keys with a value).

        ``complete``: the answer to a GetConfiguration without keys, which lists every key
        (OCPP 1.6 section 5.8); it replaces ``reported.config`` whole, so a key the charger
        no longer has (a factory reset, new firmware) does not stay reported for ever.
        ``held``: what the shadow holds now, when known; then only what differs is written
        (changed and new keys, null for keys gone), nothing when nothing did (a charger's
        configuration rarely changes across a reboot, and a whole configuration written
        again at every boot was two shadow writes of every reboot). Without it the old
        configuration is cleared and the answer written whole.
        """
        values: dict[str, str] = {}
        for entry in answer.get("configurationKey") or []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("value"), str)
                and entry.get("key") not in SECRET_CONFIG_KEYS
            ):
                values[str(entry["key"])] = entry["value"]
        at = now()
        changed: dict[str, str | None] = dict(values)
        if complete:
            self._known = {leaf: v for leaf, v in self._known.items() if leaf[0] != "config"}
            if held is None:
                self._reporter.report(self.charger_id, {"config": None}, at)
                at += 1e-6  # the values land after the clearing, in the twin's order
            else:
                changed = {k: v for k, v in values.items() if held.get(k) != v}
                changed.update({k: None for k in held if k not in values})
        for key, value in values.items():
            self._known[("config", key)] = value
        if changed:
            self._reporter.report(self.charger_id, {"config": changed}, at)
        return values

    def record_config(self, key: str, value: str, status: str, reason: str | None = None) -> None:
        """Report a ChangeConfiguration outcome and remember it for this connection."""
        at = now()
        if status in ACCEPTED_CONFIG:
            self._known[("config", key)] = value
            self._refused.pop(("config", key), None)
            reported: dict[str, Any] = {
                "config": {key: value},
                "refused": {"config": {key: None}},
            }
            if status == "RebootRequired":
                reported["rebootRequired"] = True
        else:
            log.warning(
                "%s: config %s=%r refused: %s%s",
                self.charger_id,
                key,
                value,
                status,
                f" ({reason})" if reason else "",
            )
            self._refused[("config", key)] = value
            reported = {"refused": {"config": {key: _refusal(value, status, at, reason)}}}
        self._reporter.report(self.charger_id, reported, at)

    # --- one-off operator commands ----------------------------------------------------------
    # A command's outcome goes to the command's answer; only what the charger now *has* goes
    # into reported state. A refusal is never recorded for a command: ``reported.refused``
    # explains why a *desired* value stays in the delta, and nobody desired this one (a
    # refused one-off would otherwise sit in the shadow for good, for a key nobody wants).
    def command_config(self, key: str, value: str, status: str) -> None:
        """The outcome of a ``change-configuration`` command."""
        if status not in ACCEPTED_CONFIG or key in SECRET_CONFIG_KEYS:
            return
        self._known[("config", key)] = value
        reported: dict[str, Any] = {"config": {key: value}}
        if status == "RebootRequired":
            reported["rebootRequired"] = True
        if self._wanted("config", key) == value:
            # The command gave the charger the desired value it had refused: the refusal
            # no longer explains anything.
            self._refused.pop(("config", key), None)
            reported["refused"] = {"config": {key: None}}
        self._reporter.report(self.charger_id, reported, now())

    def command_availability(self, connector: str, value: str, status: str) -> None:
        """The outcome of a ``change-availability`` command (Scheduled: nothing changed yet)."""
        if status != "Accepted":
            return
        leaf = ("availability", connector)
        self._known[leaf] = value
        reported: dict[str, Any] = {"availability": {connector: value}}
        if self._wanted("availability", connector) == value:
            self._refused.pop(leaf, None)
            reported["refused"] = {"availability": {connector: None}}
        self._reporter.report(self.charger_id, reported, self._stamp(connector))

    def _stamp(self, connector: str) -> float:
        at = now()
        return at if self._clock is None else self._clock.state_stamp(connector, at)

    def _wanted(self, section: str, key: str) -> str | None:
        """The desired value of a leaf as the latest delta has it (None: not in the delta)."""
        leaves = self._delta.get(section)
        if not isinstance(leaves, dict) or key not in leaves:
            return None
        return config_text(leaves[key]) if section == "config" else str(leaves[key])

    def record_availability(
        self, connector: str, value: str, status: str, reason: str | None = None
    ) -> None:
        """Report a ChangeAvailability outcome and remember it for this connection.

        Scheduled (OCPP 1.6 section 5.2: the change waits for a transaction to end) is not
        sent again; the StatusNotification that follows the change reports the new value.
        """
        at = self._stamp(connector)
        leaf = ("availability", connector)
        reported: dict[str, Any]
        if status == "Accepted":
            self._known[leaf] = value
            self._refused.pop(leaf, None)
            reported = {
                "availability": {connector: value},
                "refused": {"availability": {connector: None}},
            }
        elif status == "Scheduled":
            self._refused[leaf] = value
            reported = {"refused": {"availability": {connector: None}}}
        else:
            log.warning(
                "%s: availability %s=%s refused: %s", self.charger_id, connector, value, status
            )
            self._refused[leaf] = value
            reported = {
                "refused": {"availability": {connector: _refusal(value, status, at, reason)}}
            }
        self._reporter.report(self.charger_id, reported, at)


def _refusal(value: str, status: str, at: float, reason: str | None) -> dict[str, Any]:
    refusal: dict[str, Any] = {"value": value, "status": status, "at": at}
    if reason:
        refusal["reason"] = reason
    return refusal
