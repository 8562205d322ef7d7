"""A stream's profiles: each interval's samples as serialized OTLP ProfilesData.

The server gives a stream with a profiles request one of these for its own
instance of the sampling program: it fills the program's cgroup filter (if
the request names cgroups, again every interval), symbolizes the samples
counted so far every PREFETCH_S (so that processes shorter than an interval
get names), and at every snapshot reads the interval's samples
(:class:`ebpf_sidecar.profiles.StackReader`) into ``Snapshot.profiles``.
"""

from __future__ import annotations

import ctypes as ct
import logging
import threading
import time

from ebpf_sidecar import cgroup_filter, otlp_profiles
from ebpf_sidecar.decoders import cgroup
from ebpf_sidecar.plan import WantedProfiles
from ebpf_sidecar.profiles import StackReader
from ebpf_sidecar.programs import LoadedProgram
from ebpf_sidecar.symbols import Symbolizer
from ebpfreceiver.sidecar.v1 import sidecar_pb2 as pb

log = logging.getLogger(__name__)

# How often a profiles stream symbolizes the samples counted so far, between reads.
PREFETCH_S = 1.0


class ProfileStream:
    """A stream's profiles: the samples of each interval as serialized OTLP ProfilesData."""

    def __init__(self, wanted: WantedProfiles, loaded: LoadedProgram, symbolizer: Symbolizer):
        program = loaded.program
        assert program.profile is not None  # the judge checked
        self.per_container = wanted.per_container
        self.frequency = program.parameter_values(dict(loaded.parameters))[
            program.profile.frequency_parameter
        ]
        self.reader = StackReader(
            program, loaded.bpf, loaded.readers[program.profile.counts_map], symbolizer
        )
        self.since = loaded.attach_time_ns
        self.dropped = 0
        self._stopped = threading.Event()
        self._prefetcher: threading.Thread | None = None
        self.cgroups = wanted.cgroups
        self.bpf = loaded.bpf
        if self.cgroups:
            self._filter()
            self.bpf[b"filter_on"][ct.c_int(0)] = ct.c_uint32(1)

    def _filter(self) -> None:
        """Point the program's filter at the cgroups the request names, as they are now."""
        table = self.bpf[b"profiled_cgroups"]
        ids = cgroup_filter.resolve(self.cgroups, cgroup.PATHS.all())
        over = len(ids) - int(table.max_entries)
        if over > 0:
            log.warning("profiles: %d cgroups match the filter, %d are not sampled", len(ids), over)
            ids = set(sorted(ids)[: int(table.max_entries)])
        for key in [k for k in table if int(k.value) not in ids]:
            del table[key]
        for cid in ids:
            table[ct.c_uint64(cid)] = ct.c_uint8(1)

    def start_prefetching(self, closed: threading.Event) -> None:
        """Symbolize what is counted every PREFETCH_S until ``closed`` or
        :meth:`stop`: short-lived processes get names before their mappings
        are gone."""

        def loop() -> None:
            while not self._stopped.wait(PREFETCH_S) and not closed.is_set():
                try:
                    self.reader.prefetch()
                except Exception:
                    log.exception("symbolizing stack samples ahead of the read failed")

        self._prefetcher = threading.Thread(target=loop, name="profiles-prefetch", daemon=True)
        self._prefetcher.start()

    def stop(self) -> None:
        """End the prefetching, before the program it reads is released."""
        self._stopped.set()
        if self._prefetcher is not None:
            self._prefetcher.join()

    def add_to(self, snap: pb.Snapshot) -> None:
        now = time.time_ns()
        if self.cgroups:
            try:
                self._filter()  # containers started since the last read
            except Exception:
                log.exception("updating the profile's cgroup filter failed")
        try:
            read = self.reader.read()
        except Exception:  # a failed read must not end the stream's metrics
            log.exception("reading stack samples failed")
            return
        if read.dropped_total > self.dropped:
            log.warning(
                "profiles: %d samples not counted since the last read (map full); raise the "
                "profile program's max_samples",
                read.dropped_total - self.dropped,
            )
        self.dropped = read.dropped_total
        if read.samples:
            data = otlp_profiles.build(
                read.samples, self.since, now, self.frequency, self.per_container
            )
            snap.profiles = data.SerializeToString()
        self.since = now
