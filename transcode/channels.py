"""The channel-layout rule: which channel count each rung is encoded with.

* A mono master stays mono and a stereo master stays stereo, in every rung.
* A master with more than two channels (5.1, 7.1, quad, ...) is downmixed to
  stereo for the lossy rungs (AAC, Opus): players of lossy ABR audio expect
  stereo, and a multichannel lossy rendition would need its own
  AdaptationSet / variant group (DASH-IF IOP: do not mix layouts in one set).
  The lossless rung keeps the master's layout (5.1 in FLAC stays 5.1).
* ``Rung.channels``, when set, forces the count for that rung (up- or downmix).

The downmix is the ITU-R BS.775 stereo downmix, done by libswresample's
rematrixer with every coefficient stated instead of left to defaults:

    Lo = FL + 0.7071 * FC + 0.7071 * (BL or SL)      LFE is dropped
    Ro = FR + 0.7071 * FC + 0.7071 * (BR or SR)

then scaled so no output row sums above 1.0 (``rematrix_maxval=1``), which
makes clipping impossible: for 5.1 every gain is divided by
1 + 0.7071 + 0.7071 = 2.414 (-7.7 dB).  We trade level for safety; loudness
is measured at ingest and left to the player.  Mono to stereo (only when a
rung forces 2 channels) puts the mono signal on both sides at -3 dB.
"""

from __future__ import annotations

from tonearm.core.codecs import codec
from tonearm.core.model import Rung

CENTER_MIX = 0.7071  # -3 dB, ITU-R BS.775 Table 2
SURROUND_MIX = 0.7071  # -3 dB
LFE_MIX = 0.0  # the LFE channel is not part of the ITU downmix
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def target_channels(rung: Rung, master_channels: int) -> int:
    """Channel count of ``rung`` for a master with ``master_channels`` channels."""
    if rung.channels:
        return rung.channels
    limit = codec(rung.codec).max_channels  # the codec table's channel rule
    return master_channels if limit is None else min(master_channels, limit)


def layout_name(channels: int) -> str:
    """ffmpeg's default layout name for a channel count."""
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"no standard channel layout has {channels} channels") from None


def remix_options(channels: int) -> dict[str, object]:
    """``aresample`` options that rematrix to ``channels`` with the documented coefficients."""
    return {
        "ochl": layout_name(channels),
        "clev": CENTER_MIX,
        "slev": SURROUND_MIX,
        "lfe_mix_level": LFE_MIX,
        "rematrix_maxval": 1.0,
    }
