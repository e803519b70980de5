"""The input's audio carried into an output, every track of it: stream-copied when the
container can hold the codec, else re-encoded (AAC, or Opus in WebM, which cannot hold AAC).

Why a module of its own: the audio path has its own failure modes (codecs FFmpeg cannot
decode, sample rates an encoder refuses, channel layouts to mix down) that a video output
must survive, and :mod:`vidmat.io.video` is about frames.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidmat.io.channels import layouts_to_try, left_out_of_mix
from vidmat.io.pyav import av_errors, open_input
from vidmat.io.timeline import Timeline, scan_pauses


@dataclass(frozen=True)
class AudioInfo:
    """One audio stream (track) of an input; copied or re-encoded into the output."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    duration: float | None
    #: Its place among the file's audio tracks, from 1 (``index`` counts all streams).
    number: int = 1
    #: The track's name ("Microphone") and ISO 639-2 language ("eng"), when tagged.
    title: str | None = None
    language: str | None = None

    def named(self) -> str:
        """Its title for a message, ' ("Desktop")', or nothing."""
        return f' ("{self.title}")' if self.title else ""


def track_title(tags: Mapping[str, str]) -> str | None:
    """A track's name from its tags: Matroska's ``title``; MP4 and MOV keep it as
    ``name`` (the 'udta' box FFmpeg writes a title to) or as the handler name, which
    tools such as ``ffmpeg -metadata:s:a handler_name=...`` set, but which most files
    fill with their muxer's generic word ("SoundHandler"), no name at all."""
    for key in ("title", "name"):
        if tags.get(key, "").strip():
            return tags[key].strip()
    handler = tags.get("handler_name", "").strip()
    word = handler.lower()
    generic = (
        not word or word in GENERIC_HANDLERS or any(w in word for w in ("handler", "produced"))
    )
    return None if generic else handler


#: Handler names muxers write that name no track (lower case), besides any with
#: "handler" ("SoundHandler") or "produced" ("ISO Media file produced by Google Inc.").
GENERIC_HANDLERS = frozenset({"core media audio", "audio", "stereo", "mono", "sound"})
#: The languages a .mov can name: QuickTime's table of Macintosh language codes, as
#: FFmpeg's mov muxer holds it (every three-letter code written and read back, PyAV 18).
#: Any other tag is dropped from a .mov without a word, so it is warned about instead.
MOV_LANGUAGES = frozenset({
    "alb", "amh", "ara", "arm", "asm", "aym", "aze", "baq", "bel", "ben", "bul", "bur",
    "cat", "ces", "chi", "dan", "dut", "dzo", "eng", "epo", "est", "fin", "fra", "geo",
    "ger", "gre", "grn", "guj", "heb", "hin", "hun", "ice", "ind", "iri", "ita", "jav",
    "jpn", "kan", "kas", "kaz", "khm", "kin", "kir", "kor", "kur", "lao", "lat", "lav",
    "lit", "mac", "mal", "mar", "may", "mlg", "mlt", "mol", "mon", "nep", "nor", "nya",
    "ori", "orm", "per", "pol", "por", "pus", "que", "ron", "run", "rus", "san", "sin",
    "slk", "slv", "smi", "snd", "som", "spa", "sve", "swa", "tam", "tat", "tel", "tgk",
    "tgl", "tha", "tib", "tir", "tuk", "tur", "uig", "ukr", "urd", "uzb", "vie", "wel",
    "yid",
})  # fmt: skip
#: Codes of a language that the table spells otherwise: ISO 639-2's two codes for twenty
#: languages, of which the table has one (the bibliographic "ger", but the terminological
#: "fra"), two it spells by older codes (Swedish "sve", Irish "iri"), and languages it
#: knows by their macrolanguage (Norwegian Bokmål and Nynorsk as "nor", Filipino as
#: Tagalog "tgl").
MOV_LANGUAGE_ALIASES = {
    "bod": "tib", "cym": "wel", "cze": "ces", "deu": "ger", "ell": "gre", "eus": "baq",
    "fas": "per", "fre": "fra", "gle": "iri", "hye": "arm", "isl": "ice", "kat": "geo",
    "mkd": "mac", "msa": "may", "mya": "bur", "nld": "dut", "rum": "ron", "slo": "slk",
    "sqi": "alb", "swe": "sve", "zho": "chi", "nob": "nor", "nno": "nor", "fil": "tgl",
}  # fmt: skip


