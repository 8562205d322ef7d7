from __future__ import annotations

import pytest

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders import DROP, DecoderSpecError
from ebpf_sidecar.decoders.static_map import static_map


def test_table_decoder_never_raises() -> None:
    decode = static_map({"map": {7: "seven"}, "default": "?"}).decode
    assert decode([7, 8, "x", None]) == ["seven", "?", "?", "?"]


def test_table_from_the_manifest() -> None:
    d = decoders.resolve({"static_map": {"map": {0: "read", 1: "write"}, "drop_unknown": False}})
    assert decoders.apply([d], [0, 1, 5]) == ["read", "write", "unknown:5"]
    assert d.failure == "unknown:<n>"
    d = decoders.resolve({"static_map": {"map": {"0x10": "x"}, "default": "other"}})
    assert decoders.apply([d], [16, 1]) == ["x", "other"]


def test_drop_unknown_drops_the_entry() -> None:
    d = decoders.resolve({"static_map": {"map": {0: "read"}, "drop_unknown": True}})
    assert decoders.apply([d], [0, 7, None]) == ["read", DROP, DROP]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, r"static_map\.map: missing"),
        ({"map": []}, r"static_map\.map: must be a non-empty mapping"),
        ({"map": {"zero": "x"}}, r"static_map\.map\.zero: key 'zero' is not an integer"),
        ({"map": {0: None}}, r"static_map\.map\.0: value None is not a non-empty name"),
        ({"map": {0: "x"}, "drop_unknown": "yes"}, r"static_map\.drop_unknown: 'yes'"),
        # ebpf_exporter's option of this name means something else: say what to use
        (
            {"map": {0: "x"}, "allow_unknown": True},
            r"static_map\.allow_unknown: not an option of this static_map \(in ebpf_exporter it "
            r"keeps unknown numbers as their own names\); .* set drop_unknown: true",
        ),
        ({"map": {0: "x"}, "default": 3}, r"static_map\.default: 3 is not a string"),
        ({"map": {0: "x"}, "tabel": {}}, r"static_map\.tabel: unknown option"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], error: str) -> None:
    with pytest.raises(DecoderSpecError, match=error):
        decoders.resolve({"static_map": options})


def test_plain_decoders_take_no_options() -> None:
    with pytest.raises(DecoderSpecError, match=r"decoder 'disk_direction' takes no options"):
        decoders.resolve({"disk_direction": {"x": 1}})
    with pytest.raises(DecoderSpecError, match=r"unknown decoder 'nope'; known: "):
        decoders.resolve("nope")
    with pytest.raises(DecoderSpecError, match=r"neither a decoder name"):
        decoders.resolve({"a": 1, "b": 2})
