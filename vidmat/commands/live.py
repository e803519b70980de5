"""``vidmat live``: webcam (or a video file played as one) with a virtual background.

Qt is imported only when the window opens, so ``--no-window`` runs on a
machine without a display and building ``vidmat --help`` stays light.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidmat.argtypes import size_wxh
from vidmat.commands._options import (
    CONTRAST_HELP,
    FEATHER_HELP,
    GROW_HELP,
    INFER_EVERY_HELP,
    add_engine_options,
    engine_config_from_args,
)
from vidmat.core.settings import CPU_LIVE_SIZE
from vidmat.errors import VidmatError, warn

if TYPE_CHECKING:
    from vidmat.core.backgrounds import Background
    from vidmat.core.engine import Engine
    from vidmat.core.settings import LiveSettings
    from vidmat.io.camera import CameraConfig
    from vidmat.io.recorder import RecorderConfig

EPILOG = """\
examples:
  vidmat live                                  webcam 0 in a window, blurred background
  vidmat live --bg beach.jpg --mirror          a picture behind you, selfie view
  vidmat live --camera /dev/video2 --bg green  another camera, greenscreen
  vidmat live --camera clip.mp4                a video file played as a camera
  vidmat live --no-window --camera 0 --record out.mp4 --duration 30
  vidmat live --virtual-camera --bg blur       for Zoom/Meet/OBS (needs pyvirtualcam)

window keys: B cycle background, M mirror, R record start/stop, S snapshot,
F fullscreen, Up/Down smoothing, Q or Esc quit. The window remembers the settings
changed in it; look options given here hold for this run and do not replace them.
On a CPU the model runs in its own thread at a smaller input (--size defaults
to 192, or the weights' own size if smaller, and --threads to 1 here), so the
picture stays fluid while the mask updates a few times per second.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from vidmat.core.settings import LiveSettings

    p = sub.add_parser(
        "live",
        help="webcam with a virtual background: window, recording, virtual camera",
        description=textwrap.fill(
            "Separate you from your background live, from a webcam or a video file "
            "played as a camera, and show, record or send the result to a virtual camera.",
            78,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source")
    src.add_argument(
        "--camera",
        default="0",
        metavar="INDEX|PATH|FILE",
        help="camera index (0), device path (/dev/video0) or a video file played as a camera "
        "in real time (default: 0)",
    )
    src.add_argument(
        "--resolution",
        type=size_wxh,
        default=None,
        metavar="WxH",
        help="ask the camera for this size (it may give another); a file is cropped and scaled",
    )
    src.add_argument(
        "--fps",
        type=float,
        default=None,
        help=f"ask the camera for this frame rate, at least {MIN_FPS:g} (it may give another); "
        "a file plays at its own rate, or at this lower one by skipping frames, never faster",
    )
    loop = src.add_mutually_exclusive_group()
    loop.add_argument(
        "--loop",
        dest="loop",
        action="store_true",
        default=None,
        help="play a file source over and over (default in the window and with --duration)",
    )
    loop.add_argument("--no-loop", dest="loop", action="store_false", help="stop at its end")

    look = p.add_argument_group(
        "look (for this run; all but --contrast and --grow can be changed in the window)"
    )
    look.add_argument(
        "--bg",
        default=None,
        metavar="SPEC",
        help="blur, blur:N, green, #RRGGBB, a colour name, an image or video file, "
        "transparent or mask (default: blur)",
    )
    d = LiveSettings()
    look.add_argument(
        "--smoothing",
        type=float,
        default=None,
        help=f"temporal smoothing 0..1 (default {d.smoothing:g})",
    )
    look.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the matte level 0..1 that becomes half, the centre of the contrast curve: "
        f"higher keeps less (default {d.threshold:g})",
    )
    look.add_argument(
        "--contrast",
        type=float,
        default=None,
        metavar="C",
        help=CONTRAST_HELP,
    )
    look.add_argument(
        "--feather",
        type=float,
        default=None,
        metavar="PX",
        help=FEATHER_HELP,
    )
    look.add_argument(
        "--grow",
        type=int,
        default=None,
        metavar="PX",
        help=GROW_HELP,
    )
    look.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="selfie view; --no-mirror for the camera's own view (default: as the window "
        "left it, else not mirrored)",
    )

    out = p.add_argument_group("output")
    out.add_argument("--no-window", action="store_true", help="run without a window (headless)")
    out.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="OUT.mp4",
        help="record to H.264 (+ AAC from --audio); the sound of a video file played as the "
        "camera is not recorded, and the transparent view is recorded over black (MP4 has no "
        "alpha: vidmat convert --format webm or mov keeps it)",
    )
    out.add_argument("--overwrite", action="store_true", help="replace an existing recording")
    out.add_argument(
        "--audio",
        default="auto",
        metavar="auto|off|DEVICE",
        help="microphone for the recording: auto (the default ALSA device when one exists, "
        "else no audio), off, or an ALSA device name such as hw:1 (refused if it cannot be "
        "opened); never the sound of a --camera file",
    )
    out.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S s")
    out.add_argument(
        "--virtual-camera",
        action="store_true",
        help="send the result to a virtual camera (pip install pyvirtualcam; v4l2loopback on "
        "Linux, OBS Virtual Camera on Windows/macOS)",
    )
    out.add_argument(
        "--virtual-device", default=None, help="the --virtual-camera device, e.g. /dev/video10"
    )
    out.add_argument("--quiet", action="store_true", help="no periodic status lines")

    perf = p.add_argument_group("performance")
    perf.add_argument(
        "--mode",
        choices=("auto", "sync", "async"),
        default="auto",
        help="async: model in its own thread, every frame composited with the newest mask "
        "(CPU default); sync: model on each frame (CUDA default)",
    )
    perf.add_argument(
        "--infer-every",
        type=int,
        default=1,
        metavar="N",
        help=INFER_EVERY_HELP,
    )
    add_engine_options(p, cpu_size=CPU_LIVE_SIZE)
    p.set_defaults(func=run)


