"""Set a finished WebM/Matroska file's display size (non-square pixels) in place.

Why this exists: FFmpeg's Matroska muxer writes ``DisplayWidth``/``DisplayHeight`` from
``AVStream.sample_aspect_ratio``, a field PyAV does not let a caller set (the codec's
aspect ratio, which PyAV does set, is ignored there, and VP9 has none in its bitstream).
So an anamorphic input (PAL DV, 720x576 shown 1024x576) came out squeezed in WebM.

The two elements are added to the video track's ``Video`` element after the muxer has
finished. The ``Void`` that FFmpeg reserves before the file's headers gives the room:
the elements between it and ``Tracks`` (``Info``) and ``Tracks`` itself move that many
bytes earlier and the ``Void`` shrinks by as many, so nothing after ``Tracks`` (the
clusters, the cue points that index them) moves; the ``SeekHead`` entries for the
moved elements are rewritten with the same number of bytes. Anything unexpected leaves
the file as it was and returns False.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_SEGMENT = 0x18538067
_SEEKHEAD = 0x114D9B74
_SEEK = 0x4DBB
_SEEK_POSITION = 0x53AC
_VOID = 0xEC
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_TRACK_TYPE = 0x83
_CRC32 = 0xBF
_VIDEO = 0xE0
_DISPLAY_WIDTH = 0x54B0
_DISPLAY_HEIGHT = 0x54BA
_CLUSTER = 0x1F43B675

#: The headers sit at the start of the file; read no more than this of it.
_HEAD_BYTES = 1 << 20


@dataclass(frozen=True)
class _Element:
    id: int
    start: int  # offset of the ID
    data: int  # offset of the payload
    size: int  # payload bytes

    @property
    def end(self) -> int:
        return self.data + self.size


def _vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, bytes it takes)."""
    if pos >= len(buf) or buf[pos] == 0:
        raise ValueError("bad EBML number")
    first = buf[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(buf):
        raise ValueError("truncated EBML number")
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, length


def _children(buf: bytes, start: int, end: int) -> list[_Element]:
    out = []
    pos = start
    while pos < end:
        eid, n = _vint(buf, pos, keep_marker=True)
        size, m = _vint(buf, pos + n, keep_marker=False)
        if size == (1 << (7 * m)) - 1:  # unknown size: only a Segment or Cluster has one
            size = end - (pos + n + m)
        elem = _Element(eid, pos, pos + n + m, size)
        out.append(elem)
        if eid == _CLUSTER:  # the media: the headers are all before it
            break
        pos = elem.end
    return out


def _size(n: int) -> bytes:
    """``n`` as an EBML size in the fewest bytes."""
    length = 1
    while n >= (1 << (7 * length)) - 1:
        length += 1
    return ((1 << (7 * length)) | n).to_bytes(length, "big")


def _id(eid: int) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big")


def _uint(eid: int, value: int) -> bytes:
    payload = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return _id(eid) + _size(len(payload)) + payload


def _element(eid: int, payload: bytes) -> bytes:
    return _id(eid) + _size(len(payload)) + payload


def _uint_value(buf: bytes, e: _Element) -> int:
    return int.from_bytes(buf[e.data : e.end], "big")


def _with_display_size(buf: bytes, tracks: _Element, width: int, height: int) -> bytes | None:
    """``Tracks`` rebuilt with the display size in its (first) video track, or None."""
    entries = []
    done = False
    children = _children(buf, tracks.data, tracks.end)
    if any(e.id == _CRC32 for e in children):  # a checksum would no longer match
        return None
    for entry in children:
        if entry.id != _TRACK_ENTRY or done:
            entries.append(buf[entry.start : entry.end])
            continue
        kids = _children(buf, entry.data, entry.end)
        if not any(k.id == _TRACK_TYPE and _uint_value(buf, k) == 1 for k in kids):
            entries.append(buf[entry.start : entry.end])
            continue
        parts = []
        for k in kids:
            if k.id != _VIDEO:
                parts.append(buf[k.start : k.end])
                continue
            video = [
                buf[v.start : v.end]
                for v in _children(buf, k.data, k.end)
                if v.id not in (_DISPLAY_WIDTH, _DISPLAY_HEIGHT)
            ]
            video += [_uint(_DISPLAY_WIDTH, width), _uint(_DISPLAY_HEIGHT, height)]
            parts.append(_element(_VIDEO, b"".join(video)))
            done = True
        entries.append(_element(_TRACK_ENTRY, b"".join(parts)))
    return _element(_TRACKS, b"".join(entries)) if done else None


def _void(length: int) -> bytes | None:
    """A Void element exactly ``length`` bytes long (None where none can be: 1 byte)."""
    if length == 0:
        return b""
    for n in range(1, 9):
        payload = length - 1 - n
        if payload >= 0 and payload < (1 << (7 * n)) - 1:
            size = ((1 << (7 * n)) | payload).to_bytes(n, "big")
            return _id(_VOID) + size + bytes(payload)
    return None


def set_display_size(path: str | Path, width: int, height: int) -> bool:
    """Store ``width`` x ``height`` as the video track's display size; True when done."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            buf = fh.read(_HEAD_BYTES)
        top = _children(buf, 0, len(buf))
        segment = next(e for e in top if e.id == _SEGMENT)
        level1 = _children(buf, segment.data, min(segment.end, len(buf)))
        ids = [e.id for e in level1]
        t = ids.index(_TRACKS)
        v = max(i for i in range(t) if ids[i] == _VOID)  # the nearest Void before Tracks
        tracks = level1[t]
        new_tracks = _with_display_size(buf, tracks, width, height)
        if new_tracks is None or tracks.end > len(buf):
            return False
        grow = len(new_tracks) - (tracks.end - tracks.start)
        void = level1[v]
        room = void.end - void.start
        between = buf[void.end : tracks.start]  # e.g. Info: moves back by `grow`
        filler = _void(room - grow) if grow <= room else None
        if filler is None:
            return False
        moved = {
            e.start - segment.data: e.start - segment.data - grow for e in level1[v + 1 : t + 1]
        }
        # SeekHead entries that point at moved elements, rewritten in their own bytes.
        patches: list[tuple[int, bytes]] = []
        for head in (e for e in level1 if e.id == _SEEKHEAD and e.end <= void.start):
            for seek in _children(buf, head.data, head.end):
                if seek.id != _SEEK:
                    continue
                for pos in _children(buf, seek.data, seek.end):
                    if pos.id != _SEEK_POSITION:
                        continue
                    old = _uint_value(buf, pos)
                    if old in moved:
                        new = moved[old].to_bytes(pos.size, "big")
                        patches.append((pos.data, new))
        region = filler + between + new_tracks
        assert len(region) == tracks.end - void.start
        with open(path, "r+b") as fh:
            fh.seek(void.start)
            fh.write(region)
            for offset, data in patches:
                fh.seek(offset)
                fh.write(data)
        return True
    except (OSError, ValueError, StopIteration, OverflowError):
        return False
