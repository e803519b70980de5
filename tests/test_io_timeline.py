"""Clock jumps in MPEG-TS/PS: which packets move, and by how much (vidmat.io.timeline)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from vidmat.io.timeline import MPEG_WRAP, Timeline, _scan

MS = Fraction(1, 1000)
V, A = 0, 1


def packet(stream: int, pos: int, ms: int, length: int = 40, shown: int | None = None):
    """A demuxed packet: decode time ``ms``, shown at ``shown`` (B-frames) else then;
    ``pos`` orders the file (MPEG-PS leaves real ones without a position)."""
    return SimpleNamespace(
        stream=SimpleNamespace(index=stream),
        pos=pos,
        size=100,
        dts=ms,
        pts=ms if shown is None else shown,
        duration=length,
        time_base=MS,
        is_keyframe=True,
    )


def scan(order: list) -> Timeline | None:
    """_scan over ``order``, each packet told its number within its stream."""
    counts: dict[int, int] = {}
    for p in order:
        p.number = counts.get(p.stream.index, 0)
        counts[p.stream.index] = p.number + 1
    return _scan(iter(order), [V, A])


def part(start_ms: int, first_pos: int, frames: int, audio_lead: int = 0) -> list:
    """A recording's packets in file order: a 40 ms frame and its 40 ms of sound in
    turn, the sound ``audio_lead`` ms ahead of the picture."""
    out = []
    for k in range(frames):
        t = start_ms + 40 * k
        out.append(packet(V, first_pos + 100 * k, t))
        out.append(packet(A, first_pos + 100 * k + 50, t - audio_lead))
    return out


def shifted(timeline: Timeline, p) -> float:
    """Where a packet plays after the shifts, in seconds."""
    return float(p.pts * MS) + timeline.seconds(p.stream.index, p.number)


def test_a_steady_clock_has_no_timeline() -> None:
    """A pause under 10 s (a screen recorder idling) is time that passed, kept as it is:
    no join, nothing moved, only the pause known (sound that pauses is re-encoded)."""
    assert scan(part(0, 0, 25)) is None
    paused = scan(part(0, 0, 25) + part(1000 + 9000, 10_000, 25))
    assert paused is not None and not paused.joined and paused.shifts == {}
    assert paused.paused == {V, A}


@pytest.mark.parametrize("start_ms", [0, 3_600_000])
def test_the_second_part_starts_where_the_first_ends_in_both_streams(start_ms: int) -> None:
    """Joined back to its start, or an hour ahead: the second part plays right after the
    first, picture and sound moved alike (their sync within the part is kept)."""
    first, second = part(0, 0, 25), part(start_ms, 10_000, 25)
    timeline = scan(first + second)
    assert timeline is not None and len(timeline.jumps) == 1
    assert timeline.jumps[0].at == pytest.approx(1.0)
    assert timeline.jumps[0].by == pytest.approx(start_ms / 1000 - 0.96)
    assert shifted(timeline, second[0]) == pytest.approx(1.0)  # the first frame after
    assert shifted(timeline, second[1]) == pytest.approx(1.0)  # its sound, in sync
    assert all(timeline.seconds(p.stream.index, p.number) == 0 for p in first)
    assert timeline.ends == pytest.approx({V: 2.0, A: 2.0})


def test_the_stream_landing_earliest_sets_the_shift() -> None:
    """The second part's sound starts 30 ms before its picture: moved by the picture's
    landing, it would overlap the first part's sound, and the muxer refused the overlap."""
    first, second = part(0, 0, 25), part(0, 10_000, 25, audio_lead=30)
    timeline = scan(first + second)
    assert timeline is not None
    assert shifted(timeline, second[1]) == pytest.approx(1.0)  # the earliest: sound
    assert shifted(timeline, second[0]) == pytest.approx(1.03)  # 30 ms after it, as stored


def test_packets_of_a_part_left_behind_keep_its_shift() -> None:
    """The picture jumps while three of the first part's sound packets are still to come
    in the file: they keep playing with the first part, not an hour off."""
    first, second = part(0, 0, 25), part(3_600_000, 10_000, 25)
    late_sound = [p for p in first[-6:] if p.stream.index == A]
    order = [p for p in first if p not in late_sound] + second[:1] + late_sound + second[1:]
    timeline = scan(order)
    assert timeline is not None and len(timeline.jumps) == 1
    assert [shifted(timeline, p) for p in late_sound] == pytest.approx([0.88, 0.92, 0.96])
    assert shifted(timeline, second[1]) == pytest.approx(shifted(timeline, second[0]))
    # and the second part starts after those, the first part's last sound ending at 0.98 s
    assert shifted(timeline, second[0]) == pytest.approx(1.0)


