"""Splitting one master's ladder across encoder processes, so a lone master uses every core.

Debian's ffmpeg 5.1 runs all outputs of one process on one core (performance-calibration
notes), so a single master, or the last one of a batch, leaves the other core idle.  Two ffmpeg
runs over the same master, each encoding part of the ladder, fill it: each decodes and resamples
the master itself (about 5% of a ladder's CPU: decode ~2%, resampling a few more) and
every rung's encoder still sees exactly the samples it sees in one run, so the bytes are the same.

The parts are balanced by each codec's measured cost per rung (calibration notes, 300 s stereo
master at 48 kHz: native AAC 6.6-8.1 CPU s whatever the bit rate, libopus 3.5-4.1, FLAC well
under one); longest-processing-time-first onto the lightest part.
"""

from __future__ import annotations

from typing import Sequence

from tonearm.core.model import Rung

CPU_WEIGHT = {"aac": 7.3, "opus": 3.8, "flac": 0.8}  # CPU s per 300 s of stereo audio, one rung
DEFAULT_WEIGHT = 7.3


def rung_weight(rung: Rung) -> float:
    return CPU_WEIGHT.get(rung.codec, DEFAULT_WEIGHT)


def split_rungs(rungs: Sequence[Rung], parts: int) -> list[list[Rung]]:
    """At most ``parts`` non-empty groups of ``rungs`` with nearly equal encoder cost, in ladder order."""
    parts = max(1, min(parts, len(rungs)))
    groups: list[list[Rung]] = [[] for _ in range(parts)]
    loads = [0.0] * parts
    for rung in sorted(rungs, key=rung_weight, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(rung)
        loads[i] += rung_weight(rung)
    order = {r.name: k for k, r in enumerate(rungs)}
    return [sorted(g, key=lambda r: order[r.name]) for g in groups if g]


def lightest(groups: Sequence[Sequence[Rung]]) -> int:
    """The index of the group with the least encoder work (the measuring branch rides with it)."""
    loads = [sum(rung_weight(r) for r in g) for g in groups]
    return loads.index(min(loads))
