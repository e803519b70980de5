"""The input's audio carried into an output: stream-copied when the container can hold
the codec, else re-encoded (AAC, or Opus in WebM, which cannot hold AAC).

Why a module of its own: the audio path has its own failure modes (codecs FFmpeg cannot
decode, sample rates an encoder refuses, channel layouts to mix down) that a video output
must survive, and :mod:`vidmat.io.video` is about frames.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av


def av_errors() -> tuple[type[BaseException], ...]:
    """What PyAV raises for a damaged or unusable file (caught where a file is read)."""
    return (av.error.FFmpegError, OSError, ValueError)


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of an input; copied or re-encoded into the output."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    duration: float | None


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


class AudioPass:
    """Moves the input's first audio stream into the output, interleaved with the video.

    It demuxes its own handle on the input (packets only, cheap), so the decoder thread
    never has to route audio, and writes packets up to the time the video has reached;
    muxing everything at the end would make FFmpeg's interleaver hold all video packets.
    """

    def __init__(self, src: Path, info: AudioInfo, out: Any, fmt: str, offset: float) -> None:
        self._in = av.open(str(src), metadata_errors="ignore")
        self._src_stream = self._in.streams[info.index]
        self._packets = self._in.demux(self._src_stream)
        self._pending: Any = None
        self._offset = offset
        self.copy = info.codec in AUDIO_COPY.get(fmt, frozenset())
        self._resampler = None
        if self.copy:
            self.stream = out.add_stream_from_template(self._src_stream)
            self._decoder = None
        else:
            codec = AUDIO_FALLBACK[fmt]
            rate = info.sample_rate or 48000
            if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            layout = "stereo" if info.channels != 1 else "mono"
            self.stream = out.add_stream(codec, rate=rate, layout=layout)
            self.stream.time_base = Fraction(1, rate)
            fmt_name = self.stream.codec_context.codec.audio_formats[0].name
            self._resampler = av.AudioResampler(format=fmt_name, layout=layout, rate=rate)
            self._decoder = self._src_stream.codec_context
        self.done = False
        self.packets = 0
        self.skipped = 0  # damaged packets left out

    def _next(self) -> Any:
        if self._pending is not None:
            p, self._pending = self._pending, None
            return p
        for p in self._packets:
            if p.size:  # skip the demuxer's empty flush packets
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
            return
        for f in frames:
            if f.pts is not None and f.time_base and f.sample_rate:
                # Decoders hand out pts in the stream's time base (in an AVI, one MP3 frame
                # of 1152 samples); the resampler and encoder count samples, and fed frame
                # numbers they emit repeated timestamps the muxer refuses. Count samples.
                seconds = float(f.pts * f.time_base) - self._offset
                f.pts = round(seconds * f.sample_rate)
                f.time_base = Fraction(1, f.sample_rate)
            self._encode(out, f)

    def _encode(self, out: Any, frame: Any) -> None:
        assert self._resampler is not None
        for r in self._resampler.resample(frame):
            for p in self.stream.encode(r):
                out.mux(p)
                self.packets += 1

    def _finish(self, out: Any) -> None:
        if self.done:
            return
        self.done = True
        if not self.copy:
            with contextlib.suppress(*av_errors()):
                for f in self._decoder.decode(None):
                    self._encode(out, f)
            assert self._resampler is not None
            for r in self._resampler.resample(None):
                for p in self.stream.encode(r):
                    out.mux(p)
            for p in self.stream.encode(None):
                out.mux(p)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._in.close()


def write_audio_file(src: Path, info: AudioInfo, dst: Path, offset: float = 0.0) -> bool:
    """The audio of ``src`` as an .m4a beside a PNG sequence; True when stream-copied.

    MP4 rather than Matroska: it keeps the AAC encoder delay (priming samples) in its
    edit list, so the audio stays in sync with frame 1 to the sample.
    """
    out = av.open(str(dst), "w", format="mp4")
    try:
        audio = AudioPass(src, info, out, "mp4", offset)
        audio.write_until(out, None)
        return audio.copy
    finally:
        out.close()
