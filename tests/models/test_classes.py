"""htc class lists and colours used in exported model cards (no torch needed)."""

from __future__ import annotations

import pytest

from edge.models.classes import HTC_19_CLASSES, XENO_12_CLASSES, htc_class_list


def test_19_classes_follow_htc_ids():
    entries = htc_class_list(19)
    assert [e["id"] for e in entries] == list(range(19))
    # FACTS.md, "htc models": 0 background, 1 heart, ..., 18 kidney_with_Gerotas_fascia
    assert entries[1]["name"] == "heart" and entries[3]["name"] == "liver"
    assert entries[14]["name"] == "pancreas" and entries[18]["name"] == "kidney_with_Gerotas_fascia"
    assert entries[1]["color"] == [0x1F, 0x77, 0xB4]   # htc paper palette, heart #1f77b4


def test_12_xeno_classes():
    entries = htc_class_list(12)
    assert tuple(e["name"] for e in entries) == XENO_12_CLASSES
    assert XENO_12_CLASSES[0] == "background" and XENO_12_CLASSES[11] == "peritoneum"
    assert set(XENO_12_CLASSES) <= set(HTC_19_CLASSES)
    for e in entries:
        assert len(e["color"]) == 3 and all(0 <= v <= 255 for v in e["color"])


def test_other_class_counts_are_refused():
    with pytest.raises(ValueError, match="htc models have 19 .* or 12 .* got 7"):
        htc_class_list(7)
