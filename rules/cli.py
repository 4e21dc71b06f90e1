"""``chargetwin rules check FILE...`` and ``chargetwin rules test FILE...``, as promtool.

Both print one ``file:line: message`` per finding and return the exit code: 0 when every
file is fine, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path

from rules.documents import RuleFileError, read
from rules.files import load_document
from rules.testing import run_test_file


def check_files(paths: Iterable[str | Path]) -> int:
    """Validate rule files; print each finding with its line."""
    status = 0
    for path in map(Path, paths):
        try:
            rules, _ = load_document(read(path))
        except RuleFileError as exc:
            status = 1
            for finding in exc.findings:
                print(finding, file=sys.stderr)
            continue
        print(f"{path}: SUCCESS: {len(rules)} rules found")
    return status


def test_files(paths: Iterable[str | Path]) -> int:
    """Run rule unit-test files; print each failed expectation with its line."""
    status = 0
    for path in map(Path, paths):
        try:
            failures = asyncio.run(run_test_file(path))
        except RuleFileError as exc:
            failures = exc.findings
        if failures:
            status = 1
            print(f"{path}: FAILED", file=sys.stderr)
            for finding in failures:
                print(f"  {finding}", file=sys.stderr)
        else:
            print(f"{path}: SUCCESS")
    return status


test_files.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
