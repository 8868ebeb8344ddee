"""Transcode stage: one decode of a master feeds every rung of the ladder."""

from transcode.encode import MissingEncoder, build_command, encode_ladder

__all__ = ["MissingEncoder", "build_command", "encode_ladder"]
