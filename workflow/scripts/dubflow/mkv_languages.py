"""BCP-47 language elements on every track of an mkv that ffmpeg has just written.

Matroska has two language elements per track: the legacy ISO 639-2 ``Language`` and, since
Matroska v4, ``LanguageBCP47`` (``pt``, ``pt-BR``), which mkvmerge and newer players read
first. ffmpeg (9.0 included) writes only the legacy one, and the tool that adds the other,
mkvpropedit, is not a pinned dependency. So this module adds it, in place, to the file
the mux stage wrote, the way mkvpropedit does: the ``Tracks`` element grows into the empty
``Void`` element that mux asks ffmpeg to leave before the first cluster
(``-metadata_header_padding``); the elements between them (tags, chapters, attachments)
move up by the same number of bytes, their ``SeekHead`` positions follow, and CRC-32
elements of the changed masters are recomputed. Clusters and cues do not move. Only the
file's header (up to the first cluster) is read and rewritten.

A track that already has a BCP-47 element keeps it; the new one is derived from the legacy
code (``por`` -> ``pt``, ``ger`` -> ``de``, ``und`` -> ``und``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from dubflow.errors import InputError
from dubflow.languages import bcp47

SEGMENT, SEEK_HEAD, SEEK, SEEK_ID, SEEK_POSITION = 0x18538067, 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
TRACKS, TRACK_ENTRY, CLUSTER, VOID, CRC32 = 0x1654AE6B, 0xAE, 0x1F43B675, 0xEC, 0xBF
LANGUAGE, LANGUAGE_BCP47 = 0x22B59C, 0x22B59D
#: what mux asks ffmpeg to leave free before the first cluster: 6-10 bytes per track
PADDING = 1024


@dataclass
class Element:
    id: int
    start: int  # offset of its ID in the buffer or file
    data: int  # offset of its data
    size: int

    @property
    def end(self) -> int:
        return self.data + self.size


def _vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, length in bytes)."""
    first = buf[pos]
    length = 8 - first.bit_length() + 1
    if first == 0 or length > 8:
        raise ValueError(f"bad EBML number at byte {pos}")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in buf[pos + 1:pos + length]:
        value = (value << 8) | byte
    return value, length


def _element(buf: bytes, pos: int) -> Element:
    ident, id_len = _vint(buf, pos, keep_marker=True)
    size, size_len = _vint(buf, pos + id_len, keep_marker=False)
    return Element(ident, pos, pos + id_len + size_len, size)


def _children(buf: bytes, start: int, end: int) -> list[Element]:
    found, pos = [], start
    while pos < end:
        found.append(_element(buf, pos))
        pos = found[-1].end
    return found


def _size(value: int, length: int = 0) -> bytes:
    """``value`` as an EBML size, in ``length`` bytes (0: the fewest)."""
    length = length or next(n for n in range(1, 9) if value < (1 << (7 * n)) - 1)
    return ((1 << (7 * length)) | value).to_bytes(length, "big")


