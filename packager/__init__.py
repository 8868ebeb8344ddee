"""PACKAGER stage: encoder MP4s -> CMAF init segments, fragments and segment indexes.

``package()`` is the stage's one entry point (see tonearm.pipeline); segments
are announced to a listener as they are written, shaka-packager style.
"""

from packager.codecs import CodecError
from packager.demux import DemuxError
from packager.layout import PackagerError, package

__all__ = ("package", "PackagerError", "DemuxError", "CodecError")