#: The lowest --fps: a picture slower than a frame a second is no longer live (a stop
#: waited up to 1/fps for the next frame, and --fps 1e-9 never stopped), and the
#: recording's nominal rate is a whole number of frames a second (below 0.5 it was 0).
MIN_FPS = 1.0

#: The look options that map one to one onto LiveSettings fields of the same name.
_LOOK_OPTIONS = ("smoothing", "threshold", "contrast", "feather", "grow", "mirror")


def _given_look(args: argparse.Namespace) -> dict[str, Any]:
    """The look options given on the command line, by their LiveSettings names."""
    return {k: getattr(args, k) for k in _LOOK_OPTIONS if getattr(args, k) is not None}


def _background(spec: str, open_file: bool = True) -> Background:
    """--bg as a :class:`Background`, a file opened unless ``open_file`` is false.

    The core answers a bad spec with a sentence; anything else a malformed number in
    it raises (ValueError, OverflowError) must still reach the user as one sentence,
    not as an exception's name.
    """
    from vidmat.core.backgrounds import parse_background

    try:
        if not open_file:
            return parse_background(spec)
        from vidmat.io.images import load_background

        return load_background(spec, warn=warn)
    except (ValueError, ArithmeticError) as exc:
        raise VidmatError(f"--bg {spec!r} is not a background vidmat can use ({exc}).") from None


