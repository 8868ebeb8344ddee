"""The ``[protection]`` section of the one config schema (:mod:`tonearm.core.config`), in a module of its
own so the schema's main file stays readable."""

from __future__ import annotations

from typing import Literal

from tonearm.core.config_section import Section

__all__ = ("PROTECTION_SCHEMES", "ProtectionConfig")

# Content protection (tonearm.core.keys, packager.protect): "none" publishes clear CMAF; "cbcs" (the one to use
# when enabling it) is one set of files for HLS SAMPLE-AES and DASH; "cenc" (AES-CTR) is DASH only; "aes-128"
# encrypts whole segments for old HLS clients (no DASH).
PROTECTION_SCHEMES = ("none", "cbcs", "cenc", "aes-128")


class ProtectionConfig(Section):
    scheme: Literal["none", "cbcs", "cenc", "aes-128"] = "none"
    master_key_file: str = ""  # wraps every content key; empty: <data>/keys/master.key (created 0600 on first use)
