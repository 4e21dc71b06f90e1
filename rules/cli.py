"""``chargetwin rules check FILE...`` and ``chargetwin rules test FILE...``, as promtool.

Both print one ``file:line: message`` per finding and return the exit code: 0 when every
file is fine, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path

from rules.documents import Finding, RuleFileError, read
from rules.files import load_document, load_rules
from rules.testing import run_test_file


def is_test_file(path: Path, data: object) -> bool:
    """A rule unit-test file: named ``*_test.yaml`` (as the rules loader skips them in a
    folder) or holding ``tests`` at the top, as promtool's test files do."""
    return path.stem.endswith("_test") or (isinstance(data, dict) and "tests" in data)


def _check_test_file(path: Path, data: object) -> list[Finding]:
    """A test file's shape and the rule files it names (running it is ``rules test``)."""
    doc_name = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        return [Finding(doc_name, 1, "a test file needs 'rule_files' and 'tests' (a list)")]
    rule_files = data.get("rule_files", [])
    if not isinstance(rule_files, list) or not rule_files:
        return [Finding(doc_name, 1, "a test file needs 'rule_files': the rule files it tests")]
    return load_rules(path.parent / str(f) for f in rule_files).findings


def check_files(paths: Iterable[str | Path]) -> int:
    """Validate rule files, and test files named among them; print each finding with its
    line (so ``rules check rules/pack/*.yaml`` checks the tests next to the rules too)."""
    status = 0
    for path in map(Path, paths):
        try:
            doc = read(path)
            if is_test_file(path, doc.data):
                if findings := _check_test_file(path, doc.data):
                    raise RuleFileError(findings)
                print(
                    f"{path}: SUCCESS: test file, {len(doc.data['tests'])} tests "
                    "(run them with 'rules test')"
                )
                continue
            rules, _ = load_document(doc)
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