@dataclass
class LiveRequest:
    """Everything the command line asked for, resolved once for window and headless alike."""

    args: argparse.Namespace

    def camera_config(self, loop_default: bool) -> CameraConfig:
        from vidmat.io.camera import CameraConfig, parse_source

        a = self.args
        w, h = a.resolution or (None, None)
        loop = a.loop if a.loop is not None else loop_default
        return CameraConfig(source=parse_source(a.camera), width=w, height=h, fps=a.fps, loop=loop)

    def explicit(self) -> set[str]:
        """The LiveSettings fields given on the command line: they beat what the window
        remembers, the rest take its remembered values."""
        given = set(_given_look(self.args))
        return given | ({"background"} if self.args.bg is not None else set())

    def settings(self) -> LiveSettings:
        from vidmat.core.settings import LiveSettings

        a = self.args
        changes = _given_look(a)
        if a.bg is not None:
            changes["background"] = _background(a.bg)
        return LiveSettings(**changes).validated()

    def engine(self) -> Engine:
        from vidmat.pipelines.live import build_live_engine

        return build_live_engine(engine_config_from_args(self.args))

    def input_files(self) -> list[tuple[Path, str]]:
        """The files this run reads, each with the words that name it to the user: a
        video file played as the camera, a --bg image or video and the --weights file. A
        recording must never replace one of them."""
        from vidmat.io.camera import parse_source
        from vidmat.model.weights import weights_file

        a = self.args
        files: list[tuple[Path, str]] = []
        weights = weights_file(a.weights) if a.weights else None
        if weights is not None:
            files.append((weights, "--weights file"))
        source = parse_source(a.camera)
        if isinstance(source, str):  # a file, a device path or a URL: only a file matches
            files.append((Path(source), "--camera file"))
        if a.bg is not None:
            bg = _background(a.bg, open_file=False)
            if bg.kind == "file" and bg.path is not None:
                files.append((Path(bg.path).expanduser(), "--bg file"))
        return files

    def check_record_path(self) -> None:
        """Refuse a --record path that would destroy an input or an existing file.

        Checked before the model loads or the camera opens, so nothing is touched; a
        recording over an input is refused even with --overwrite, as convert refuses
        an output that is its input.
        """
        from vidmat.io.files import check_not_input, check_output_path
        from vidmat.io.recorder import check_recording_name

        record = Path(self.args.record)
        check_recording_name(record)
        for path, name in self.input_files():
            check_not_input(record, path, output_name="recording", source_name=name)
        check_output_path(record, self.args.overwrite)

    def check_audio(self) -> None:
        """A microphone named explicitly must open, wherever a recording may start (the
        window's Record too); headless without --record nothing would use it, and
        `--audio hw:1` was taken without a word."""
        audio = self.args.audio
        if audio in ("auto", "off"):
            return
        if self.args.no_window and self.args.record is None:
            raise VidmatError(
                "--audio names the microphone of a recording; add --record OUT.mp4 or leave "
                "--audio out."
            )
        from vidmat.io.recorder import open_audio_device

        open_audio_device(audio).close()

    def recorder_config(self, path: Path | None = None, fps: float | None = None) -> RecorderConfig:
        """``fps``: the rate the opened source delivers frames at (its capture's
        ``nominal_fps``), not --fps as typed: that is a request a camera may answer with
        another rate, and a file never plays faster than its own (a 30 fps file with
        --fps 60 was recorded as 60 fps). None: the recorder's default."""
        from dataclasses import replace

        from vidmat.io.recorder import RecorderConfig

        a = self.args
        path = path or a.record
        audio = None if a.audio == "off" else a.audio
        cfg = RecorderConfig(Path(path), overwrite=a.overwrite, audio=audio)
        return replace(cfg, fps=fps) if fps else cfg


