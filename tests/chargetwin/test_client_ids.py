"""MQTT client ids: one rule for every component, unique among running processes, the same
after a restart where a persistent session must come back (twin, rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chargetwin.mqtt import InstanceSlot, client_id_for, host_name


def test_client_id_with_a_base_is_the_operators_name() -> None:
    assert client_id_for("rules", "site-a") == "site-a-rules"
    assert client_id_for("twin", "site-a", slot=None) == "site-a-twin"


def test_client_id_without_a_slot_is_new_at_every_start() -> None:
    ids = {client_id_for("api") for _ in range(20)}
    assert len(ids) == 20
    assert all(i.startswith(f"chargetwin-api-{host_name()}-") for i in ids)


def test_slots_are_unique_while_held_and_taken_back_after_release(tmp_path: Path) -> None:
    first = InstanceSlot.claim(tmp_path, "rules")
    second = InstanceSlot.claim(tmp_path, "rules")
    try:
        assert (first.number, second.number) == (0, 1)
        ids = client_id_for("rules", slot=first), client_id_for("rules", slot=second)
        assert ids[0] != ids[1]
        assert ids[0] == f"chargetwin-rules-{first.name}"
        assert first.name.startswith(f"{host_name()}-")
        # Another component counts its own slots.
        twin = InstanceSlot.claim(tmp_path, "twin")
        assert twin.number == 0 and twin.name not in (first.name, second.name)
        twin.release()
        first.release()
        again = InstanceSlot.claim(tmp_path, "rules")
        assert (again.number, again.name) == (0, first.name)  # the restart's old id
        again.release()
    finally:
        first.release()
        second.release()


def test_slot_names_differ_between_data_directories(tmp_path: Path) -> None:
    a = InstanceSlot.claim(tmp_path / "a", "rules")
    b = InstanceSlot.claim(tmp_path / "b", "rules")
    try:
        assert (a.number, b.number) == (0, 0)
        assert a.name != b.name
    finally:
        a.release()
        b.release()


def test_a_killed_process_frees_its_slot_for_its_restart(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from chargetwin.mqtt import InstanceSlot\n"
        f"slot = InstanceSlot.claim(Path({str(tmp_path)!r}), 'twin')\n"
        "print(slot.number, slot.name, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        number, name = child.stdout.readline().split()
        assert number == "0"
        held = InstanceSlot.claim(tmp_path, "twin")  # the child holds slot 0
        assert held.number == 1 and held.name != name
        held.release()
    finally:
        child.kill()  # kill -9: the kernel drops the lock
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    restarted = InstanceSlot.claim(tmp_path, "twin")
    try:
        assert (restarted.number, restarted.name) == (0, name)
    finally:
        restarted.release()


def test_all_slots_held_is_a_clear_error(tmp_path: Path) -> None:
    held = [InstanceSlot.claim(tmp_path, "rules", limit=2) for _ in range(2)]
    try:
        with pytest.raises(RuntimeError, match="all 2 rules instance slots"):
            InstanceSlot.claim(tmp_path, "rules", limit=2)
    finally:
        for slot in held:
            slot.release()
