"""Clocks that jump in MPEG-TS and -PS files, and the shifts that play the parts in turn.

Why this module exists: TS is made to be joined by appending (``cat a.ts b.ts``, a
camcorder's or a TV tuner's recording in parts), and a broadcast's clock may restart at
an ad break. Players and FFmpeg's own command line follow the file, not its clock. Read
as stored, a clock that went back put the second part's sound on top of the first
part's, where the muxer refused it (half the audio left out), and one that jumped an hour
ahead held a frame for an hour. FFmpeg's library leaves this to its callers.

:func:`scan_timeline` demuxes the file once before decoding (packets only: a second or
so per GB) and gives each stream the seconds to add from each jump on, so that the part
after a jump starts where the part before it ends. The streams share each jump's shift,
so picture and sound keep their sync within every part; a stream's packets before its
own jump keep the old shift, however the muxer interleaved them.

Packets are told apart by their number within their stream (demuxing one stream yields
the same packets as demuxing all), not by their byte position: MPEG-PS leaves most
packets without one.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidmat.io.pyav import av_errors, open_input

#: A stream's clock going forward by more than this between packets is a jump, not a
#: pause: FFmpeg's command line takes the same 10 s (``-dts_delta_threshold``).
FORWARD_JUMP = 10.0

#: A stream's decode clock going back by more than this is a jump (decode times only
#: rise within a recording; FFmpeg's command line takes the same 0.1 s).
BACKWARD_JUMP = 0.1

#: Two streams' jumps whose clocks land this close are the same jump (one join).
SAME_JUMP = 5.0

#: MPEG's 33-bit 90 kHz clock goes round every 95443.7 s; FFmpeg unwraps it from the
#: first timestamp on, so a step back of a minute or more reads as a step ahead of a day.
MPEG_WRAP = 2**33 / 90000

#: FFmpeg's AVFMT_TS_DISCONT: formats whose clock may jump (MPEG-TS, MPEG-PS, Ogg).
_TS_DISCONT = 0x200


@dataclass(frozen=True)
class Jump:
    """One place where a file's clock jumps, in the words a user reads."""

    at: float  # seconds into the output where the new part starts
    by: float  # how far the clock jumped (negative: back)


@dataclass(frozen=True)
class Timeline:
    """Per stream, the seconds added to its packets from each packet number on."""

    #: stream index -> (packet numbers, seconds added from each on), ascending; the
    #: first part of every stream is not moved.
    shifts: dict[int, tuple[tuple[int, ...], tuple[float, ...]]]
    jumps: tuple[Jump, ...]
    #: stream index -> where its last packet ends, in seconds after the shifts.
    ends: dict[int, float]

    def seconds(self, stream: int, number: int) -> float:
        """The seconds added to packet ``number`` (from 0) of ``stream``."""
        where = self.shifts.get(stream)
        if where is None:
            return 0.0
        k = bisect.bisect_right(where[0], number)
        return where[1][k - 1] if k else 0.0

    def clock(self) -> Clock:
        """A reader's own count of the packets it demuxes, to shift each in turn."""
        return Clock(self)

    def describe(self) -> str:
        """One note for the user: where the parts were joined."""
        n = len(self.jumps)
        first = self.jumps[0]
        where = f"at {first.at:.1f} s" if n == 1 else f"{n} times (first at {first.at:.1f} s)"
        how = "back" if first.by < 0 else "ahead"
        return (
            f"the file's clock jumps {where}, {how} {abs(first.by):.1f} s (parts recorded "
            "separately and joined?); the parts are played one after the other, as players do"
        )


class Clock:
    """Shifts the packets of a reader that demuxes a file from its start, in order."""

    def __init__(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self._count: dict[int, int] = {}

    def shift(self, packet: Any) -> None:
        """Move ``packet``'s timestamps (in place) to where its part plays."""
        if not packet.size:
            return  # the demuxer's flush packets are not counted by the scan either
        i = packet.stream.index
        number = self._count.get(i, 0)
        self._count[i] = number + 1
        seconds = self._timeline.seconds(i, number)
        if not seconds or packet.time_base is None:
            return
        ticks = round(seconds / packet.time_base)
        if packet.dts is not None:
            packet.dts += ticks
        if packet.pts is not None:
            packet.pts += ticks


def can_jump(container: Any) -> bool:
    """Whether the container's format lets its clock jump (MPEG-TS, MPEG-PS, Ogg)."""
    return bool(int(container.format.flags) & _TS_DISCONT)


#: Scans of files as they were (path, size, time changed, streams): convert reads each
#: input's header before the batch and again to convert it.
_scanned: dict[tuple[Any, ...], Timeline | None] = {}


def scan_timeline(path: Path, streams: Iterable[int]) -> Timeline | None:
    """The shifts that join the parts of ``path`` end to end, or None when its clock
    never jumps (or the file cannot be opened: it is then read as stored)."""
    indices = tuple(streams)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, indices)
    except OSError:
        return None
    if key in _scanned:
        return _scanned[key]
    try:
        container = open_input(path)
    except av_errors():
        return None
    with contextlib.closing(container):
        chosen = [container.streams[i] for i in indices]
        timeline = _scan(_until_damage(container.demux(chosen)), list(indices))
    if len(_scanned) >= 16:
        _scanned.clear()
    _scanned[key] = timeline
    return timeline


