"""The master's loudness and the playback gain, as the manifests (and asset.json) carry them.

The normalisation gain brings the integrated loudness to the configured target
(``[ladder] loudness_target``) but never lifts the true peak above -1 dBTP:
``gain_db = min(target - integrated, -1 - true_peak)``, rounded to 0.01 dB; it is
None when the loudness or the true peak is unknown (a silent master).

The figures are keyed the same everywhere: ``integrated_lufs``,
``loudness_range_lu``, ``true_peak_dbtp``, ``target_lufs``, ``gain_db``
(asset.json ``loudness.<key>``, HLS ``DATA-ID="org.tonearm.loudness.<key>"``, DASH
JSON value keys; see manifests/__init__.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tonearm.core.model import Loudness

__all__ = ("Normalisation", "normalisation", "TRUE_PEAK_CEILING_DBTP", "HLS_DATA_ID_PREFIX", "DASH_SCHEME")

TRUE_PEAK_CEILING_DBTP = -1.0  # EBU R 128's maximum true-peak level; lossy decoding overshoots the master's peaks
# RFC 8216 4.3.4.4: DATA-ID SHOULD be reverse DNS; one tag per figure, VALUE a plain decimal number
# (a quoted-string may not contain '"', so no JSON there).
HLS_DATA_ID_PREFIX = "org.tonearm.loudness."
# ISO/IEC 23009-1 SupplementalProperty (a client that does not know the scheme ignores it) on every
# AdaptationSet; value = compact JSON of the same keys, null where unknown.
DASH_SCHEME = "urn:org:tonearm:loudness:2026"


@dataclass(frozen=True, kw_only=True)
class Normalisation:
    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None
    target_lufs: float
    gain_db: float | None

    def figures(self) -> dict[str, float | None]:
        """Every figure by its key, in a fixed order; None where unknown."""
        return {"integrated_lufs": self.integrated_lufs, "loudness_range_lu": self.loudness_range_lu,
                "true_peak_dbtp": self.true_peak_dbtp, "target_lufs": self.target_lufs, "gain_db": self.gain_db}

    def hls_session_data(self) -> list[tuple[str, str]]:
        """(DATA-ID, VALUE) of each known figure."""
        return [(HLS_DATA_ID_PREFIX + key, decimal(value)) for key, value in self.figures().items()
                if value is not None]

    def dash_value(self) -> str:
        return json.dumps(self.figures(), separators=(",", ":"))


def normalisation(loudness: Loudness, target_lufs: float) -> Normalisation:
    """The carried figures of ``loudness`` and the gain to ``target_lufs`` (see the module docstring)."""
    integrated, peak = loudness.integrated_lufs, loudness.true_peak_dbtp
    gain = None
    if integrated is not None and peak is not None and not loudness.silent:
        gain = round(min(target_lufs - integrated, TRUE_PEAK_CEILING_DBTP - peak), 2) + 0.0  # + 0.0: no -0.0
    return Normalisation(integrated_lufs=integrated, loudness_range_lu=loudness.loudness_range_lu,
                         true_peak_dbtp=peak, target_lufs=float(target_lufs), gain_db=gain)


def decimal(value: float) -> str:
    """A deterministic plain decimal: at most six places, no exponent, no trailing zeros ("-18.3", "4", "-0.45")."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
