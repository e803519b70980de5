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
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable
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

#: FFmpeg's AVFMT_TS_DISCONT: formats whose clock may jump (MPEG-TS, MPEG-PS, Ogg).
_TS_DISCONT = 0x200


@dataclass(frozen=True)
class Jump:
    """One place where a file's clock jumps, in the words a user reads."""

    at: float  # seconds of output time where the new part starts
    by: float  # how far the clock jumped (negative: back)


@dataclass(frozen=True)
class Timeline:
    """Per stream, the seconds added to its packets from each byte position on."""

    #: stream index -> (byte positions, seconds added from each on), both ascending by
    #: position; the first part of every stream is not moved.
    shifts: dict[int, tuple[tuple[int, ...], tuple[float, ...]]]
    jumps: tuple[Jump, ...]
    #: stream index -> where its last packet ends, in seconds after the shifts.
    ends: dict[int, float]

    def seconds(self, stream: int, pos: int | None) -> float:
        """The seconds added to the packet of ``stream`` at byte ``pos``."""
        where = self.shifts.get(stream)
        if where is None or pos is None or pos < 0:
            return 0.0
        k = bisect.bisect_right(where[0], pos)
        return where[1][k - 1] if k else 0.0

    def shift(self, packet: Any) -> None:
        """Move ``packet``'s timestamps (in place) to where its part plays."""
        if packet.time_base is None:
            return
        seconds = self.seconds(packet.stream.index, packet.pos)
        if not seconds:
            return
        ticks = round(seconds / packet.time_base)
        if packet.dts is not None:
            packet.dts += ticks
        if packet.pts is not None:
            packet.pts += ticks

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


def can_jump(container: Any) -> bool:
    """Whether the container's format lets its clock jump (MPEG-TS, MPEG-PS, Ogg)."""
    return bool(int(container.format.flags) & _TS_DISCONT)


def scan_timeline(path: Path, streams: Iterable[int]) -> Timeline | None:
    """The shifts that join the parts of ``path`` end to end, or None when its clock
    never jumps (or the file cannot be scanned: it is then read as stored)."""
    try:
        container = open_input(path)
    except av_errors():
        return None
    with contextlib.closing(container):
        chosen = [container.streams[i] for i in streams]
        try:
            return _scan(container.demux(chosen), [s.index for s in chosen])
        except av_errors():
            return None  # a damaged tail: the reader says so in its own words


def _scan(packets: Iterable[Any], indices: list[int]) -> Timeline | None:
    """One pass over the packets in file order; the shifts are solved after it, as a
    jump's shift waits on every stream that takes it (the part after it starts once the
    part before has ended in every stream, and its earliest packet sets where)."""
    last: dict[int, float] = {}  # the stream's last decode time, as stored
    part = dict.fromkeys(indices, -1)  # the jump each stream's current part follows
    part_end: dict[int, float] = {}  # where that part ends so far, as stored
    found: list[_Found] = []
    points: dict[int, list[tuple[int, int]]] = {i: [] for i in indices}
    for p in packets:
        ts = p.dts if p.dts is not None else p.pts
        if ts is None or p.pos is None or p.pos < 0 or p.time_base is None:
            continue  # the demuxer's flush packets
        i = p.stream.index
        t = float(ts * p.time_base)
        shown = float(p.pts * p.time_base) if p.pts is not None else t
        before = last.get(i)
        if before is not None and not (before - BACKWARD_JUMP <= t <= before + FORWARD_JUMP):
            k = next(
                (
                    k
                    for k in range(part[i] + 1, len(found))
                    if abs(found[k].lands - shown) < SAME_JUMP
                ),
                None,
            )
            if k is None:  # the first stream to jump here
                found.append(_Found(lands=shown, by=t - before))
                k = len(found) - 1
                # Other streams' parts so far end before it too.
                found[k].after.extend((part[j], e) for j, e in part_end.items() if j != i)
            jump = found[k]
            jump.lands = min(jump.lands, shown)
            jump.after.append((part[i], part_end[i]))
            part[i] = k
            del part_end[i]
            points[i].append((int(p.pos), k))
        last[i] = t
        length = float(p.duration * p.time_base) if p.duration else 0.0
        part_end[i] = max(part_end.get(i, shown), shown + length)
    if not found:
        return None
    shift: list[float] = []
    jumps: list[Jump] = []
    for jump in found:
        end = max(e + (shift[j] if j >= 0 else 0.0) for j, e in jump.after)
        shift.append(end - jump.lands)
        jumps.append(Jump(at=end, by=jump.by))
    return Timeline(
        shifts={
            i: (tuple(pos for pos, _ in pts), tuple(shift[k] for _, k in pts))
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
