"""Charger ids: one documented alphabet, safe as a URL segment, a Basic auth user, an MQTT
topic level and a folder name."""

from __future__ import annotations

import re

import pytest

from chargetwin.topics import InvalidTopicError, Topics, validate_charger_id


@pytest.mark.parametrize("charger_id", ["CP-0001", "cp_1", "a", "ABB.Terra.54", "a..b", "9" * 48])
def test_valid_ids(charger_id: str) -> None:
    assert validate_charger_id(charger_id) == charger_id


@pytest.mark.parametrize(
    "charger_id",
    [
        "",
        ".",
        "..",  # the parent folder
        ".hidden",
        "a:b",  # cannot be a Basic auth user id (RFC 7617 section 2)
        "a/b",
        "a+b",
        "a#b",  # MQTT level separator and wildcards
        "$SYS",  # reserved MQTT topics
        "-rf",
        "_x",
        "a b",
        "é",
        "9" * 49,
        "a\n",
    ],
)
def test_invalid_ids_say_the_alphabet(charger_id: str) -> None:
    with pytest.raises(
        InvalidTopicError, match=re.escape("A-Z a-z 0-9 . _ -, starting with a letter")
    ):
        validate_charger_id(charger_id)


def test_site_energy_topics_refuse_sites_that_are_no_topic_level() -> None:
    topics = Topics("ct")
    assert topics.site_energy_reported("depot-1") == "ct/sites/depot-1/energy/reported"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(InvalidTopicError, match="not a valid MQTT topic level"):
            topics.site_energy_reported(bad)
    assert topics.site_of_energy_report("ct/sites/depot-1/energy/reported") == "depot-1"
    for other in ("ct/sites/energy/reported", "ct/sites/a/b/energy/reported",
                  "ct/sites/a/energy/get", "other/sites/a/energy/reported"):  # fmt: skip
        assert topics.site_of_energy_report(other) is None
