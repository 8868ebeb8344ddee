"""Transcode stage: one decode of a master feeds every rung of the ladder."""

from transcode.encode import MissingEncoder, build_command, encode_ladder, encode_measured

__all__ = ["MissingEncoder", "build_command", "encode_ladder", "encode_measured"]
