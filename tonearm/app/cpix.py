"""A DASH-IF CPIX 2.3 document for one protected asset: hand its key to a commercial DRM provider.

The provider's licence servers (Widevine, PlayReady, FairPlay) can then issue licences for the
very files tonearm published.  The document holds the content key in the clear
(``pskc:PlainValue``), as CPIX allows between trusted parties: ``tonearm protection cpix`` writes
it to stdout or to a 0600 file, never to storage, and never logs it.

Layout (DASH-IF CPIX 2.3, 5.3-5.5): one ``ContentKey`` (KID, scheme, the cbcs constant IV as
``explicitIV``), and one ``DRMSystem`` per system id the packager signals: W3C common (its pssh),
Widevine (its pssh), PlayReady (no pssh: the provider makes its PlayReady Object), ClearKey
(DASH system id e2719d58-...), each with the DASH ContentProtection element it stands for.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from manifests.protection import CLEARKEY_SCHEME, MP4PROTECTION
from packager.protect import (
    COMMON_SYSTEM_ID,
    PLAYREADY_SYSTEM_ID,
    WIDEVINE_SYSTEM_ID,
    pssh_box,
    widevine_pssh_data,
)
from tonearm.core.keys import ContentKey

__all__ = ("cpix_document", "CPIX_NS", "PSKC_NS")

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
CLEARKEY_SYSTEM_ID = CLEARKEY_SCHEME.removeprefix("urn:uuid:")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _content_protection(scheme_id: str, value: str) -> str:
    return _b64(f'<ContentProtection xmlns="urn:mpeg:dash:schema:mpd:2011" schemeIdUri="{scheme_id}" '
                f'value="{value}"/>'.encode())


def cpix_document(key: ContentKey) -> str:
    """The CPIX XML of ``key`` (a cbcs or cenc key; aes-128 has no DRM system, only the key)."""
    ET.register_namespace("cpix", CPIX_NS)
    ET.register_namespace("pskc", PSKC_NS)
    c, p = f"{{{CPIX_NS}}}", f"{{{PSKC_NS}}}"
    root = ET.Element(f"{c}CPIX", {"contentId": key.asset_id, "version": "2.3"})
    keys = ET.SubElement(root, f"{c}ContentKeyList")
    attrs = {"kid": key.kid_uuid}
    if key.scheme in ("cbcs", "cenc"):
        attrs["commonEncryptionScheme"] = key.scheme
    if key.scheme == "cbcs":
        attrs["explicitIV"] = _b64(key.iv)
    ck = ET.SubElement(keys, f"{c}ContentKey", attrs)
    secret = ET.SubElement(ET.SubElement(ck, f"{c}Data"), f"{p}Secret")
    ET.SubElement(secret, f"{p}PlainValue").text = _b64(key.key)
    if key.scheme in ("cbcs", "cenc"):
        systems = ET.SubElement(root, f"{c}DRMSystemList")
        entries = [
            (COMMON_SYSTEM_ID, pssh_box(COMMON_SYSTEM_ID, [key.kid]), MP4PROTECTION, key.scheme),
            (WIDEVINE_SYSTEM_ID, pssh_box(WIDEVINE_SYSTEM_ID, data=widevine_pssh_data(key.kid, key.scheme)),
             f"urn:uuid:{WIDEVINE_SYSTEM_ID}", "Widevine"),
            (PLAYREADY_SYSTEM_ID, None, f"urn:uuid:{PLAYREADY_SYSTEM_ID}", "MSPR 2.0"),
            (CLEARKEY_SYSTEM_ID, None, CLEARKEY_SCHEME, "ClearKey1.0"),
        ]
        for system_id, pssh, scheme_id, value in entries:
            drm = ET.SubElement(systems, f"{c}DRMSystem", {"kid": key.kid_uuid, "systemId": system_id})
            if pssh is not None:
                ET.SubElement(drm, f"{c}PSSH").text = _b64(pssh)
            ET.SubElement(drm, f"{c}ContentProtectionData").text = _content_protection(scheme_id, value)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