def mov_language(lang: str) -> str | None:
    """The code a .mov names ``lang`` by, or None when QuickTime's table has none."""
    code = MOV_LANGUAGE_ALIASES.get(lang, lang)
    return code if code in MOV_LANGUAGES else None


def iso_language(code: str) -> str:
    """A language code read from a file in ISO 639-2: a .mov's Swedish "sve" and Irish
    "iri" (QuickTime's own spellings) as "swe" and "gle", for outputs other than mov."""
    return QUICKTIME_ONLY.get(code, code)


#: QuickTime's spellings that are not ISO 639-2 codes.
QUICKTIME_ONLY = {"sve": "swe", "iri": "gle"}


def track_tags(info: AudioInfo, container: str) -> dict[str, str]:
    """The tags that name a track in ``container``: its title (MP4/MOV also as the
    handler name, which players such as QuickTime show) and its language."""
    tags = {}
    if info.title:
        tags["title"] = info.title
        if container in ("mp4", "mov"):
            tags["handler_name"] = info.title
    lang = mov_language(info.language) if info.language and container == "mov" else info.language
    if lang:
        tags["language"] = lang
    return tags


#: Audio codecs each container takes as a stream copy; anything else is re-encoded.
AUDIO_COPY: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac"}),
    "mov": frozenset(
        {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}
    ),
    "webm": frozenset({"opus", "vorbis"}),
}
#: FFmpeg's decoder names for codecs that have several decoders, as the codec's own name
#: (PyAV reports the decoder: an MP3 stream reads "mp3float").
CODEC_NAMES = {"mp3float": "mp3", "mp2float": "mp2", "ac3_fixed": "ac3", "aac_fixed": "aac"}
#: Re-encode target when the copy is not possible (WebM cannot hold AAC).
AUDIO_FALLBACK: dict[str, str] = {"mp4": "aac", "mov": "aac", "webm": "libopus"}
#: libswresample options for every re-encode. With float output (what AAC takes) FFmpeg's
#: default 5.1/quad -> stereo matrix is not normalised: each side sums 1 + 0.71 + 0.71 of
#: its channels and loud surround clips at +4 dBFS, while s16 output (what libopus gets)
#: is normalised and 2.4x quieter. ``rematrix_maxval`` 1 normalises it for every format,
#: so a downmix never clips and sounds the same in mp4 and webm; it only acts when the
#: channel layout changes (stereo and mono pass as they are).
RESAMPLE_OPTIONS: dict[str, str] = {"rematrix_maxval": "1.0"}
#: A changed sample rate goes no higher than this: every player takes 48 kHz, not all 96.
MAX_NEW_RATE = 48000


class AudioUnusable(ValueError):
    """Why the input's audio cannot go into an output (no decoder for its codec, an encoder
    that will not open): the video is then written without it. A ValueError, so it is one
    of :func:`av_errors` and callers that catch those leave the audio out, not the video."""


def encoder_rate(codec: av.Codec, rate: int) -> int:
    """A sample rate ``codec`` encodes, for input at ``rate``: ``rate`` itself when the
    encoder takes it (or lists no rates), else the next higher rate it lists (nothing of
    the input's bandwidth is lost: 37.8 kHz -> 44.1 kHz for AAC), up to :data:`MAX_NEW_RATE`
    (192 kHz -> 48 kHz). AAC refuses rates outside its table when it opens, which used to
    fail the whole output."""
    rates = sorted(codec.audio_rates or ())
    if not rates or rate in rates:
        return rate
    fits = [r for r in rates if r <= MAX_NEW_RATE] or rates
    higher = [r for r in fits if r > rate]
    return min(higher) if higher else max(fits)


