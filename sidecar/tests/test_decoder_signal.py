from ebpf_sidecar import decoders


def test_names_signals_as_the_kernel_numbers_them() -> None:
    assert decoders.apply(["signal"], [9, 11, 15, 6, 0]) == [
        "SIGKILL",
        "SIGSEGV",
        "SIGTERM",
        "SIGABRT",
        "",
    ]


def test_realtime_and_unknown_numbers() -> None:
    assert decoders.apply(["signal"], [34, 36, 99]) == ["SIGRTMIN", "SIGRTMIN+2", "SIG99"]
