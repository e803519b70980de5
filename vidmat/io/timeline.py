"""Clocks that jump in MPEG-TS and -PS files, and the shifts that play the parts in turn.

Why this module exists: TS is made to be joined by appending (``cat a.ts b.ts``, a
camcorder's or a TV tuner's recording in parts), and a broadcast's clock may restart at
an ad break. Players and FFmpeg's own command line follow the file, not its clock. Read
as stored, a clock that went back put the second part's sound on top of the first
part's, where the muxer refused it (half the audio left out), and one that jumped an hour
ahead held a frame for an hour. FFmpeg's library leaves this to its callers.

:func:`scan_timeline` demuxes the file once before decoding (packets only: 0.6 s for
a 183 MB TS on 2 cores, about 3 s per GB) and gives each stream the seconds to add from each jump on, so that the part
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidmat.io.pyav import av_errors, open_input

#: A stream's clock going forward by more than this between packets is a jump, not a
#: pause: FFmpeg's command line takes the same 10 s (``-dts_delta_threshold``).
FORWARD_JUMP = 10.0

#: A stream's decode clock going back by more than this is a jump (decode times only
#: rise within a recording; FFmpeg's command line takes the same 0.1 s).
BACKWARD_JUMP = 0.1

#: A stream's clock going on this much (seconds) past where its packets ended, in one
#: gap or in several, is a pause in it (sound that stops), which a copy into MP4 would
#: close up.
PAUSE = 0.1

#: Gaps and overlaps this small (seconds) are a muxer's rounding, not counted as pauses.
SMALL_GAP = 0.02

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
    #: stream index -> numbers of its packets whose show time is a guess from another
    #: part's clock: read without one (the decoder's order places them).
    untimed: dict[int, frozenset[int]] = field(default_factory=dict)
    #: stream index -> numbers of its packets whose show time FFmpeg left a wrap of the
    #: 33-bit clock behind their decode time (see _scan): shown a wrap later besides.
    shown_later: dict[int, frozenset[int]] = field(default_factory=dict)
    #: Streams whose clock pauses between two packets (sound that stops for a while):
    #: copied into MP4 the pause closed up and what followed played early.
    paused: frozenset[int] = frozenset()

    @property
    def joined(self) -> bool:
        """Whether the file is parts joined end to end (else it only pauses)."""
        return bool(self.jumps)

    @property
    def moves(self) -> bool:
        """Whether any packet is read at another time than stored (joins, or a clock
        that FFmpeg's unwrapping steps back by a wrap)."""
        return bool(self.shifts or self.shown_later)

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
        if number in self._timeline.untimed.get(i, ()):
            packet.pts = None
        seconds = self._timeline.seconds(i, number)
        later = MPEG_WRAP if number in self._timeline.shown_later.get(i, ()) else 0.0
        if not (seconds or later) or packet.time_base is None:
            return
        ticks = round(seconds / packet.time_base)
        if packet.dts is not None:
            packet.dts += ticks
        if packet.pts is not None:
            packet.pts += ticks + round(later / packet.time_base)


def can_jump(container: Any) -> bool:
    """Whether the container's format lets its clock jump (MPEG-TS, MPEG-PS, Ogg)."""
    return bool(int(container.format.flags) & _TS_DISCONT)


#: Formats that give every packet its own time, so sound in them can pause (a browser's
#: WebM whose microphone dropped out); MP4's own pauses are copied as they are.
_TIMED = frozenset({"matroska", "webm", "flv", "live_flv", "nut", "asf"})


def scan_pauses(path: Path, streams: Iterable[int]) -> Timeline | None:
    """Where sound pauses in a Matroska, WebM or FLV file, whose copy into MP4 would close
    the pauses up (what follows played early); None for other formats (MPEG-TS/PS are
    scanned whole by the reader, joins and all) and where nothing pauses.

    Asked for by the audio pass alone: a background or a --camera file needs no scan (a
    large file's took seconds, on the window's thread)."""
    return scan_timeline(path, streams, joins=False)


#: Scans of files as they were (path, size, time changed, streams): convert reads each
#: input's header before the batch and again to convert it.
_scanned: dict[tuple[Any, ...], Timeline | None] = {}


def scan_timeline(path: Path, streams: Iterable[int], joins: bool = True) -> Timeline | None:
    """The shifts that join the parts of ``path`` end to end, or None when its clock
    never jumps nor pauses (or the file cannot be opened: it is then read as stored).

    ``joins`` False looks for pauses only, in the formats that time every packet
    (:data:`_TIMED`; None for others): there a clock cannot jump, and a step ahead is
    time that passed, however long."""
    indices = tuple(streams)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, indices, joins)
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
        if not joins and _TIMED.isdisjoint(container.format.name.split(",")):
            timeline = None  # its format's pauses are copied as they are (MP4's)
        else:
            timeline = _scan(_until_damage(container.demux(chosen)), list(indices), joins)
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