@dataclass(frozen=True)
class Encoding:
    """How the input's audio is re-encoded: encoder, rate, channel layout, sample format."""

    codec: str
    rate: int
    layout: str
    sample_format: str
    #: Channels a stereo mix of surround leaves out (FFmpeg has no rule for them).
    left_out: tuple[str, ...] = ()


def plan_encoding(
    stream: Any, info: AudioInfo, container: str, copy: bool = True
) -> Encoding | None:
    """None when ``container`` takes the audio as a stream copy (and ``copy`` allows it);
    else the re-encode, checked.

    Raises :class:`AudioUnusable` when FFmpeg has no decoder for the stream or the encoder
    will not open with these settings. The encoder is opened here on a context of its own,
    before any stream is added to the output: FFmpeg opens every stream's encoder when it
    writes the file's header, so an audio encoder that fails then takes the video with it.
    """
    if copy and info.codec in AUDIO_COPY.get(container, frozenset()):
        return None
    if stream.codec_context is None:
        raise AudioUnusable("FFmpeg has no decoder for its codec")
    codec = av.Codec(AUDIO_FALLBACK[container], "w")
    if info.codec in AUDIO_COPY.get(container, frozenset()) and _lossless(info.codec):
        # Re-encoded only to fill gaps: PCM in a .mov stays PCM, not a lossy AAC.
        with contextlib.suppress(*av_errors()):
            codec = av.Codec(info.codec, "w")
    rate = encoder_rate(codec, info.sample_rate or MAX_NEW_RATE)
    # Every audio encoder lists its sample formats; the stubs allow None for other codecs.
    sample_format = codec.audio_formats[0].name  # type: ignore[index]
    own = getattr(stream.codec_context, "layout", None)
    layouts = layouts_to_try(own, info.channels, codec.name)
    for layout in layouts:
        trial: Any = av.CodecContext.create(codec, "w")  # an audio context
        try:  # a layout FFmpeg cannot name ("6 channels") is refused by the setter
            trial.sample_rate, trial.layout, trial.format = rate, layout, sample_format
            trial.time_base = Fraction(1, rate)
            trial.open()
        except (av.error.FFmpegError, ValueError) as exc:
            if layout == layouts[-1]:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise AudioUnusable(
                    f"the {codec.name} encoder would not open at {rate} Hz {layout} ({reason})"
                ) from None
            continue
        left_out: tuple[str, ...] = ()
        if layout == "stereo" and info.channels > 2 and own is not None:
            with contextlib.suppress(*av_errors()):
                left_out = tuple(left_out_of_mix(own, RESAMPLE_OPTIONS))
        return Encoding(codec.name, rate, layout, sample_format, left_out)
    raise AssertionError("unreachable: the last layout returns or raises")


#: A gap in re-encoded sound longer than this (seconds) is filled with silence.
SILENCE_FROM = 0.002

#: Sound re-encoded within a second past the picture's end at most: beyond, a time
#: stamped after a gap is a damaged one (a packet at an hour gave an hour of silence).
PAST_PICTURE = 1.0


def _lossless(codec: str) -> bool:
    return codec.startswith("pcm_") or codec in ("flac", "alac")


class NoSound(Exception):
    """A track without a single packet: left out rather than written empty (WebM kept it
    as a silent track, while MP4 and MOV leave such a track out)."""


def _ends_by_zero(packet: Any) -> bool:
    """Whether a (shifted) packet's sound ends at or before the output's time 0."""
    if packet.pts is None or not packet.time_base:
        return False
    if not packet.duration:  # its length unknown: only a start before 0 tells
        return packet.pts < 0
    return packet.pts + packet.duration <= 0