def test_a_stream_jumping_alone_does_not_take_the_others_jump() -> None:
    """The sound's clock steps back 0.3 s on its own at 0.5 s (a glitch), the picture's
    jumps later (a join): two jumps, each stream moved by its own, the sound's part
    after its step following what had played by then."""
    pictures = [(40 * k, packet(V, 0, 40 * k)) for k in range(25)]
    pictures += [(1000 + 40 * k, packet(V, 0, 600_000 + 40 * k)) for k in range(25)]
    sounds = [(20 * k, packet(A, 0, 20 * k, 20)) for k in range(25)]
    sounds += [(500 + 20 * k, packet(A, 0, 200 + 20 * k, 20)) for k in range(25)]
    order = [p for _, p in sorted(pictures + sounds, key=lambda tp: tp[0])]
    for pos, p in enumerate(order):
        p.pos = pos
    timeline = scan(order)
    assert timeline is not None and len(timeline.jumps) == 2
    assert len(timeline.shifts[A][0]) == 1 and len(timeline.shifts[V][0]) == 1
    assert shifted(timeline, sounds[24][1]) == pytest.approx(0.48)
    assert shifted(timeline, sounds[25][1]) == pytest.approx(0.52)  # the picture's 0.48 + 40 ms
    assert shifted(timeline, pictures[25][1]) == pytest.approx(1.02)  # after the sound's end


def test_a_stream_that_starts_after_the_join_lands_with_the_others() -> None:
    """No sound in the first part: the second part's sound, the stream's first packets,
    played an hour off (where its clock said) while the picture came after part one."""
    first = [packet(V, 100 * k, 40 * k) for k in range(25)]
    second = part(3_600_000, 10_000, 25)
    timeline = scan(first + second)
    assert timeline is not None
    assert shifted(timeline, second[0]) == pytest.approx(1.0)
    assert shifted(timeline, second[1]) == pytest.approx(1.0)


def test_packets_without_a_length_end_a_gap_later() -> None:
    """Packets that give no duration: the second part's first frame came on the very
    time of the first part's last."""
    first = [packet(V, 100 * k, 40 * k, length=0) for k in range(25)]
    second = [packet(V, 10_000 + 100 * k, 40 * k, length=0) for k in range(25)]
    timeline = scan(first + second)
    assert timeline is not None
    assert shifted(timeline, second[0]) == pytest.approx(1.0)  # 0.96 + the 40 ms gap


def test_a_decode_time_left_on_the_old_clock_is_not_taken_for_it() -> None:
    """MPEG-PS: the first picture of the new part came with a decode time the parser
    carried over from the old clock; taken as is, it stayed in the old part and its
    picture was shown an hour later."""
    first = [packet(V, 100 * k, 40 * k) for k in range(25)]
    second = [packet(V, 10_000 + 100 * k, 3_600_000 + 40 * k) for k in range(25)]
    second[0].dts = 1000  # where the old clock would be
    timeline = scan(first + second)
    assert timeline is not None and len(timeline.jumps) == 1
    assert [shifted(timeline, p) for p in second[:2]] == pytest.approx([1.0, 1.04])


def test_a_show_time_guessed_from_a_later_part_is_dropped() -> None:
    """MPEG-PS: a part's last picture (not a keyframe) came with a show time from the
    next part's clock: taken as a jump ahead and back, and the picture shown 83 minutes
    on. Its decode time is kept and its show time left to the decoder's order."""
    first = [packet(V, 100 * k, 40 * k) for k in range(25)]
    first[-1].pts, first[-1].is_keyframe = 5_000_000, False
    second = [packet(V, 10_000 + 100 * k, 40 * k) for k in range(25)]
    timeline = scan(first + second)
    assert timeline is not None and len(timeline.jumps) == 1
    assert timeline.untimed == {V: frozenset({24})}
    assert shifted(timeline, second[0]) == pytest.approx(1.0)
    clock = timeline.clock()
    for p in first:
        clock.shift(p)
    assert first[-1].pts is None and first[-1].dts == 960


def test_the_note_says_where_in_the_output_and_which_way() -> None:
    """A TS clock starting at 100 s, joined to one at 0: "jumps at 101.0 s" named the
    stored clock, and FFmpeg's unwrapping of MPEG's 33-bit clock made the step back of
    101 s "ahead 95342.7 s"."""
    wrapped = MPEG_WRAP * 1000
    first = [packet(V, 100 * k, 100_000 + 40 * k) for k in range(25)]
    second = [packet(V, 10_000 + 100 * k, round(wrapped) + 40 * k) for k in range(25)]
    timeline = scan(first + second)
    assert timeline is not None
    assert timeline.describe().startswith("the file's clock jumps at 1.0 s, back 101.0 s")


