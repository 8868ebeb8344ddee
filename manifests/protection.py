"""How protected renditions are announced: HLS EXT-X-KEY / EXT-X-SESSION-KEY, DASH ContentProtection.

Key delivery lives on the origin beside the asset, at ``keys/<asset id>/`` under the same prefix
as the asset (so a relative URI inherits a signed ``/s/<token>/`` prefix, like the media):

- ``keys/<id>/clearkey``: the W3C ClearKey licence (POST a JSON request, get a JSON Web Key set);
- ``keys/<id>/hls.key``: the 16 key bytes, for HLS ``METHOD=AES-128``.

Per scheme:

- ``cbcs``: HLS ``METHOD=SAMPLE-AES`` twice, ``KEYFORMAT="org.w3.clearkey"`` (URI: the licence)
  and Widevine's ``KEYFORMAT="urn:uuid:edef8ba9-..."`` (URI: its pssh as a data URI), both with
  ``KEYID``; the multivariant playlist repeats them as ``EXT-X-SESSION-KEY``.  DASH: the
  mp4protection element with ``cenc:default_KID``, then ClearKey (no pssh: see below), Widevine
  (its pssh) and PlayReady (system id and KID: its licence server, a DRM provider fed the same
  key through CPIX, supplies the rest).  No ``dashif:Laurl``: the licence URL carries the
  listener's token, which a shared MPD cannot, and Shaka and dash.js take a manifest's Laurl
  over the application's and resolve a relative one against the page, not the MPD (measured:
  Shaka 5.2 asked the page's origin).  The player is given ``<prefix>/keys/<id>/clearkey``.
- ``cenc``: DASH as above with ``value="cenc"``; no HLS (SAMPLE-AES-CTR is outside RFC 8216).
- ``aes-128``: HLS only, one ``EXT-X-KEY:METHOD=AES-128,URI=...,IV=0x...`` per segment, after
  ``EXT-X-MAP`` (the init segment is clear); no DASH (DASH has no whole-segment encryption).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Sequence

from manifests.errors import ManifestError
from tonearm.core.model import PackagedRendition, Protection

CENC_NS = "urn:mpeg:cenc:2013"
MP4PROTECTION = "urn:mpeg:dash:mp4protection:2011"
CLEARKEY_SCHEME = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"  # DASH-IF: ClearKey's DASH system id
COMMON_SYSTEM_ID = "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"
WIDEVINE_SYSTEM_ID = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
PLAYREADY_SYSTEM_ID = "9a04f079-9840-4286-ab92-e65be0885f95"
CLEARKEY_KEYFORMAT = "org.w3.clearkey"
LICENCE_NAME = "clearkey"
HLS_KEY_NAME = "hls.key"


def key_path(asset_id: str, name: str, manifest_rel: str) -> str:
    """The relative URI, from a manifest at ``manifest_rel`` inside the asset, of ``keys/<id>/<name>``."""
    return "../" * (manifest_rel.count("/") + 2) + f"keys/{asset_id}/{name}"


def scheme_of(renditions: Sequence[PackagedRendition]) -> Protection | None:
    """The asset's protection (the same on every rendition), or None for clear renditions."""
    found = {(p.protection.scheme, p.protection.kid) if p.protection else None for p in renditions}
    if len(found) != 1:
        raise ManifestError("the renditions of one asset mix protection schemes or keys")
    return renditions[0].protection


def offers(protection: Protection | None, protocol: str) -> bool:
    """Whether ``protocol`` ("hls" or "dash") is written for this protection."""
    if protection is None:
        return True
    return protocol == "hls" if protection.scheme == "aes-128" else protocol == "dash" or protection.scheme == "cbcs"


def kid_uuid(kid: str) -> str:
    return f"{kid[:8]}-{kid[8:12]}-{kid[12:16]}-{kid[16:20]}-{kid[20:]}"


def hls_sample_aes_keys(protection: Protection, asset_id: str, manifest_rel: str) -> list[str]:
    """The attribute lists (without the tag) of the SAMPLE-AES keys of a cbcs rendition."""
    keyid = f"0x{protection.kid.upper()}"
    licence = key_path(asset_id, LICENCE_NAME, manifest_rel)
    widevine = f"data:text/plain;base64,{protection.pssh[WIDEVINE_SYSTEM_ID]}"
    return [
        f'METHOD=SAMPLE-AES,URI="{licence}",KEYFORMAT="{CLEARKEY_KEYFORMAT}",KEYFORMATVERSIONS="1",KEYID={keyid}',
        f'METHOD=SAMPLE-AES,URI="{widevine}",KEYFORMAT="urn:uuid:{WIDEVINE_SYSTEM_ID}",KEYFORMATVERSIONS="1",'
        f"KEYID={keyid}",
    ]


def hls_aes128_key(asset_id: str, manifest_rel: str, iv: str) -> str:
    return f'METHOD=AES-128,URI="{key_path(asset_id, HLS_KEY_NAME, manifest_rel)}",IV=0x{iv.upper()}'


def dash_namespaces(root: ET.Element) -> None:
    root.set("xmlns:cenc", CENC_NS)


def dash_content_protection(aset: ET.Element, protection: Protection) -> None:
    """ContentProtection elements of an AdaptationSet (DASH-IF IOP 7.7: mp4protection first)."""
    kid = kid_uuid(protection.kid)
    ET.SubElement(aset, "ContentProtection", {"schemeIdUri": MP4PROTECTION, "value": protection.scheme,
                                              "cenc:default_KID": kid})
    # No cenc:pssh in the ClearKey element: dash.js 5.2.1 (ProtectionModel_21Jan2015.createKeySession) calls
    # generateRequest('keyids', <that pssh box>) for ClearKey, a TypeError in Chromium; without it dash.js
    # makes {"kids": [default_KID]} keyids itself, and Shaka reads the init segment's common pssh.
    ET.SubElement(aset, "ContentProtection", {"schemeIdUri": CLEARKEY_SCHEME, "value": "ClearKey1.0"})
    widevine = ET.SubElement(aset, "ContentProtection", {"schemeIdUri": f"urn:uuid:{WIDEVINE_SYSTEM_ID}",
                                                         "value": "Widevine"})
    ET.SubElement(widevine, "cenc:pssh").text = protection.pssh[WIDEVINE_SYSTEM_ID]
    ET.SubElement(aset, "ContentProtection", {"schemeIdUri": f"urn:uuid:{PLAYREADY_SYSTEM_ID}", "value": "MSPR 2.0",
                                              "cenc:default_KID": kid})