def check_options(args: argparse.Namespace) -> None:
    """Refuse what can be told wrong from the command line alone, before the model loads
    and the camera opens (seconds), each in one sentence."""
    from vidmat.core.settings import LiveSettings, check_duration

    check_duration(args.duration)
    if args.fps is not None and not MIN_FPS <= args.fps < math.inf:  # NaN too
        raise VidmatError(
            f"--fps must be a finite number of at least {MIN_FPS:g} for a live picture, "
            f"got {args.fps:g}."
        )
    LiveSettings(**_given_look(args)).validated()  # the numbers; --bg is opened later
    if args.bg is not None:
        _background(args.bg, open_file=False)
    if args.infer_every < 1:
        raise VidmatError(f"--infer-every must be >= 1, got {args.infer_every}.")
    if not args.camera.strip():  # else parse_source made '' the current folder
        raise VidmatError("--camera needs a camera index, a device path or a video file, got ''.")
    if not args.audio.strip():  # '' opened ALSA's unnamed device as "audio from "
        raise VidmatError("--audio needs auto, off or an ALSA device name, got ''.")
    if args.virtual_device is not None and not args.virtual_camera:
        raise VidmatError(
            "--virtual-device names the device for --virtual-camera; add --virtual-camera "
            "or leave --virtual-device out."
        )
    if args.virtual_camera:
        from vidmat.io.virtualcam import import_pyvirtualcam

        import_pyvirtualcam()  # a missing package is said now, not after the model loads


def run(args: argparse.Namespace) -> int:
    check_options(args)
    req = LiveRequest(args)
    if args.record is not None:
        req.check_record_path()
    req.check_audio()
    if args.no_window:
        return run_headless(req)
    from vidmat.ui.app import run_window  # Qt only from here on

    return run_window(req)


def _fmt(v: float | None, unit: str = "ms") -> str:
    return "-" if v is None else f"{v:.0f} {unit}"


def run_headless(req: LiveRequest) -> int:
    """Run until --duration, the source's end, an error or a signal; 0 only for the first two.

    ``kill`` or a job manager stops a run as Ctrl-C does, from the moment the command
    starts (SIGTERM during the model load used to end the process with no word): the
    recording is finalised and the summary printed, then the interrupt is raised again
    so the CLI exits 130 (SIGINT) or 143 (SIGTERM), as convert does; a script must not
    take a stopped run for a finished one. A capture failure mid-run (a file deleted
    under it) ends as an error, exit 2, after the same finalisation. So does a recording
    that fails (a full disk): the status loop sees it within a quarter second and stops
    the run, which would otherwise play on unrecorded until --duration, or for ever with
    --loop, and then lose the summary to the recorder's error.
    """
    from vidmat.signals import interrupt_once

    with interrupt_once():
        return _run_headless(req)