def _encode(ident: int, data: bytes) -> bytes:
    return ident.to_bytes((ident.bit_length() + 7) // 8, "big") + _size(len(data)) + data


def _void(total: int) -> bytes:
    """A Void element exactly ``total`` bytes long (total >= 2)."""
    size_len = 1 if total - 2 < 127 else (2 if total - 3 < 16383 else 4)
    return bytes([VOID]) + _size(total - 1 - size_len, size_len) + bytes(total - 1 - size_len)


def _with_crc(children: list[Element], parts: list[bytes]) -> bytes:
    """A master's new data: ``parts`` (its children, re-encoded), after a fresh CRC-32
    element if the master had one."""
    body = b"".join(parts)
    if children and children[0].id == CRC32:
        return _encode(CRC32, zlib.crc32(body).to_bytes(4, "little")) + body
    return body


def add_bcp47(path: str | Path, stage: str = "mux") -> int:
    """Give every track of the mkv at ``path`` a LanguageBCP47 element; return how many
    were added. InputError if the file has no room (it was not written by mux)."""
    path = Path(path)
    with open(path, "r+b") as handle:
        head = handle.read(64 * 1024)
        segment = _element(head, _element(head, 0).end)
        if segment.id != SEGMENT:
            raise InputError(f"{path} is not a Matroska file (stage {stage})")
        top: list[Element] = []
        pos = segment.data
        while True:  # the Segment's children up to the first cluster, read header by header
            handle.seek(pos)
            element = _element(handle.read(16), 0)
            element = Element(element.id, pos, pos + element.data, element.size)
            if element.id == CLUSTER:
                break
            top.append(element)
            pos = element.end
        tracks = next(e for e in top if e.id == TRACKS)
        after = [e for e in top if e.start >= tracks.end]
        if not after or after[-1].id != VOID:
            raise InputError(f"{path} has no free space before its first cluster for the "
                             f"BCP-47 language tags (stage {stage}); run the mux stage again")
        void = after[-1]
        handle.seek(tracks.start)
        region = handle.read(void.end - tracks.start)

        # Tracks, with the new elements
        base = tracks.start
        entries = _children(region, tracks.data - base, tracks.end - base)
        added, parts = 0, []
        for entry in entries:
            if entry.id != TRACK_ENTRY:
                if entry.id != CRC32:
                    parts.append(region[entry.start:entry.end])
                continue
            fields = _children(region, entry.data, entry.end)
            ids = {f.id for f in fields}
            kept = [region[f.start:f.end] for f in fields if f.id != CRC32]
            if LANGUAGE_BCP47 not in ids:
                legacy = next((region[f.data:f.end].rstrip(b"\0").decode("ascii", "replace")
                               for f in fields if f.id == LANGUAGE), "eng")  # the default
                kept.append(_encode(LANGUAGE_BCP47, bcp47(legacy).encode("ascii")))
                added += 1
            parts.append(_encode(TRACK_ENTRY, _with_crc(fields, kept)))
        if not added:
            return 0
        new_tracks = _encode(TRACKS, _with_crc(entries, parts))
        delta = len(new_tracks) - (tracks.end - tracks.start)
        room = void.end - void.start
        if delta > room or room - delta == 1:
            raise InputError(f"{path} has {room} free bytes before its first cluster, too few "
                             f"for the BCP-47 language tags of its tracks (stage {stage}); "
                             f"run the mux stage again")
        moved = region[tracks.end - base:void.start - base]
        rewritten = new_tracks + moved + (_void(room - delta) if room > delta else b"")
        assert len(rewritten) == len(region)

        # SeekHead: what moved up by delta, in place (same byte length)
        seek_head = next((e for e in top if e.id == SEEK_HEAD), None)
        if seek_head is not None:
            handle.seek(seek_head.start)
            seek_bytes = bytearray(handle.read(seek_head.end - seek_head.start))
            first, last = tracks.end - segment.data, void.start - segment.data
            children = _children(seek_bytes, seek_head.data - seek_head.start,
                                 seek_head.end - seek_head.start)
            positions = [field for seek in children if seek.id == SEEK  # not a CRC-32 or Void
                         for field in _children(seek_bytes, seek.data, seek.end)
                         if field.id == SEEK_POSITION]
            for field in positions:
                value = int.from_bytes(seek_bytes[field.data:field.end], "big")
                if first <= value < last:
                    width = field.end - field.data
                    try:
                        seek_bytes[field.data:field.end] = (value + delta).to_bytes(width, "big")
                    except OverflowError:
                        raise InputError(
                            f"{path}'s seek index cannot point past byte {value} in "
                            f"{width} bytes (stage {stage}); run the mux stage again"
                        ) from None
            if children and children[0].id == CRC32:  # sizes did not change: same offsets
                body = bytes(seek_bytes[children[0].end:])
                crc = children[0].data
                seek_bytes[crc:crc + 4] = zlib.crc32(body).to_bytes(4, "little")
            handle.seek(seek_head.start)
            handle.write(seek_bytes)
        handle.seek(tracks.start)
        handle.write(rewritten)
    return added
