"""Transcode stage: one decode of a master feeds every rung of the ladder."""

from transcode.encode import MissingEncoder, build_command, encode_ladder, encode_measured, encode_measured_async
from transcode.split import split_rungs

__all__ = ["MissingEncoder", "build_command", "encode_ladder", "encode_measured", "encode_measured_async",
           "split_rungs"]
