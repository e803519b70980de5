"""The live window: video, background picker, sliders, record/snapshot, status bar.

The window owns no video logic: it builds a :class:`~vidmat.pipelines.live.LivePipeline`
through a factory, forwards control changes to ``pipeline.update(...)`` and
shows what the :class:`~vidmat.ui.bridge.LiveBridge` delivers. Everything slow
(capture, model, encoding, finalising a recording) runs off the GUI thread, so
the window never freezes; every failure ends up as a message in the window.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QSettings, QStandardPaths, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from vidmat.core.backgrounds import DEFAULT_BLUR, GREENSCREEN, Background
from vidmat.errors import VidmatError
from vidmat.pipelines.live import LiveFrame, LivePipeline, LiveSettings
from vidmat.ui.bridge import LiveBridge
from vidmat.ui.video_view import VideoView, to_qimage

log = logging.getLogger(__name__)

#: make_pipeline(settings, callbacks) -> a not-yet-started LivePipeline
PipelineFactory = Callable[[LiveSettings, dict[str, Any]], LivePipeline]
#: make_recorder(path) -> a not-yet-started Recorder
RecorderFactory = Callable[[Path], Any]

BACKGROUNDS: tuple[tuple[str, str], ...] = (
    ("blur", "Blur"),
    ("color", "Colour"),
    ("green", "Greenscreen"),
    ("image", "Image…"),
    ("video", "Video…"),
    ("transparent", "Transparent"),
    ("mask", "Mask view"),
)
BG_KEYS = tuple(k for k, _ in BACKGROUNDS)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def _default_dir(kind: QStandardPaths.StandardLocation) -> str:
    paths = QStandardPaths.standardLocations(kind)
    for p in paths:
        if Path(p).is_dir():
            return p
    return str(Path.home() if Path.home().is_dir() else Path.cwd())


class LiveWindow(QMainWindow):
    """Main window; see the module docstring. ``overrides`` beat remembered settings."""

    recordingSaved = pyqtSignal(object)  # RecordingInfo, or an error string
    SETTINGS_KEYS = ("smoothing", "threshold", "feather", "mirror")

    def __init__(
        self,
        make_pipeline: PipelineFactory,
        *,
        make_recorder: RecorderFactory | None = None,
        overrides: dict[str, Any] | None = None,
        record_path: Path | None = None,
        qsettings: QSettings | None = None,
        retry_interval: float = 2.0,
        duration: float | None = None,
        title: str = "vidmat live",
    ) -> None:
        super().__init__()
        self.setWindowTitle(title)
        self.make_pipeline = make_pipeline
        self.make_recorder = make_recorder or _default_recorder
        self.qs = qsettings or QSettings("vidmat", "vidmat-live")
        self.retry_interval = retry_interval
        self.pipeline: LivePipeline | None = None
        self.bridge: LiveBridge | None = None
        self.recorder: Any = None
        self._pending_record_path = record_path
        self.last_error = ""
        self.last_saved: Any = None
        self.last_snapshot: Path | None = None
        self._closing = False
        self._frame_count = 0
        self._bg_kind = "blur"
        self._bg_color = GREENSCREEN
        self._bg_blur = DEFAULT_BLUR
        self._bg_paths: dict[str, str] = {}
        self._bg_cache: dict[str, Background] = {}
        #: Extra sinks (virtual camera) attached to every pipeline this window starts.
        self.sinks: list[Callable[[LiveFrame], None]] = []
        #: Called with the pipeline's info dict when its first frame is out.
        self.started_hooks: list[Callable[[dict], None]] = []

        self._build_ui()
        self._restore(overrides or {})
        self._shortcuts()
        self.recordingSaved.connect(self._on_recording_saved)

        self._status_timer = QTimer(self)
        self._status_timer.setInterval(500)
        self._status_timer.timeout.connect(self._refresh_status)
        self._status_timer.start()
        self._retry_timer = QTimer(self)
        self._retry_timer.setSingleShot(True)
        self._retry_timer.timeout.connect(self.start_pipeline)
        if duration:
            QTimer.singleShot(int(duration * 1000), self.close)

    # ================================================================ UI
    def _build_ui(self) -> None:
        self.view = VideoView()
        self.view.set_message("Starting camera…")

        panel = QWidget()
        form = QFormLayout()
        self.bg_combo = QComboBox()
        for key, label in BACKGROUNDS:
            self.bg_combo.addItem(label, key)
        self.bg_combo.setToolTip("Background (B cycles)")
        self.bg_combo.activated.connect(self._on_bg_combo)
        form.addRow("Background", self.bg_combo)

        self.blur_slider = self._slider(1, 60, "Blur strength")
        self.blur_slider.valueChanged.connect(self._on_blur)
        form.addRow("Blur", self.blur_slider)
        self.color_button = QPushButton("Pick colour…")
        self.color_button.clicked.connect(self.pick_color)
        form.addRow("Colour", self.color_button)
        self.file_button = QPushButton("Choose file…")
        self.file_button.clicked.connect(self._choose_file_clicked)
        form.addRow("File", self.file_button)

        self.smoothing_slider = self._slider(0, 100, "Temporal smoothing (Up/Down)")
        self.threshold_slider = self._slider(5, 95, "Matte threshold")
        self.feather_slider = self._slider(0, 20, "Edge feather in pixels")
        self.smoothing_slider.valueChanged.connect(self._on_sliders)
        self.threshold_slider.valueChanged.connect(self._on_sliders)
        self.feather_slider.valueChanged.connect(self._on_sliders)
        form.addRow("Smoothing", self.smoothing_slider)
        form.addRow("Threshold", self.threshold_slider)
        form.addRow("Feather", self.feather_slider)
        self.mirror_box = QCheckBox("Mirror (M)")
        self.mirror_box.toggled.connect(self._on_mirror)
        form.addRow("", self.mirror_box)

        self.record_button = QPushButton("● Record (R)")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._on_record_toggled)
        self.snapshot_button = QPushButton("Snapshot (S)")
        self.snapshot_button.clicked.connect(self.snapshot)
        self.restart_button = QPushButton("Restart camera")
        self.restart_button.clicked.connect(self.restart)
        buttons = QVBoxLayout()
        buttons.addWidget(self.record_button)
        buttons.addWidget(self.snapshot_button)
        buttons.addWidget(self.restart_button)
        buttons.addStretch(1)

        col = QVBoxLayout(panel)
        col.addLayout(form)
        col.addLayout(buttons)
        panel.setFixedWidth(280)

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(4, 4, 4, 4)
        row.addWidget(self.view, 1)
        row.addWidget(panel)
        self.setCentralWidget(central)

        sb = self.statusBar()
        self.status_labels: dict[str, QLabel] = {}
        for key in ("capture", "inference", "latency", "display", "dropped", "rec"):
            lab = QLabel("")
            lab.setObjectName(f"status_{key}")
            sb.addPermanentWidget(lab)
            self.status_labels[key] = lab
        self.status_labels["rec"].setStyleSheet("color: #d00; font-weight: bold")

        quit_action = QAction("Quit", self)
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)
        self.resize(1100, 560)

    @staticmethod
    def _slider(lo: int, hi: int, tip: str) -> QSlider:
        s = QSlider(Qt.Orientation.Horizontal)
        s.setRange(lo, hi)
        s.setToolTip(tip)
        return s

    def _shortcuts(self) -> None:
        keys: list[tuple[str, Callable[[], Any]]] = [
            ("B", self.cycle_background),
            ("M", self.mirror_box.toggle),
            ("R", self.record_button.toggle),
            ("S", self.snapshot),
            ("F", self.toggle_fullscreen),
            ("Up", lambda: self.smoothing_slider.setValue(self.smoothing_slider.value() + 10)),
            ("Down", lambda: self.smoothing_slider.setValue(self.smoothing_slider.value() - 10)),
            ("Q", self.close),
            ("Esc", self._escape),
            ("Ctrl+Q", self.close),
        ]
        self._shortcut_objs = []
        for key, fn in keys:
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(fn)
            self._shortcut_objs.append(sc)

    # ========================================================== settings
    def _restore(self, overrides: dict[str, Any]) -> None:
        qs = self.qs
        geo = qs.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        self._bg_kind = str(qs.value("background/kind", "blur"))
        if self._bg_kind not in BG_KEYS:
            self._bg_kind = "blur"
        try:
            from vidmat.core.backgrounds import parse_color

            self._bg_color = parse_color(str(qs.value("background/color", _hex(GREENSCREEN))))
        except VidmatError:
            self._bg_color = GREENSCREEN
        self._bg_blur = float(qs.value("background/blur", DEFAULT_BLUR))
        for k in ("image", "video"):
            p = qs.value(f"background/{k}")
            if p:
                self._bg_paths[k] = str(p)
        smoothing = float(overrides.get("smoothing", qs.value("smoothing", 0.5)))
        threshold = float(overrides.get("threshold", qs.value("threshold", 0.5)))
        feather = float(overrides.get("feather", qs.value("feather", 0.0)))
        # No slider: the command line's --contrast and --grow hold for this run, and are
        # not remembered.
        self._contrast = float(overrides.get("contrast", LiveSettings().contrast))
        self._grow = int(overrides.get("grow", LiveSettings().grow))
        mirror = overrides.get("mirror", qs.value("mirror", False))
        mirror = mirror if isinstance(mirror, bool) else str(mirror).lower() == "true"
        bg = overrides.get("background")
        if isinstance(bg, Background):
            self._adopt_background(bg)
        for w in (self.smoothing_slider, self.threshold_slider, self.feather_slider):
            w.blockSignals(True)
        self.smoothing_slider.setValue(round(smoothing * 100))
        self.threshold_slider.setValue(round(threshold * 100))
        self.feather_slider.setValue(round(feather))
        self.blur_slider.blockSignals(True)
        self.blur_slider.setValue(round(self._bg_blur))
        self.blur_slider.blockSignals(False)
        for w in (self.smoothing_slider, self.threshold_slider, self.feather_slider):
            w.blockSignals(False)
        self.mirror_box.blockSignals(True)
        self.mirror_box.setChecked(bool(mirror))
        self.mirror_box.blockSignals(False)
        self._sync_bg_widgets()

    def _adopt_background(self, bg: Background) -> None:
        """A background given on the command line becomes the picker's selection."""
        if bg.kind == "color":
            self._bg_kind = "green" if bg.rgb == GREENSCREEN else "color"
            self._bg_color = bg.rgb
        elif bg.kind == "blur":
            self._bg_kind, self._bg_blur = "blur", bg.blur
        elif bg.kind in ("image", "video"):
            self._bg_kind = bg.kind
            self._bg_cache[bg.kind] = bg
        else:
            self._bg_kind = bg.kind

    def save_settings(self) -> None:
        qs = self.qs
        s = self.current_settings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("smoothing", s.smoothing)
        qs.setValue("threshold", s.threshold)
        qs.setValue("feather", s.feather)
        qs.setValue("mirror", s.mirror)
        qs.setValue("background/kind", self._bg_kind)
        qs.setValue("background/color", _hex(self._bg_color))
        qs.setValue("background/blur", self._bg_blur)
        for k, p in self._bg_paths.items():
            qs.setValue(f"background/{k}", p)
        qs.sync()

    def background(self) -> Background:
        k = self._bg_kind
        if k == "blur":
            return Background.blurred(self._bg_blur)
        if k == "green":
            return Background.color(GREENSCREEN)
        if k == "color":
            return Background.color(self._bg_color)
        if k == "transparent":
            return Background.transparent()
        if k == "mask":
            return Background.mask()
        if k in self._bg_cache:
            return self._bg_cache[k]
        path = self._bg_paths.get(k)
        if path:
            try:
                return self._load_file_background(k, path)
            except VidmatError as exc:
                self.show_error(str(exc))
        return Background.blurred(self._bg_blur)

    def _load_file_background(self, kind: str, path: str) -> Background:
        from vidmat.io.images import load_background

        bg = load_background(path)
        if bg.kind not in ("image", "video"):
            raise VidmatError(f"{path} is not an image or video file.")
        self._bg_cache[kind] = bg
        self._bg_paths[kind] = path
        return bg

    def current_settings(self) -> LiveSettings:
        return LiveSettings(
            background=self.background(),
            smoothing=self.smoothing_slider.value() / 100.0,
            threshold=self.threshold_slider.value() / 100.0,
            contrast=self._contrast,
            feather=float(self.feather_slider.value()),
            mirror=self.mirror_box.isChecked(),
            grow=self._grow,
        )

    # ========================================================== controls
    def _sync_bg_widgets(self) -> None:
        i = self.bg_combo.findData(self._bg_kind)
        self.bg_combo.blockSignals(True)
        self.bg_combo.setCurrentIndex(max(0, i))
        self.bg_combo.blockSignals(False)
        self.blur_slider.setEnabled(self._bg_kind == "blur")
        self.color_button.setEnabled(self._bg_kind == "color")
        self.file_button.setEnabled(self._bg_kind in ("image", "video"))
        if self._bg_kind == "color":
            self.color_button.setText(_hex(self._bg_color))
            self.color_button.setStyleSheet(f"background: {_hex(self._bg_color)}")
        else:
            self.color_button.setText("Pick colour…")
            self.color_button.setStyleSheet("")
        path = self._bg_paths.get(self._bg_kind, "")
        self.file_button.setText(Path(path).name if path else "Choose file…")

    def set_background_kind(self, kind: str, path: str | None = None) -> bool:
        """Switch the background; image/video ask for a file unless one is known or given."""
        if kind not in BG_KEYS:
            raise ValueError(f"unknown background kind {kind!r}")
        if kind in ("image", "video"):
            if path is not None:
                try:
                    self._load_file_background(kind, path)
                except VidmatError as exc:
                    self.show_error(str(exc))
                    self._sync_bg_widgets()
                    return False
            elif (
                kind not in self._bg_cache
                and not self._bg_paths.get(kind)
                and not self.choose_file(kind)
            ):
                self._sync_bg_widgets()
                return False
        self._bg_kind = kind
        self._sync_bg_widgets()
        self._push(background=self.background())
        return True

    def _on_bg_combo(self, index: int) -> None:
        self.set_background_kind(str(self.bg_combo.itemData(index)))

    def cycle_background(self) -> None:
        """B: step through the kinds that need no dialog (and files already chosen)."""
        kinds = [
            k
            for k in BG_KEYS
            if k not in ("image", "video") or k in self._bg_cache or self._bg_paths.get(k)
        ]
        i = kinds.index(self._bg_kind) if self._bg_kind in kinds else -1
        self.set_background_kind(kinds[(i + 1) % len(kinds)])

    def choose_file(self, kind: str) -> bool:
        pattern = (
            "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)"
            if kind == "image"
            else "Videos (*.mp4 *.mov *.mkv *.avi *.webm *.m4v *.gif)"
        )
        start = self._bg_paths.get(kind) or _default_dir(
            QStandardPaths.StandardLocation.PicturesLocation
        )
        path, _ = QFileDialog.getOpenFileName(self, f"Background {kind}", start, pattern)
        if not path:
            return False
        try:
            self._load_file_background(kind, path)
        except VidmatError as exc:
            self.show_error(str(exc))
            return False
        return True

    def _choose_file_clicked(self) -> None:
        if self._bg_kind in ("image", "video") and self.choose_file(self._bg_kind):
            self._sync_bg_widgets()
            self._push(background=self.background())

    def pick_color(self) -> None:
        c = QColorDialog.getColor(QColor(*self._bg_color), self, "Background colour")
        if c.isValid():
            self.set_color((c.red(), c.green(), c.blue()))

    def set_color(self, rgb: tuple[int, int, int]) -> None:
        self._bg_color = rgb
        self._bg_kind = "color"
        self._sync_bg_widgets()
        self._push(background=self.background())

    def _on_blur(self, value: int) -> None:
        self._bg_blur = float(value)
        if self._bg_kind == "blur":
            self._push(background=self.background())

    def _on_sliders(self) -> None:
        self._push(
            smoothing=self.smoothing_slider.value() / 100.0,
            threshold=self.threshold_slider.value() / 100.0,
            feather=float(self.feather_slider.value()),
        )

    def _on_mirror(self, on: bool) -> None:
        self._push(mirror=bool(on))

    def _push(self, **changes: Any) -> None:
        if self.pipeline is None:
            return
        try:
            self.pipeline.update(**changes)
        except VidmatError as exc:
            self.show_error(str(exc))

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.showFullScreen()

    def _escape(self) -> None:
        if self.isFullScreen():
            self.showNormal()
        else:
            self.close()

    # ========================================================== pipeline
    def start_pipeline(self) -> None:
        """Build and start a pipeline; a source that cannot open is retried on a timer."""
        if self._closing:
            return
        self._stop_pipeline()
        bridge = LiveBridge(self)
        bridge.started.connect(self._on_started)
        bridge.frameReady.connect(self._on_frame_ready)
        bridge.error.connect(self.show_error)
        bridge.finished.connect(self._on_finished)
        bridge.status.connect(self._on_capture_status)
        self.bridge = bridge
        try:
            pipe = self.make_pipeline(self.current_settings(), bridge.callbacks())
            pipe.start()
        except VidmatError as exc:
            self.pipeline = None
            self.show_error(f"{exc}\nRetrying in {self.retry_interval:g} s…")
            self._retry_timer.start(int(self.retry_interval * 1000))
            return
        except Exception as exc:  # never a dead window
            log.exception("could not start the live pipeline")
            self.pipeline = None
            self.show_error(f"Could not start: {type(exc).__name__}: {exc}")
            return
        self.pipeline = pipe
        for sink in self.sinks:
            pipe.add_sink(sink)
        if self.recorder is not None:  # a restart mid-recording keeps recording
            pipe.add_sink(self.recorder)
        self.view.set_message("Waiting for the first frame…")

    def restart(self) -> None:
        self._retry_timer.stop()
        self.last_error = ""
        self.start_pipeline()

    def _stop_pipeline(self) -> None:
        pipe, self.pipeline = self.pipeline, None
        if self.recorder is not None and pipe is not None:
            pipe.remove_sink(self.recorder)
        bridge, self.bridge = self.bridge, None
        if bridge is not None:  # late signals of the old pipeline must not reach the window
            for signal in (
                bridge.started,
                bridge.frameReady,
                bridge.error,
                bridge.finished,
                bridge.status,
            ):
                with contextlib.suppress(TypeError):
                    signal.disconnect()
        if pipe is not None:
            pipe.stop()
        if bridge is not None:
            bridge.deleteLater()

    def _on_started(self, info: dict) -> None:
        self.view.set_message("")
        self.setWindowTitle(
            f"vidmat live — {info.get('source', '')} {info.get('width')}x{info.get('height')} "
            f"({info.get('device')}, model {info.get('model_size')}px)"
        )
        if self._pending_record_path is not None and self.recorder is None:
            self.record_button.setChecked(True)
        for hook in self.started_hooks:
            try:
                hook(info)
            except VidmatError as exc:
                self.show_error(str(exc))

    def _on_frame_ready(self) -> None:
        if self.bridge is None or self.pipeline is None:
            return
        frame: LiveFrame | None = self.bridge.take_frame()
        if frame is None:
            return
        self.view.set_frame(frame.image)
        self.view.repaint()
        self.pipeline.frame_displayed(frame)
        self._frame_count += 1

    def _on_capture_status(self, event: str, message: str) -> None:
        if event == "lost":
            self.view.set_message(f"Camera lost — {message}")
            self.statusBar().showMessage(message, 5000)
        elif event == "reopened":
            self.view.set_message("")
            self.statusBar().showMessage(message, 3000)
        elif event == "ended":
            self.view.set_message("The video ended.")

    def _on_finished(self) -> None:
        pipe = self.pipeline
        if self._closing or pipe is None:
            return
        if self.recorder is not None:
            self.record_button.setChecked(False)
        if pipe.error is None and not self.view.message:
            self.view.set_message("Stopped.")

    def show_error(self, message: str) -> None:
        """Errors go into the window (overlay + status bar), never a frozen or dead window."""
        self.last_error = message
        log.warning("live: %s", message)
        self.view.set_message(message, error=True)
        self.statusBar().showMessage(message.splitlines()[0], 10000)

    def _refresh_status(self) -> None:
        pipe = self.pipeline
        lab = self.status_labels
        if pipe is None:
            for k in ("capture", "inference", "latency", "display", "dropped"):
                lab[k].setText("")
            return
        st = pipe.status()

        def ms(v: float | None) -> str:
            return "–" if v is None else f"{v:.0f} ms"

        lab["capture"].setText(f"capture {st['capture_fps']:.1f} fps")
        lab["inference"].setText(f"inference {ms(st['model_ms'])}")
        lab["latency"].setText(f"latency {ms(st['latency_ms'])}")
        lab["display"].setText(f"display {st['display_fps']:.1f} fps")
        lab["dropped"].setText(f"dropped {st['dropped']}")

    # ========================================================== record / snapshot
    def _record_target(self) -> Path:
        if self._pending_record_path is not None:
            path, self._pending_record_path = self._pending_record_path, None
            return Path(path)
        folder = Path(
            str(
                self.qs.value(
                    "record_dir", _default_dir(QStandardPaths.StandardLocation.MoviesLocation)
                )
            )
        )
        return folder / time.strftime("vidmat-%Y%m%d-%H%M%S.mp4")

    def _on_record_toggled(self, on: bool) -> None:
        if on:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self, path: Path | None = None) -> bool:
        if self.recorder is not None:
            return True
        if self.pipeline is None:
            self.show_error("Nothing to record: the camera is not running.")
            self._set_record_checked(False)
            return False
        target = Path(path) if path is not None else self._record_target()
        try:
            rec = self.make_recorder(target)
            rec.start()
        except VidmatError as exc:
            self.show_error(str(exc))
            self._set_record_checked(False)
            return False
        self.recorder = rec
        self.pipeline.add_sink(rec)
        self._set_record_checked(True)
        self.status_labels["rec"].setText("● REC")
        self.statusBar().showMessage(f"Recording to {target}", 4000)
        return True

    def stop_recording(self, wait: bool = False) -> None:
        rec, self.recorder = self.recorder, None
        self._set_record_checked(False)
        self.status_labels["rec"].setText("")
        if rec is None:
            return
        if self.pipeline is not None:
            self.pipeline.remove_sink(rec)

        def finish() -> None:
            try:
                result: Any = rec.stop()
            except Exception as exc:
                result = str(exc)
            self.recordingSaved.emit(result)

        if wait:
            finish()
        else:  # finalising encodes what is queued: not on the GUI thread
            threading.Thread(target=finish, name="vidmat-record-stop", daemon=True).start()

    def _set_record_checked(self, on: bool) -> None:
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.setText("■ Stop recording (R)" if on else "● Record (R)")
        self.record_button.blockSignals(False)

    def _on_recording_saved(self, result: Any) -> None:
        self.last_saved = result
        if isinstance(result, str):
            self.show_error(result)
        elif getattr(result, "path", None) is not None:
            self.statusBar().showMessage(
                f"Saved {result.path} ({result.frames} frames, {result.duration:.1f} s)", 8000
            )
        else:
            self.statusBar().showMessage("Nothing was recorded.", 5000)

    def snapshot(self) -> Path | None:
        pipe = self.pipeline
        frame = pipe.last_frame if pipe is not None else None
        if frame is None:
            self.statusBar().showMessage("No frame to save yet.", 3000)
            return None
        folder = Path(
            str(
                self.qs.value(
                    "snapshot_dir", _default_dir(QStandardPaths.StandardLocation.PicturesLocation)
                )
            )
        )
        path = folder / time.strftime("vidmat-%Y%m%d-%H%M%S.png")
        n = 1
        while path.exists():
            path = folder / time.strftime(f"vidmat-%Y%m%d-%H%M%S-{n}.png")
            n += 1
        if not to_qimage(frame.image).save(str(path)):
            self.show_error(f"Could not save the snapshot to {path}.")
            return None
        self.last_snapshot = path
        self.statusBar().showMessage(f"Saved snapshot {path}", 4000)
        return path

    # ========================================================== close
    def closeEvent(self, event) -> None:
        self._closing = True
        self._retry_timer.stop()
        self._status_timer.stop()
        try:
            self.save_settings()
        except Exception:
            log.exception("saving settings failed")
        if self.recorder is not None:
            self.stop_recording(wait=True)  # the file must be complete when we exit
        self._stop_pipeline()
        super().closeEvent(event)


def _default_recorder(path: Path) -> Any:
    from vidmat.io.recorder import Recorder, RecorderConfig

    return Recorder(RecorderConfig(path))


def settings_overrides(settings: LiveSettings, explicit: set[str]) -> dict[str, Any]:
    """The fields of ``settings`` the user set on the command line."""
    return {k: getattr(settings, k) for k in explicit} | (
        {"background": settings.background} if "background" in explicit else {}
    )


__all__ = ["LiveWindow", "settings_overrides"]
