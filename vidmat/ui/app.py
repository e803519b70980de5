"""Opening the live window from ``vidmat live`` (the only entry point into Qt)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidmat.errors import VidmatError
from vidmat.signals import caught_signals, stop_exception, stop_signal_received

if TYPE_CHECKING:
    from vidmat.commands.live import LiveRequest


def _clean_qt_environment() -> None:
    """opencv-python points Qt at its own bundled Qt5 plugins on import; PyQt6 must not use them."""
    for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR", "QT_PLUGIN_PATH"):
        value = os.environ.get(var, "")
        if value and f"{os.sep}cv2{os.sep}" in value:
            del os.environ[var]


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def make_app() -> Any:
    _clean_qt_environment()
    if not has_display():
        raise VidmatError(
            "no display to open a window on; use --no-window (with --record or "
            "--virtual-camera), or run under a desktop session / Xvfb."
        )
    try:
        from PyQt6.QtWidgets import QApplication
    except ImportError as exc:
        raise VidmatError(f"the window needs PyQt6, which cannot be imported ({exc}).") from None
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("vidmat-live")
    app.setOrganizationName("vidmat")
    return app


def run_window(req: LiveRequest) -> int:
    """Build the engine once, open the window, run until it closes."""
    app = make_app()
    from vidmat.io.recorder import Recorder
    from vidmat.pipelines.live import LiveConfig, LivePipeline
    from vidmat.ui.window import LiveWindow, settings_overrides

    args = req.args
    camera = req.camera_config(loop_default=True)
    settings = req.settings()
    explicit = req.explicit()
    engine = req.engine()
    config = LiveConfig(
        camera=camera, mode=args.mode, infer_every=args.infer_every, display_reports=True
    )

    def make_pipeline(s: Any, callbacks: dict[str, Any]) -> LivePipeline:
        return LivePipeline(engine, config, s, **callbacks)

    def make_recorder(path: Path) -> Recorder:
        # Recording starts only while a pipeline runs: its source's rate is known.
        pipe = window.pipeline
        cap = pipe.capture if pipe is not None else None
        return Recorder(req.recorder_config(path, fps=cap.nominal_fps if cap else None))

    window = LiveWindow(
        make_pipeline,
        make_recorder=make_recorder,
        overrides=settings_overrides(settings, explicit, args.bg),
        record_path=args.record,
        duration=args.duration,
    )
    if args.virtual_camera:
        _attach_virtual_camera(window, args)
    window.show()
    window.start_pipeline()

    # Ctrl-C in the terminal closes the window properly (recording finalised). Qt's loop
    # runs Python at least every status-timer tick, so the handler is not delayed long.
    # kill (SIGTERM) and a closed terminal (SIGHUP) likewise, so a recording is not left
    # as a temporary file.
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stop_signal_received(signum)
        received.append(signum)
        window.close()

    previous = {s: signal.signal(s, stop) for s in caught_signals()}
    try:
        code = app.exec()
        window.wait_for_threads(lambda note: print(f"vidmat live: {note}", file=sys.stderr))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    # A window that never showed video (a camera that did not open) leaves the terminal
    # user without an answer once closed: say why there. A run that showed video said
    # everything in the window, and an error it has since got past is not the outcome.
    if window.failure and window.frames_shown == 0:
        print(f"vidmat live: no video: {window.failure}", file=sys.stderr)
    for saved in window.recordings_saved:  # the status bar's "Saved ..." went with it
        print(f"vidmat live: {saved.describe()}", file=sys.stderr)
    for failure in window.recording_failures:  # shown in the window, gone with it
        print(f"vidmat live: {failure}", file=sys.stderr)
    if received:
        # The window is closed (a recording finalised in closing): the command ends as a
        # headless run stopped so does (130, 143, 129), and the exiting program then
        # ignores a second Ctrl-C as the CLI does after any stop (it exited 0).
        raise stop_exception(received[0])
    # A run that ended on a failure it did not get past (a camera that never opened, a
    # file gone mid-run) exits 2 as the headless run does; it exited 0, and a script
    # driving the window with --duration took it for a run that worked.
    # A recording that failed (a full disk) exits 2 as headless does: a script driving the
    # window with --record took the run for one that worked.
    failed = window.failure or window.recording_failures
    return 2 if failed and code == 0 else int(code)


def _attach_virtual_camera(window: Any, args: Any) -> None:
    """Open the virtual camera once the first frame's size is known; failures show in the window."""
    from PyQt6.QtWidgets import QApplication

    from vidmat.io.virtualcam import VirtualCamera

    cams: list[VirtualCamera] = []

    def on_started(info: dict) -> None:
        if window.pipeline is None:
            return
        if cams and cams[0].error is not None:  # its device went: Restart opens it again
            window.sinks.remove(cams[0])
            window.pipeline.remove_sink(cams[0])  # given to this pipeline before this hook
            cams.pop().close()
        if cams:
            return
        fps = info.get("fps") or 30.0
        cam = VirtualCamera(
            info["width"], info["height"], fps, args.virtual_device, window.outputFailed.emit
        )
        cams.append(cam)
        window.sinks.append(cam)
        window.pipeline.add_sink(cam)
        window.statusBar().showMessage(f"Virtual camera on {cam.device}", 5000)

    def close_cam() -> None:
        for cam in cams:
            cam.close()

    window.started_hooks.append(on_started)
    app = QApplication.instance()
    if app is not None:  # there is one: the window exists
        app.aboutToQuit.connect(close_cam)