def _scan(packets: Iterable[Any], indices: list[int], joins: bool = True) -> Timeline | None:
    """One pass over the packets in file order finds where each stream's clock jumps;
    the jumps are then matched into joins and the shifts solved (see :func:`_joins`)."""
    last: dict[int, float] = {}  # the stream's clock at its last packet, as stored
    step: dict[int, float] = {}  # the gap between its last two packets (a length unsaid)
    count = dict.fromkeys(indices, 0)  # packets of the stream so far
    ends: dict[int, list[float | None]] = {i: [None] for i in indices}  # each part's end
    events: list[_Event] = []
    untimed: dict[int, list[int]] = {i: [] for i in indices}
    paused: set[int] = set()
    unclocked: set[int] = set()  # streams whose last packets came without a time
    drift: dict[int, float] = {}  # seconds of gaps less overlaps in the stream so far
    lift: dict[int, float] = {}  # seconds added to the stream's clock for FFmpeg's unwrapping
    lifts: dict[int, list[tuple[int, float]]] = {i: [] for i in indices}  # from which packet
    shown_lifted: dict[int, list[int]] = {i: [] for i in indices}  # a wrap more on the show time
    start = math.inf
    g = 0  # packets of all the streams so far: how far apart two streams' jumps are
    for p in packets:
        if not p.size:
            continue  # the demuxer's flush packets, which readers do not count either
        i = p.stream.index
        number = count[i]
        count[i] += 1
        g += 1
        t = p.dts if p.dts is not None else p.pts
        if t is None or p.time_base is None:
            # Matroska's laced frames after a block's first: how long they play is
            # unknown, so the time to the next timed packet tells no pause.
            unclocked.add(i)
            continue
        t = float(t * p.time_base) + lift.get(i, 0.0)
        shown = float(p.pts * p.time_base) + lift.get(i, 0.0) if p.pts is not None else t
        before = last.get(i)
        if joins and before is not None:
            # FFmpeg unwraps MPEG's 33-bit clock by where the file's first part began, each
            # time stamp on its own: a later part whose clock passes that point steps back
            # by the wrap, its show times (B-frames) a few packets before its decode times.
            # The same part goes on; taken for a join, it left a hole.
            if t < before - MPEG_WRAP / 2:
                lift[i] = lift.get(i, 0.0) + MPEG_WRAP
                lifts[i].append((number, lift[i]))
                t, shown = t + MPEG_WRAP, shown + MPEG_WRAP
            if shown < t - MPEG_WRAP / 2:  # its show time past the point, its decode not
                shown += MPEG_WRAP
                shown_lifted[i].append(number)
        if joins and not -BACKWARD_JUMP <= shown - t <= FORWARD_JUMP:  # not a muxer's rounding
            # MPEG-PS's parser guesses times across a join: a part's first picture came
            # with the old clock's decode time, a part's last with a show time from a
            # later part (held for 83 minutes). A keyframe opens a part: its show time
            # is the one; elsewhere it is the guess, and the picture takes its place by
            # the ones around it.
            if p.is_keyframe:
                t = shown
            else:
                untimed[i].append(number)
                shown = t
        parts = len(ends[i]) - 1  # the stream's jumps so far
        jumped = (
            joins
            and before is not None
            and not before - BACKWARD_JUMP <= t <= before + FORWARD_JUMP
        )
        if (
            jumped
            and before is not None
            and t > before
            and any(
                j != i and len(ends[j]) - 1 == parts and abs(c - t) < SAME_JUMP
                for j, c in last.items()
            )
        ):
            # One stream's pause (a camera that stopped sending pictures for 12 s) while
            # the others' clocks went on to this time: not a join, and moving it to follow
            # them put it out of sync by as much as they ran ahead in the file.
            jumped = False
        # A stream that starts after a join (no sound before it) lands with the others;
        # left as stored it played an hour off.
        late = joins and before is None and any(abs(e.lands - shown) < SAME_JUMP for e in events)
        if jumped or late:
            by = t - before if before is not None else None
            # what has played by now, each stream's part so far (this one's whole)
            now = [((j, len(e) - 1), e[-1]) for j, e in ends.items() if e[-1] is not None]
            events.append(_Event(g, i, len(ends[i]) - 1, number, shown, by, now))
            ends[i].append(None)
            step.pop(i, None)
        elif before is not None and t > before:
            step[i] = t - before
            end = ends[i][-1]
            if end is not None and i not in unclocked and abs(shown - end) > SMALL_GAP:
                # Gaps add up (eight dropouts of 85 ms played 0.68 s early), and overlaps
                # take off from them (a jittery clock nets to nothing); a muxer's rounding
                # (a millisecond a packet) is neither.
                drift[i] = drift.get(i, 0.0) + shown - end
                if drift[i] > PAUSE:
                    paused.add(i)
        if len(ends[i]) == 1:
            start = min(start, shown)
        last[i] = t
        unclocked.discard(i)
        length = float(p.duration * p.time_base) if p.duration else step.get(i, 0.0)
        end = ends[i][-1]
        ends[i][-1] = max(end if end is not None else shown, shown + length)
    timeline = _joins(events, ends, 0.0 if math.isinf(start) else start) if events else None
    if timeline is None:
        if not paused and not any(lifts.values()):
            return None
        timeline = Timeline(
            shifts={},
            jumps=(),
            ends={
                i: max(x for x in e if x is not None)
                for i, e in ends.items()
                if any(x is not None for x in e)
            },
        )
    return replace(
        timeline,
        shifts=_lifted(timeline, lifts),
        untimed={i: frozenset(n) for i, n in untimed.items() if n},
        shown_later={i: frozenset(n) for i, n in shown_lifted.items() if n},
        paused=frozenset(paused),
    )


