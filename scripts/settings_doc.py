"""Print docs/configuration.md from the Settings model (the test suite checks it is current).

.venv/bin/python scripts/settings_doc.py > docs/configuration.md
"""

from __future__ import annotations

from chargetwin.settings import Settings

HEADER = """# Configuration

Every option is a CLI option of `chargetwin up|twin|rules|fleet|api|bridge|demo` and an
environment variable; the CLI wins over the environment. A bad value stops the process at
start-up with the option, the variable and the reason. This page is generated from
`chargetwin/settings.py` by `scripts/settings_doc.py`; the tests fail when it is out of date.

| option | variable | default | meaning |
|---|---|---|---|
"""


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `--{name.replace('_', '-')}` | `CHARGETWIN_{name.upper()}` | {default} | "
            f"{description} |"
        )
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