class AudioPass:
    """Moves one audio stream of the input into the output, interleaved with the video.

    It demuxes its own handle on the input (packets only, cheap), so the decoder thread
    never has to route audio, and writes packets up to the time the video has reached;
    muxing everything at the end would make FFmpeg's interleaver hold all video packets.
    """

    def __init__(
        self,
        src: Path,
        info: AudioInfo,
        out: Any,
        fmt: str,
        offset: float,
        timeline: Timeline | None = None,
    ) -> None:
        self.track = info
        self._offset = offset
        self._clock = timeline.clock() if timeline is not None and timeline.moves else None
        self._in = open_input(src)
        try:
            self._src_stream = self._in.streams[info.index]
            # A joined file's parts leave gaps in its sound (a part without any, one whose
            # sound ends before its picture), as does a TS/PS track that pauses: copied,
            # MP4 keeps no gap and players played the sound after it that much early (2 s
            # with a silent middle part); re-encoded, the gaps are filled with silence.
            gaps = timeline is not None and (timeline.joined or info.index in timeline.paused)
            try:
                encoding = plan_encoding(self._src_stream, info, fmt, copy=not gaps)
            except AudioUnusable:
                if not gaps:
                    raise
                # no decoder for it: copied, gaps and all, rather than left out
                encoding = plan_encoding(self._src_stream, info, fmt)
            self._open(out, encoding, fmt)
            #: Copied though it has gaps (re-encoding was unusable): they are not filled.
            self.gaps_kept = gaps and self.copy
        except BaseException:
            self._in.close()
            raise

    def _open(self, out: Any, encoding: Encoding | None, fmt: str) -> None:
        """The output stream, and the decoder and resampler a re-encode needs."""
        info = self.track
        self._packets = self._in.demux(self._src_stream)
        self._pending: Any = None
        self._pending = self._next()  # a damaged first packet: left out with its error
        if self._pending is None:
            raise NoSound(f"track {info.number} holds no sound")
        self.copy = encoding is None
        #: Channels the output track has: fewer than the input's only where a surround
        #: layout had to be mixed down (an encoder that takes none of its layouts), and
        #: those of them the mix left out.
        self.channels = (
            info.channels if encoding is None else av.AudioLayout(encoding.layout).nb_channels
        )
        self.left_out = () if encoding is None else encoding.left_out
        self._resampler = None
        if encoding is None:
            self.stream = out.add_stream_from_template(self._src_stream)
            self._decoder: Any = None
        else:
            rate, layout = encoding.rate, encoding.layout
            self.stream = out.add_stream(encoding.codec, rate=rate, layout=layout)
            self.stream.time_base = Fraction(1, rate)
            self._encoding = encoding
            self._resampler = self._new_resampler()
            self._decoder = self._src_stream.codec_context
        tags = track_tags(info, fmt)
        self.stream.metadata.update(tags)
        #: A language the output cannot name (a .mov: QuickTime's table lacks it).
        self.language_lost = info.language if "language" not in tags else None
        self.done = False
        self.packets = 0
        self.skipped = 0  # damaged packets, and re-encoded sound whose time stepped back
        #: WebM and Matroska store no time before 0: a copied packet there moved the whole
        #: output later by that much (see _write).
        self._no_negative = fmt == "webm"
        self._fed: tuple[str, str, int] | None = None  # what the resampler was set up for
        self._sent_until = -math.inf  # input seconds of sound already encoded
        #: Output seconds sound may be re-encoded to after a gap (the caller sets it to
        #: the picture's end + PAST_PICTURE before the last of the sound); None: no end.
        self.limit: float | None = None
        self.past_end: float | None = None  # the first time left out past ``limit``
        self.filled = 0.0  # seconds of silence put into gaps

    def _next(self) -> Any:
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        for p in self._packets:
            if p.size:  # skip the demuxer's empty flush packets
                if self._clock is not None:
                    self._clock.shift(p)
                return p
        return None

    def _time(self, packet: Any) -> float:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return 0.0
        return float(ts * packet.time_base)

    def write_until(self, out: Any, seconds: float | None) -> None:
        """Mux audio up to ``seconds`` of input time (everything when None)."""
        if self.done:
            return
        while True:
            try:
                packet = self._next()
            except av_errors():
                packet = None  # damaged audio tail: keep what we have
            if packet is None:
                self._finish(out)
                return
            if seconds is not None and self._time(packet) > seconds:
                self._pending = packet
                return
            self._write(out, packet)

    def _shift(self, packet: Any) -> None:
        if self._offset and packet.time_base:
            d = round(self._offset / packet.time_base)
            if packet.pts is not None:
                packet.pts -= d
            if packet.dts is not None:
                packet.dts -= d

    def _write(self, out: Any, packet: Any) -> None:
        if self.copy:
            self._shift(packet)
            if self._no_negative and _ends_by_zero(packet):
                # Sound a trim hid before the start (an edit list's pre-roll, which MP4 keeps
                # hidden): copied into WebM it shifted picture and sound a second later, the
                # hidden second playing first. It is not heard in the input either.
                return
            packet.stream = self.stream
            try:
                out.mux(packet)
            except av_errors():
                # A damaged packet the muxer's bitstream filter cannot parse (ADTS in a
                # damaged MPEG-TS): lose that packet's few milliseconds, not the output.
                self.skipped += 1
                return
            self.packets += 1
            return
        try:
            frames = self._decoder.decode(packet)
        except av_errors():
            self.skipped += 1  # said with the copy path's: it was left out in silence
            return
        for f in frames:
            if f.pts is not None and f.time_base and f.sample_rate:
                # Decoders hand out pts in the stream's time base (in an AVI, one MP3 frame
                # of 1152 samples); the resampler and encoder count samples, and fed frame
                # numbers they emit repeated timestamps the muxer refuses. Count samples.
                seconds = float(f.pts * f.time_base) - self._offset
                length = f.samples / f.sample_rate
                if seconds + length / 2 < self._sent_until:
                    # The clock stepped back (by less than the timeline takes for a join,
                    # or in a file not MPEG-TS/PS): sound for a time already written
                    # cannot go in again; the muxer refused it.
                    self.skipped += 1
                    continue
                gap = math.isfinite(self._sent_until) and seconds - self._sent_until > SILENCE_FROM
                if gap and self.limit is not None and seconds > self.limit:
                    # after a gap and past the picture's end: a damaged time, not a pause
                    self.past_end = self.past_end if self.past_end is not None else seconds
                    continue
                if gap:
                    self._silence(out, f, self._sent_until, seconds)
                self._sent_until = max(self._sent_until, seconds + length)
                f.pts = round(seconds * f.sample_rate)
                f.time_base = Fraction(1, f.sample_rate)
            self._encode(out, f)

    def _silence(self, out: Any, like: Any, start: float, end: float) -> None:
        """Silence from ``start`` to ``end`` (output seconds) in ``like``'s format: a gap
        in the sound's clock is played as one by every player, not closed up (the sound
        after it early by as much, in those that play the samples one after the other)."""
        rate = int(like.sample_rate)
        at, stop = round(start * rate), round(end * rate)
        self.filled += end - start
        while at < stop:
            n = min(stop - at, rate)  # a second at most a frame
            quiet = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=n)
            # PyAV lists more planes than a planar frame of 8+ channels has (9 for 7.1),
            # and writing the extra one crashed the process: only the real ones.
            planes = like.layout.nb_channels if like.format.is_planar else 1
            fill = b"\x80" if like.format.name.startswith("u8") else b"\0"  # u8's zero
            for plane in quiet.planes[:planes]:
                plane.update(fill * plane.buffer_size)
            quiet.sample_rate, quiet.pts, quiet.time_base = rate, at, Fraction(1, rate)
            self._encode(out, quiet)
            at += n

    def _new_resampler(self) -> Any:
        e = self._encoding
        return av.AudioResampler(
            format=e.sample_format, layout=e.layout, rate=e.rate, options=RESAMPLE_OPTIONS
        )

    def _encode(self, out: Any, frame: Any) -> None:
        assert self._resampler is not None
        fed = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        if self._fed is not None and fed != self._fed:
            # The input changes layout or rate (mono to stereo at a broadcast's ad break):
            # the resampler is set up for the first it saw and refuses others.
            self._flush_resampler(out)
            self._resampler = self._new_resampler()
        self._fed = fed
        for r in self._resampler.resample(frame):
            self._mux(out, self.stream.encode(r))

    def _flush_resampler(self, out: Any) -> None:
        assert self._resampler is not None
        for r in self._resampler.resample(None):
            self._mux(out, self.stream.encode(r))

    def _mux(self, out: Any, packets: Any) -> None:
        """Mux encoded packets; one the muxer refuses costs its few ms, not the output."""
        for p in packets:
            try:
                out.mux(p)
            except av_errors():
                self.skipped += 1
                continue
            self.packets += 1

    def _finish(self, out: Any) -> None:
        if self.done:
            return
        self.done = True
        if not self.copy:
            with contextlib.suppress(*av_errors()):
                for f in self._decoder.decode(None):
                    self._encode(out, f)
            self._flush_resampler(out)
            self._mux(out, self.stream.encode(None))  # a track of a few ms has all its packets here
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._in.close()