def _lifted(
    timeline: Timeline, lifts: dict[int, list[tuple[int, float]]]
) -> dict[int, tuple[tuple[int, ...], tuple[float, ...]]]:
    """The timeline's shifts with each stream's unwrapping ``lifts`` (packet number,
    seconds added from it on) added to them."""
    shifts = dict(timeline.shifts)
    for i, mine in lifts.items():
        if not mine:
            continue
        starts = [n for n, _ in mine]
        numbers = sorted({*shifts.get(i, ((), ()))[0], *starts})
        lift = [bisect.bisect_right(starts, n) for n in numbers]
        seconds = [
            timeline.seconds(i, n) + (mine[k - 1][1] if k else 0.0)
            for n, k in zip(numbers, lift, strict=True)
        ]
        shifts[i] = (tuple(numbers), tuple(seconds))
    return shifts


#: Two streams' jumps this many packets apart or more are not one join.
MAX_APART = 1000


@dataclass
class _Event:
    """One stream's clock jumping: where in the file, which of its jumps, the number of
    its packet it jumps at, the time it lands on (as stored), and by how much (None for
    a stream's first packet after a join)."""

    g: int
    stream: int
    nth: int
    number: int
    lands: float
    by: float | None
    #: ((stream, its part), where that part ends as stored) for every stream at the time
    now: list[tuple[tuple[int, int], float]]


