"""Which channel layout a re-encoded audio track takes, and what a stereo mix leaves out.

A track is re-encoded when the output container cannot take it as it is (FLAC, PCM or
AC3 into WebM; FLAC or Opus into MP4). AAC and Opus carry up to 7.1, but only some
layouts come back out of the file as written: the tables here are measured (PyAV 18's
FFmpeg; ``tests/test_io_audio.py`` checks each channel's level and place in the
common ones).
A track goes, in this order, into its own layout where the encoder keeps it, into the
smallest kept layout that has a place of its own for each of its channels (5.0 into
Opus's 5.1 with a silent LFE), and only then into a stereo mix, which is reported.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np

#: Surround layouts each fallback encoder writes so that the file reads back as that very
#: layout with every channel in its place, smallest first. Others open too, but AAC then
#: stores a channel list of its own that reads back as "6 channels" (order unknown), and
#: libopus swaps channels of 5.0 and 6.1 (the centre comes out of the back right).
KEPT_LAYOUTS: dict[str, tuple[str, ...]] = {
    "aac": ("2.1", "3.0", "quad", "4.0", "5.0", "5.1", "7.1"),
    "libopus": ("3.0", "quad", "5.1", "7.1"),
}
#: The layout a track whose channel order is unknown ("6 channels") is read as: FFmpeg's
#: resampler's default order for so many channels (5 -> 5.0, 7 -> 6.1, measured).
USUAL_LAYOUTS: dict[int, str] = {3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
#: Where FFmpeg's resampler puts a channel the output layout lacks, one to one (a side
#: speaker plays from the back one on that side) or split evenly (back centre).
_MOVES: dict[str, tuple[str, ...]] = {"SL": ("BL",), "SR": ("BR",), "BC": ("BL", "BR")}


def channel_names(layout: str) -> list[str]:
    """FFmpeg's channel names of a layout, in order ("5.1" -> FL FR FC LFE BL BR).

    By name only: a stream's ``av.AudioLayout`` is read through its own ``.channels``,
    because wrapping one of a custom order again aborts PyAV 18 (a double free)."""
    return [c.name for c in av.AudioLayout(layout).channels]


def places_each(target: str, source: list[str]) -> bool:
    """Whether ``target`` has a place of its own for each of ``source``'s channels: the
    same channel, or the speaker the resampler moves it to when that one is free (not a
    channel of the source too, and not taken by another). Two channels mixed into one
    speaker do not count: the mix is normalised, and every channel came out 4-5 dB
    quieter (hexagonal into 5.1)."""
    have = set(channel_names(target))
    taken: set[str] = set()
    for ch in source:
        if ch in have:
            spot: tuple[str, ...] = (ch,)
        else:
            spot = _MOVES.get(ch, ())
            if not spot or not set(spot) <= have or set(spot) & set(source):
                return False
        if set(spot) & taken:
            return False
        taken |= set(spot)
    return True


def layouts_to_try(layout: Any, channels: int, encoder: str) -> list[str]:
    """Channel layouts for a re-encode by ``encoder``, best first (see the module's
    docstring); mono and stereo stay as they are. ``layout`` is the input's
    ``av.AudioLayout`` (None when unknown)."""
    if channels <= 2:
        return ["mono" if channels == 1 else "stereo"]
    kept = KEPT_LAYOUTS.get(encoder, ())
    names = [c.name for c in layout.channels] if layout is not None else []
    own = layout.name if layout is not None else None
    if len(names) != channels or "NONE" in names:
        # Order unknown: FFmpeg's resampler reads it in its default order for the count.
        own = USUAL_LAYOUTS.get(channels)
        if own is None:
            return ["stereo"]
        names = channel_names(own)
    if own in kept:
        return [own, "stereo"]
    placed = [k for k in kept if places_each(k, names)]
    return [*placed[:1], "stereo"]


def left_out_of_mix(layout: Any, options: dict[str, str], into: str = "stereo") -> list[str]:
    """The channels of ``layout`` that FFmpeg's mix into ``into`` drops (it has no rule for
    wide and top speakers, and leaves LFE out), found by resampling each channel alone.
    Unnamed channels (order unknown) by their number from 1 ("4")."""
    names = [c.name for c in layout.channels]
    if not _probe_safe(names):
        return []  # not found out: the warning says the mix, without the channels
    rate = 48000
    out = []
    for k, name in enumerate(names):
        tone = np.zeros((256, len(names)), np.float32)
        tone[:, k] = 0.5
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        mixer = av.AudioResampler(format="flt", layout=into, rate=rate, options=options)
        heard = [f.to_ndarray() for f in [*mixer.resample(frame), *mixer.resample(None)]]
        if not heard or max(float(np.abs(a).max()) for a in heard) < 1e-4:
            out.append(name if name != "NONE" else str(k + 1))
    return out


#: FFmpeg's channels in their native order (the bits of a channel mask).
_NATIVE_ORDER = (
    "FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR", "TC", "TFL", "TFC",
    "TFR", "TBL", "TBC", "TBR", "DL", "DR", "WL", "WR", "SDL", "SDR", "LFE2", "TSL", "TSR",
    "BFC", "BFL", "BFR",
)  # fmt: skip


def _probe_safe(names: list[str]) -> bool:
    """Whether a probe frame can be made in this layout: unnamed channels or FFmpeg's
    native order. PyAV 18 frees a custom-order layout twice when a frame is made in it
    (the process aborts), so such a layout is not probed."""
    if all(n == "NONE" for n in names):
        return True
    places = [_NATIVE_ORDER.index(n) if n in _NATIVE_ORDER else -1 for n in names]
    return -1 not in places and places == sorted(set(places))


def channel_list(names: list[str] | tuple[str, ...]) -> str:
    """Channels for a message: "LFE", "TFC, WL and WR", "channels 4, 13 and 14"."""
    numbered = all(n.isdigit() for n in names)
    shown = [n if numbered or not n.isdigit() else f"channel {n}" for n in names]
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    if numbered:
        return f"channel{'s' if len(names) > 1 else ''} {listed}"
    return listed