def _run_headless(req: LiveRequest) -> int:
    from vidmat.io.files import leftover_parts, leftovers_note
    from vidmat.io.recorder import TRANSPARENT_NOTE, Recorder, RecordingInfo
    from vidmat.pipelines.live import LiveConfig, LivePipeline
    from vidmat.signals import no_interrupts

    args = req.args
    looping = args.duration is not None
    camera = req.camera_config(loop_default=looping)
    settings = req.settings()
    engine = req.engine()
    errors: list[str] = []

    def on_status(event: str, message: str) -> None:
        if event == "damaged" and not camera.loop:
            return  # the run ends at once, with this as its error
        # named as live's other lines ("vidmat: talk.mp4 ended" stood apart from them)
        kind = "warning: " if event in ("damaged", "lost") else ""
        print(f"vidmat live: {kind}{message}", file=sys.stderr)

    pipe = LivePipeline(
        engine,
        LiveConfig(
            camera=camera, mode=args.mode, infer_every=args.infer_every, duration=args.duration
        ),
        settings,
        on_error=errors.append,
        on_status=on_status,
    )
    recorder: Recorder | None = None
    info: RecordingInfo | None = None
    interrupted: KeyboardInterrupt | None = None
    record_error: str | None = None
    vcam = None
    pipe.start()  # a source that does not open raises here, before anything needs stopping
    try:
        cap = pipe.capture
        assert cap is not None
        print(
            f"vidmat live: {cap.description} {cap.width}x{cap.height} @ {cap.nominal_fps:.1f} fps, "
            f"model {engine.size}px on {engine.device} in {str(engine.dtype).replace('torch.', '')} "
            f"({pipe.mode}), background "
            f"{settings.background.describe()}",
            file=sys.stderr,
        )
        note = cap.video.upscale_note
        if note is not None:
            print(f"vidmat live: note: {note}", file=sys.stderr)
        if args.virtual_camera:
            from vidmat.io.virtualcam import VirtualCamera

            vcam = VirtualCamera(
                cap.width, cap.height, cap.nominal_fps, args.virtual_device, on_error=errors.append
            )
            pipe.add_sink(vcam)
            print(f"vidmat live: virtual camera on {vcam.device}", file=sys.stderr)
        if args.record:
            # Made once the source is open: it records at the rate frames come at. start()
            # opens the microphone, so the message below says what is really recorded.
            recorder = Recorder(req.recorder_config(fps=cap.nominal_fps))
            for note in leftovers_note(args.record, leftover_parts(args.record)):
                print(f"vidmat live: note: {note}", file=sys.stderr)
            recorder.start()
            pipe.add_sink(recorder)
            print(
                f"vidmat live: recording to {args.record} ({recorder.audio_message})",
                file=sys.stderr,
            )
            if settings.background.kind == "transparent":  # as the window says it
                print(f"vidmat live: note: {TRANSPARENT_NOTE}", file=sys.stderr)
        last = time.monotonic()
        while not pipe.wait(0.25):
            if recorder is not None and recorder.failed:
                break  # a full disk: stop now, not after --duration (or never with --loop)
            if vcam is not None and vcam.error is not None:
                break  # its device gone: the frames would go nowhere
            if not args.quiet and time.monotonic() - last >= 2.0:
                last = time.monotonic()
                st = pipe.status()
                print(
                    f"  {st['display_fps']:5.1f} fps  capture {st['capture_fps']:4.1f} fps  "
                    f"model {_fmt(st['model_ms'])}  post {_fmt(st['post_ms'])}  "
                    f"latency {_fmt(st['latency_ms'])}  dropped {st['dropped']}",
                    file=sys.stderr,
                )
    except KeyboardInterrupt as exc:  # Terminated (SIGTERM) too
        interrupted = exc
        print("vidmat live: stopping…", file=sys.stderr)
    finally:
        with no_interrupts():  # a second signal must not leave a half-written recording
            pipe.stop()
            if vcam is not None:
                vcam.close()
            # The last frame lasts until the run was cut short, not a whole slow frame, or
            # as long as a file that ended by itself held it (seconds, for a held picture).
            if recorder is not None:
                try:
                    info = recorder.stop(end=pipe.ended_at, cut=not pipe.source_ended)
                except VidmatError as exc:  # said after the summary, which still prints
                    record_error = str(exc)
    st = pipe.status()
    summ = pipe.stats.summary()
    print(
        f"vidmat live: {st['frames']} frames, {st['run_fps']:.1f} fps, latency p50 "
        f"{_fmt(summ['latency_p50_ms'])} p99 {_fmt(summ['latency_p99_ms'])}, model "
        f"{_fmt(summ['model_p50_ms'])}, dropped {st['dropped']}",
        file=sys.stderr,
    )
    if info is not None:
        print(f"vidmat live: {info.describe()}", file=sys.stderr)
    if interrupted is not None:
        if record_error is not None:
            print(f"vidmat: {record_error}", file=sys.stderr)
        raise interrupted  # after the summary: the CLI exits 130 / 143 for it
    if record_error is not None:
        raise VidmatError(record_error)
    if errors:
        raise VidmatError(errors[0])
    capture = pipe.capture
    if capture is not None and capture.damaged is not None and not camera.loop:
        # The playback was cut short, as convert's output is: an error after the output.
        # A looping run (--duration) ran its time and said so when it happened.
        raise VidmatError(
            f"{capture.description} is truncated or damaged: {capture.damaged}; the frames "
            "that decoded were played."
        )
    return 0
