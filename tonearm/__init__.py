"""tonearm: adaptive-bitrate audio pipeline and HLS/DASH origin.

This small package holds what every stage shares: configuration, the CLI,
storage, the catalog, the ffmpeg locator and the plain data types that flow
between stages.
"""

__version__ = "0.1.0"