def test_a_readers_clock_counts_its_own_packets() -> None:
    """A reader shifts the packets it demuxes by their number in their stream, as the
    scan counted them: its flush packets (no data) are not counted."""
    first, second = part(0, 0, 25), part(0, 10_000, 25)
    timeline = scan(first + second)
    assert timeline is not None
    clock = timeline.clock()
    pictures = [p for p in first + second if p.stream.index == V]
    for p in pictures[:25]:
        clock.shift(p)
    clock.shift(SimpleNamespace(size=0, stream=SimpleNamespace(index=V)))
    clock.shift(pictures[25])
    assert pictures[24].pts == 960 and pictures[25].pts == 1000  # 0 ms moved to 1.0 s


def test_the_sound_after_a_part_without_sound_takes_the_latest_join() -> None:
    """Parts recorded alike start on alike clocks (1.4 s here); with no sound in the
    middle part, the third part's sound took the first join and played under the
    second part's picture, 2 s early."""
    one, three = part(1400, 0, 25), part(1400, 20_000, 25)
    two = [packet(V, 10_000 + 100 * k, 1400 + 40 * k) for k in range(25)]
    timeline = scan(one + two + three)
    assert timeline is not None and len(timeline.jumps) == 2
    assert shifted(timeline, two[0]) == pytest.approx(2.4)
    assert shifted(timeline, three[0]) == pytest.approx(3.4)
    assert shifted(timeline, three[1]) == pytest.approx(3.4)  # its sound, with it


def test_one_stream_pausing_while_the_others_go_on_is_no_join() -> None:
    """A recording whose picture stops for 12 s while its sound goes on: taken for a
    join, the picture was moved to follow the sound and came 0.16 s out of sync."""
    pictures = [packet(V, 0, 40 * k) for k in range(25)]
    pictures += [packet(V, 0, 13_000 + 40 * k) for k in range(25)]
    sounds = [packet(A, 0, 20 * k, 20) for k in range(700)]
    order = sorted(pictures + sounds, key=lambda p: p.dts)
    for pos, p in enumerate(order):
        p.pos = pos
    timeline = scan(order)
    assert timeline is not None and not timeline.joined and timeline.shifts == {}
    assert timeline.paused == {V}  # a pause, known as one (sound's would be re-encoded)


def _grey_ts(path: Path, start: float, grey: int) -> Path:
    """1 s of 64x48 pictures of one grey, 25 fps, in MPEG-TS from clock ``start``."""
    with av.open(str(path), "w", format="mpegts") as c:
        v = c.add_stream("libx264", rate=25, options={"bf": "0"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), grey, np.uint8), format="rgb24")
            f.pts, f.time_base = round(start * 25) + i, Fraction(1, 25)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def test_a_joined_background_video_loops_through_its_parts(tmp_path: Path) -> None:
    """A looping background goes back by seeking, which loses the count of packets the
    shifts go by: from its second pass on, the part an hour ahead was read as stored
    and the picture froze on the first part's last frame."""
    from vidmat.io.images import LoopingVideo

    joined = tmp_path / "bg.ts"
    parts = [_grey_ts(tmp_path / "a.ts", 0, 60), _grey_ts(tmp_path / "b.ts", 3600, 180)]
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    video = LoopingVideo(joined)
    greys = [int(video(t).mean()) for t in (0.5, 1.5, 2.5, 3.5, 4.5, 5.5)]
    assert greys == pytest.approx([60, 180] * 3, abs=6)