def _joins(
    events: list[_Event], ends: dict[int, list[float | None]], start: float
) -> Timeline | None:
    """Match the streams' jumps into joins and solve each join's shift.

    Jumps of different streams landing alike and nearest in the file are one join, each
    stream once: parts recorded alike start on alike clocks (a camcorder's at 1.4 s), so
    the landing alone matched the sound of a third part to the first join when the
    second part had none (it played under the second part's picture). A join's part
    starts once everything before it has ended, where its earliest packet lands.
    """
    parent = list(range(len(events)))
    members = [{e.stream} for e in events]

    def root(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    pairs = []
    for x, a in enumerate(events):  # in file order: only those near each other in it
        for y in range(x + 1, len(events)):
            b = events[y]
            if b.g - a.g >= MAX_APART:
                break  # a clock stepping back every second made thousands, paired each
            if a.stream != b.stream and abs(a.lands - b.lands) < SAME_JUMP:
                pairs.append((b.g - a.g, x, y))
    pairs.sort()
    for _, x, y in pairs:
        rx, ry = root(x), root(y)
        if rx != ry and not members[rx] & members[ry]:
            parent[ry] = rx
            members[rx] |= members[ry]
    clusters: dict[int, list[_Event]] = {}
    for x, e in enumerate(events):
        clusters.setdefault(root(x), []).append(e)
    # A first packet that matched no other stream's jump starts no join of its own.
    joined = sorted(
        (c for c in clusters.values() if any(e.by is not None for e in c)),
        key=lambda c: min(e.g for e in c),
    )
    if not joined:
        return None
    join_of: dict[tuple[int, int], int] = {}  # (stream, its nth jump) -> join
    for k, c in enumerate(joined):
        for e in c:
            join_of[(e.stream, e.nth)] = k
    # the join each part of each stream follows (-1: the first); a jump matched to no
    # join stays in the part before it
    part_join: dict[tuple[int, int], int] = {}
    for i, stream_ends in ends.items():
        for n in range(len(stream_ends)):
            part_join[(i, n)] = join_of.get((i, n - 1), part_join.get((i, n - 1), -1))
    shift: list[float] = []
    jumps: list[Jump] = []
    for k, c in enumerate(joined):
        # After what had played when its streams jumped (a stream's jump alone, a glitch,
        # follows the others where they were then, not where they end much later).
        before = [
            end + (shift[j] if j >= 0 else 0.0)
            for e in c
            for part, end in e.now
            if (j := part_join[part]) < k
        ]
        end = max(before, default=0.0)
        shift.append(end - min(e.lands for e in c))
        by = next(e.by for e in sorted(c, key=lambda e: e.g) if e.by is not None)
        if by > MPEG_WRAP / 2:  # a step back that FFmpeg's unwrapping reads as ahead
            by -= MPEG_WRAP
        jumps.append(Jump(at=end - start, by=by))
    shifts: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {}
    for i in ends:
        mine = sorted(
            (e.number, join_of[(i, e.nth)])
            for e in events
            if e.stream == i and (i, e.nth) in join_of
        )
        if mine:
            shifts[i] = (tuple(n for n, _ in mine), tuple(shift[k] for _, k in mine))
    return Timeline(
        shifts=shifts,
        jumps=tuple(jumps),
        ends={
            i: max(
                end + (shift[j] if (j := part_join[(i, n)]) >= 0 else 0.0)
                for n, end in enumerate(e)
                if end is not None
            )
            for i, e in ends.items()
            if any(end is not None for end in e)
        },
    )
