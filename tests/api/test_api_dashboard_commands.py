"""The dashboard's command buttons send a body of the charger's OCPP version.

The builders in ``api/dashboard/app.js`` (from ``const RESET_201`` to ``runCommand``) run in
Node with the form's inputs stubbed; every body they make for a 1.6 and a 2.0.1 charger
must pass the API's own check for that version (``checked_payload``), so a button never
sends a 1.6 body to a 2.0.1 station. Skipped where no Node is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from api.routes.commands import CATALOG, checked_payload

NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

BUILDERS = """
const source = require("fs").readFileSync(process.argv[1], "utf8");
const start = source.indexOf("const RESET_201");
const end = source.indexOf("async function runCommand(");
if (start < 0 || end < start) throw new Error("command builders not found in app.js");
const values = {"cmd-unlock-connector": "2", "cmd-schedule-connector": "2",
  "cmd-trigger-message": process.argv[2], "cmd-diagnostics-protocol": "http",
  "cmd-reservation-id": "7"};
const COMMANDS = new Function("$", "state", source.slice(start, end) + "\\nreturn COMMANDS;")(
  (id) => ({value: values[id]}), {});
const out = [];
for (const version of ["1.6", "2.0.1"]) {
  for (const [name, make] of Object.entries(COMMANDS)) {
    for (const type of name === "reset" ? ["Soft", "Hard"] : [undefined]) {
      out.push([version, name, make({dataset: {type}}, version === "2.0.1").payload]);
    }
  }
}
console.log(JSON.stringify(out));
"""


def bodies(trigger: str) -> list[tuple[str, str, dict[str, Any]]]:
    app_js = Path(str(resources.files("api.dashboard").joinpath("app.js")))
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", BUILDERS, str(app_js), trigger],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [tuple(row) for row in json.loads(done.stdout)]  # type: ignore[misc]


@pytest.mark.parametrize("trigger", ["StatusNotification", "DiagnosticsStatusNotification"])
def test_every_button_sends_a_body_of_the_charger_s_version(trigger: str) -> None:
    made = bodies(trigger)
    assert {name for _, name, _ in made} >= {"reset", "unlock", "trigger", "clear-cache"}
    for version, name, payload in made:
        command = CATALOG[version].get(name)
        assert command is not None, (version, name)
        checked_payload(command, payload)  # raises the API's 422 when it does not fit
    by_key = {(v, n, json.dumps(p, sort_keys=True)) for v, n, p in made}
    assert ("2.0.1", "reset", '{"type": "OnIdle"}') in by_key
    assert ("1.6", "reset", '{"type": "Soft"}') in by_key