def test_a_joined_background_asked_ahead_decodes_on_without_reopening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jump ahead (a stalled live run catching up) reopened the file and decoded it
    from its start, as a seek cannot count its packets: 2.5 s for a 3 s jump."""
    from vidmat.io import images

    opened = []

    class Counted(images.VideoReader):
        def __init__(self, *args: object, **kwargs: object) -> None:
            opened.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(images, "VideoReader", Counted)
    greys = (40, 100, 160, 220)
    parts = [_grey_ts(tmp_path / f"{k}.ts", 3600 * k, g) for k, g in enumerate(greys)]
    joined = tmp_path / "bg.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    video = images.LoopingVideo(joined)
    assert int(video(0.1).mean()) == pytest.approx(40, abs=6)
    assert int(video(3.5).mean()) == pytest.approx(220, abs=6)  # 3.4 s ahead
    assert len(opened) == 1


def test_a_part_passing_where_ffmpeg_unwraps_the_clock_goes_on_in_one_piece() -> None:
    """FFmpeg unwraps MPEG's 33-bit clock by where the file's first part began (1000 s,
    less a minute): a second part stored from 939.5 s reads a wrap ahead until 940 s,
    then steps back by the wrap. That step was a second join, a hole in the output."""
    wrap = round(MPEG_WRAP * 1000)

    def unwrapped(ms: int) -> int:
        return ms + wrap if ms < 940_000 else ms

    first, second = part(1_000_000, 0, 25), part(939_500, 10_000, 25)
    for p in second:
        p.dts = p.pts = unwrapped(p.dts)
    timeline = scan(first + second)
    assert timeline is not None and len(timeline.jumps) == 1 and timeline.moves
    assert timeline.jumps[0].by == pytest.approx(939.5 - 1000.96, abs=0.01)
    played = [shifted(timeline, p) for p in second if p.stream.index == V]
    assert played == pytest.approx([1001.0 + 0.04 * k for k in range(25)], abs=0.001)
    sound = [shifted(timeline, p) for p in second if p.stream.index == A]
    assert sound == pytest.approx(played, abs=0.001)
    assert timeline.ends[V] == pytest.approx(1002.0, abs=0.001)


def test_sound_in_a_container_that_keeps_time_pauses_but_never_joins() -> None:
    """Matroska or FLV sound that stops for 12 s is a pause (copied into MP4, what follows
    played 12 s early), not a join: that clock cannot jump. Laced frames that come
    without a time (a block's second to eighth) are no pause."""
    sound = [packet(A, 0, 20 * k, 20) for k in range(50)]
    sound += [packet(A, 0, 13_000 + 20 * k, 20) for k in range(50)]
    for k, p in enumerate(sound):
        p.pos = k
    timeline = _scan(iter(sound), [A], joins=False)
    assert timeline is not None and not timeline.joined and not timeline.moves
    assert timeline.paused == {A}
    laced = [packet(A, k, 20 * k, 0) for k in range(80)]
    for p in laced:
        if p.pos % 8:
            p.dts = p.pts = None
    assert _scan(iter(laced), [A], joins=False) is None


def test_show_times_that_pass_the_unwrapping_point_before_decode_times_go_on_too() -> None:
    """With B-frames a picture's show time is ahead of its decode time, and FFmpeg
    unwraps each on its own: for a few packets the show time had stepped back by the wrap
    while the decode time had not. A keyframe among them was read by its show time, the
    next packets' decode times then lifted twice: a second join, pictures 80 ms late."""
    wrap = round(MPEG_WRAP * 1000)

    def unwrapped(ms: int) -> int:
        return ms + wrap if ms < 940_000 else ms

    first = part(1_000_000, 0, 25)
    second = []
    for k in range(25):
        decode = 939_500 + 40 * k
        picture = packet(V, 10_000 + 100 * k, unwrapped(decode), shown=unwrapped(decode + 80))
        picture.is_keyframe = k % 11 == 0
        second += [picture, packet(A, 10_000 + 100 * k + 50, unwrapped(decode), 20)]
    timeline = scan(first + second)
    assert timeline is not None and len(timeline.jumps) == 1
    clock = timeline.clock()
    for p in first + second:
        clock.shift(p)
    pictures = [float(p.pts * MS) for p in second if p.stream.index == V]
    sounds = [float(p.pts * MS) for p in second if p.stream.index == A]
    assert pictures == pytest.approx([s + 0.08 for s in sounds], abs=0.001)  # in sync
    assert sounds == pytest.approx([sounds[0] + 0.04 * k for k in range(25)], abs=0.001)


def test_short_dropouts_add_up_to_a_pause_and_a_jittery_clock_does_not() -> None:
    """Eight dropouts of 85 ms, each under the 0.1 s a pause takes, played 0.68 s early
    copied into MP4; a clock that wobbles 25 ms either way around 30 ms packets loses no
    time at all."""
    sound, ms = [], 0
    for k in range(80):
        sound.append(packet(A, k, ms, 20))
        ms += 20 + (85 if k % 10 == 9 else 0)
    timeline = _scan(iter(sound), [A], joins=False)
    assert timeline is not None and timeline.paused == {A}
    wobbly = [packet(A, k, 60 * (k // 2) + (55 if k % 2 else 0), 30) for k in range(80)]
    assert _scan(iter(wobbly), [A], joins=False) is None