#: A track that could not be carried, and why.
LeftOut = tuple[AudioInfo, BaseException]


def open_tracks(
    src: Path,
    tracks: Sequence[AudioInfo],
    out: Any,
    fmt: str,
    offset: float,
    timeline: Timeline | None = None,
) -> tuple[list[AudioPass], list[LeftOut]]:
    """A pass for each of ``tracks`` that can go into ``out``, and those that cannot.

    Every track, not the first alone: a recording with the microphone and the desktop
    sound on tracks of their own (as OBS makes them) would otherwise lose all but one.
    One that cannot be carried (no decoder, an encoder that will not open) costs neither
    the video nor the other tracks.
    """
    passes: list[AudioPass] = []
    left_out: list[LeftOut] = []
    if timeline is None and tracks:  # a TS/PS was scanned by its reader already
        timeline = scan_pauses(src, [t.index for t in tracks])
    try:
        for track in tracks:
            try:
                passes.append(AudioPass(src, track, out, fmt, offset, timeline))
            except av_errors(NoSound) as exc:
                left_out.append((track, exc))
    except BaseException:  # Ctrl-C: the inputs opened so far are closed, not lost
        for audio in passes:
            audio.close()
        raise
    return passes, left_out


def write_audio_file(
    src: Path,
    tracks: Sequence[AudioInfo],
    dst: Path,
    offset: float = 0.0,
    timeline: Timeline | None = None,
    limit: float | None = None,
) -> tuple[list[AudioPass], list[LeftOut]]:
    """The audio of ``src`` as an .m4a beside a PNG sequence, each track a track of it:
    the passes written (``copy`` says how) and the tracks left out. With none written no
    file is left, so the frames already written are not lost to their audio. ``limit``:
    see :attr:`AudioPass.limit`.

    MP4 rather than Matroska: it keeps the AAC encoder delay (priming samples) in its
    edit list, so the audio stays in sync with frame 1 to the sample. The tracks are
    written one after the other; the file holds no video to interleave them with.
    """
    out = av.open(str(dst), "w", format="mp4")
    try:
        passes, left_out = open_tracks(src, tracks, out, "mp4", offset, timeline)
    except BaseException:
        out.close()
        raise
    if not passes:
        out.close()
        dst.unlink(missing_ok=True)
        return passes, left_out
    try:
        for audio in passes:
            audio.limit = limit
            audio.write_until(out, None)
    finally:
        for audio in passes:
            audio.close()
        out.close()
    if not any(audio.packets for audio in passes):  # tracks without a sound: no file
        dst.unlink(missing_ok=True)
    return passes, left_out