def _until_damage(packets: Iterator[Any]) -> Iterator[Any]:
    """The packets up to where reading fails: the jumps before a damaged tail still count
    (the reader says what was lost in its own words)."""
    while True:
        try:
            yield next(packets)
        except StopIteration:
            return
        except av_errors():
            return


def _scan(packets: Iterable[Any], indices: list[int]) -> Timeline | None:
    """One pass over the packets in file order; the shifts are solved after it, as a
    jump's shift waits on every stream that takes it (the part after it starts once the
    part before has ended in every stream, and its earliest packet sets where)."""
    last: dict[int, float] = {}  # the stream's clock at its last packet, as stored
    step: dict[int, float] = {}  # the gap between its last two packets (a length unsaid)
    part = dict.fromkeys(indices, -1)  # the jump each stream's current part follows
    part_end: dict[int, float] = {}  # where that part ends so far, as stored
    count = dict.fromkeys(indices, 0)
    start = math.inf
    found: list[_Found] = []
    points: dict[int, list[tuple[int, int]]] = {i: [] for i in indices}
    for p in packets:
        if not p.size:
            continue  # the demuxer's flush packets, which readers do not count either
        i = p.stream.index
        number = count[i]
        count[i] += 1
        t = p.dts if p.dts is not None else p.pts
        if t is None or p.time_base is None:
            continue
        t = float(t * p.time_base)
        shown = float(p.pts * p.time_base) if p.pts is not None else t
        if not 0 <= shown - t <= FORWARD_JUMP:
            t = shown  # a decode time the parser carried over from the old clock (MPEG-PS)
        before = last.get(i)
        jumped = before is not None and not before - BACKWARD_JUMP <= t <= before + FORWARD_JUMP
        # A stream that starts after the join (no sound before it) lands where the others
        # did; elsewhere it would play an hour off.
        late = before is None and any(abs(f.lands - shown) < SAME_JUMP for f in found)
        if jumped or late:
            k = next(
                (
                    k
                    for k in range(part[i] + 1, len(found))
                    if abs(found[k].lands - shown) < SAME_JUMP
                ),
                None,
            )
            if k is None:  # the first stream to jump here
                assert before is not None
                found.append(_Found(lands=shown, by=t - before))
                k = len(found) - 1
                # Other streams' parts so far end before it too.
                found[k].after.extend((part[j], e) for j, e in part_end.items() if j != i)
            jump = found[k]
            jump.lands = min(jump.lands, shown)
            if i in part_end:
                jump.after.append((part[i], part_end.pop(i)))
            part[i] = k
            points[i].append((number, k))
            step.pop(i, None)
        elif before is not None and t > before:
            step[i] = t - before
        if part[i] < 0:
            start = min(start, shown)
        last[i] = t
        length = float(p.duration * p.time_base) if p.duration else step.get(i, 0.0)
        part_end[i] = max(part_end.get(i, shown), shown + length)
    if not found:
        return None
    shift: list[float] = []
    jumps: list[Jump] = []
    for jump in found:
        end = max(e + (shift[j] if j >= 0 else 0.0) for j, e in jump.after)
        shift.append(end - jump.lands)
        by = jump.by
        if by > MPEG_WRAP / 2:  # a step back that FFmpeg's unwrapping reads as ahead
            by -= MPEG_WRAP
        jumps.append(Jump(at=end - (start if math.isfinite(start) else 0.0), by=by))
    return Timeline(
        shifts={
            i: (tuple(n for n, _ in pts), tuple(shift[k] for _, k in pts))
            for i, pts in points.items()
            if pts
        },
        jumps=tuple(jumps),
        ends={i: e + (shift[part[i]] if part[i] >= 0 else 0.0) for i, e in part_end.items()},
    )


@dataclass
class _Found:
    """A jump while scanning: the earliest stored time a stream lands on after it, and
    the parts (the jump each follows, -1 for the first, and its stored end) it follows."""

    lands: float
    by: float
    after: list[tuple[int, float]] = field(default_factory=list)
