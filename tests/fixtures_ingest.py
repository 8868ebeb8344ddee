"""Generated test media for the ingest tests (ffmpeg lavfi + numpy; nothing stored in the repo).

The reference signal is a 997 Hz sine at -20 dBFS peak in every channel
except LFE.  ITU-R BS.1770-4 (section 2, note on calibration) fixes its
loudness independently of our code: a 0 dBFS 1 kHz sine in one front
channel reads -3.01 LKFS, so the same sine at -20 dBFS in both stereo
channels reads -20.0 LUFS, in one (mono) channel -23.0 LUFS; its true and
sample peaks are -20 dBFS.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REF_AMPLITUDE = 0.1  # -20 dBFS
REF_FREQ = 997
SINE = f"{REF_AMPLITUDE}*sin(2*PI*{REF_FREQ}*t)"
LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8}

# name -> (suffix, codec args). Lossless first.
FORMATS: dict[str, tuple[str, list[str]]] = {
    "wav": (".wav", ["-c:a", "pcm_s16le"]),
    "bwf": (".wav", ["-c:a", "pcm_s24le", "-write_bext", "1", "-metadata", "originator=tonearm tests"]),
    "flac": (".flac", ["-c:a", "flac"]),
    "aiff": (".aiff", ["-c:a", "pcm_s16be"]),
    "alac": (".m4a", ["-c:a", "alac"]),
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "192k"]),
    "m4a": (".m4a", ["-c:a", "aac", "-b:a", "192k"]),
    "vorbis": (".ogg", ["-c:a", "libvorbis", "-q:a", "6"]),
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "128k"]),
}
LOSSY = {"mp3", "m4a", "vorbis", "opus"}


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; a failure shows its stderr in the test output."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=300)


def sine_source(*, rate: int = 48000, layout: str = "stereo", seconds: float = 4.0) -> list[str]:
    """lavfi input args for the reference sine in every channel (LFE silent)."""
    n = LAYOUT_CHANNELS[layout]
    exprs = [SINE] * n
    if n >= 6:
        exprs[3] = "0"  # LFE is excluded from BS.1770 loudness; keep it silent
    return ["-f", "lavfi", "-i", f"aevalsrc={'|'.join(exprs)}:s={rate}:c={layout}:d={seconds}"]


def make(folder: Path, name: str, fmt: str = "flac", *, rate: int = 48000, layout: str = "stereo",
         seconds: float = 4.0, extra: list[str] | None = None, source: list[str] | None = None) -> Path:
    suffix, codec = FORMATS[fmt]
    known = {s for s, _ in FORMATS.values()} | {".aac", ".mp4"}
    out = folder / (name if Path(name).suffix in known else name + suffix)
    ffmpeg(*(source or sine_source(rate=rate, layout=layout, seconds=seconds)), *(extra or []), *codec,
           "file:" + str(out))
    return out


def truncate(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def patch_wav_data_size(src: Path, dst: Path, factor: float) -> Path:
    """Copy a PCM WAV, rewriting the ``data`` chunk size to ``factor`` x the real one."""
    data = bytearray(src.read_bytes())
    at = data.index(b"data")
    real = int.from_bytes(data[at + 4: at + 8], "little")
    data[at + 4: at + 8] = (int(real * factor) & ~3).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


TEST_TAGS = {"title": "Töne & \"Quotes\"", "artist": "The Testers", "album": "Corpus Vol. 1", "isrc": "ZZTST2600042",
             "track": 7}


def tag_with_mutagen(path: Path, cover: bytes, cover_mime: str) -> None:
    """Write TEST_TAGS and a front cover the way each format carries them."""
    import base64

    import mutagen
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import APIC, TALB, TIT2, TPE1, TRCK, TSRC
    from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

    t = TEST_TAGS
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, cover_mime, cover
    f = mutagen.File(path)
    if isinstance(f, FLAC):
        f.update({"title": t["title"], "artist": t["artist"], "album": t["album"], "isrc": t["isrc"],
                  "tracknumber": f"{t['track']}/12"})
        f.add_picture(pic)
    elif isinstance(f, MP4):
        fmt = MP4Cover.FORMAT_PNG if cover_mime == "image/png" else MP4Cover.FORMAT_JPEG
        f.update({"\xa9nam": [t["title"]], "\xa9ART": [t["artist"]], "\xa9alb": [t["album"]],
                  "trkn": [(t["track"], 12)], "covr": [MP4Cover(cover, fmt)],
                  "----:com.apple.iTunes:ISRC": [MP4FreeForm(t["isrc"].encode())]})
    elif hasattr(f, "add_tags") and type(f).__name__ in ("MP3", "WAVE", "AIFF"):
        if f.tags is None:
            f.add_tags()
        for frame in (TIT2(encoding=3, text=t["title"]), TPE1(encoding=3, text=t["artist"]),
                      TALB(encoding=3, text=t["album"]), TSRC(encoding=3, text=t["isrc"]),
                      TRCK(encoding=3, text=f"{t['track']}/12"),
                      APIC(encoding=3, mime=cover_mime, type=3, desc="cover", data=cover)):
            f.tags.add(frame)
    else:  # Ogg Vorbis / Opus: Vorbis comments with a base64 METADATA_BLOCK_PICTURE
        f.update({"title": t["title"], "artist": t["artist"], "album": t["album"], "isrc": t["isrc"],
                  "tracknumber": str(t["track"]),
                  "metadata_block_picture": base64.b64encode(pic.write()).decode("ascii")})
    f.save()
