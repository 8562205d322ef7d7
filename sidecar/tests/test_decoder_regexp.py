from __future__ import annotations

import pytest

from ebpf_sidecar import decoders
from ebpf_sidecar.decoders import DROP, DecoderSpecError


def test_keep_only_matching_entries() -> None:
    keep = decoders.resolve({"regexp": {"pattern": "^nginx", "action": "keep"}})
    assert decoders.apply([keep], ["nginx", "nginx-worker", "bash", "my-nginx"]) == [
        "nginx",
        "nginx-worker",
        DROP,
        DROP,
    ]
    assert keep.output is None  # a filter keeps its input's type
    assert keep.spec == 'regexp{"action":"keep","pattern":"^nginx"}'


def test_drop_matching_entries_and_match_bytes_and_ints() -> None:
    drop = decoders.resolve({"regexp": {"pattern": "^(kworker|ksoftirqd)", "action": "drop"}})
    assert decoders.apply([drop], [b"kworker/0:1\0\0", b"bash\0", 42]) == [DROP, b"bash\0", 42]


def test_later_decoders_never_see_dropped_entries() -> None:
    keep = decoders.resolve({"regexp": {"pattern": "^b"}})  # action defaults to keep
    assert decoders.apply(["string", keep, "hex"], [b"bash\0", b"zsh\0"]) == ["", DROP]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"regexp": {}}, r"regexp\.pattern: missing"),
        ({"regexp": {"pattern": "("}}, r"regexp\.pattern: '\(' is not a valid regular"),
        ({"regexp": {"pattern": 5}}, r"regexp\.pattern: 5 is not a string"),
        ({"regexp": {"pattern": "x", "action": "maybe"}}, r"regexp\.action: 'maybe' is not keep"),
        ({"regexp": {"pattern": "x", "actoin": "drop"}}, r"regexp\.actoin: unknown option"),
        ("regexp", r"decoder 'regexp' needs options"),
        ({"regexp": "x"}, r"regexp: options must be a mapping"),
    ],
)
def test_bad_options_name_the_option(entry: object, error: str) -> None:
    with pytest.raises(DecoderSpecError, match=error):
        decoders.resolve(entry)
