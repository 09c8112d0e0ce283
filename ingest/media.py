"""What kind of file this is: from its first bytes, then its extension."""

from __future__ import annotations

VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".ts", ".m4v", ".3gp", ".h264", ".h265", ".asf"}
AUDIO_EXT = {".wav", ".mp3", ".aac", ".m4a", ".amr", ".ogg", ".opus", ".flac"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".heic", ".tif", ".tiff"}


def sniff(head: bytes, name: str) -> str:
    """A MIME type for a file given its first bytes (at least 16 if it has them)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"qt"):
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head[:4] == b"RIFF" and len(head) >= 12:
        if head[8:12] == b"AVI ":
            return "video/x-msvideo"
        if head[8:12] == b"WAVE":
            return "audio/wav"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/x-matroska"
    if head[:1] == b"\x47" and len(head) >= 1:
        ext = _ext(name)
        if ext == ".ts":
            return "video/mp2t"
    if head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        return "audio/mpeg"
    if head[:6] == b"#!AMR\n":
        return "audio/amr"
    ext = _ext(name)
    if ext in VIDEO_EXT:
        return "video/x-unknown"
    if ext in AUDIO_EXT:
        return "audio/x-unknown"
    if ext in IMAGE_EXT:
        return "image/x-unknown"
    if ext in (".txt", ".log", ".gps", ".nmea", ".xml", ".json", ".csv", ".srt"):
        return "text/plain"
    return "application/octet-stream"


def is_media(mime: str) -> bool:
    return mime.split("/")[0] in ("video", "audio")


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""
