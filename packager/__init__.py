"""PACKAGER stage: encoder MP4s -> CMAF init segments, fragments and segment indexes.

``package()`` is the stage's one entry point (see tonearm.app.pipeline); segments
are announced to a listener as they are written, shaka-packager style.
"""

from packager.errors import CodecError, DemuxError, PackagerError
from packager.layout import package

__all__ = ("package", "PackagerError", "DemuxError", "CodecError")
