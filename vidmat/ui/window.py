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
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from PyQt6.QtCore import (
    QBuffer,
    QByteArray,
    QIODevice,
    QSettings,
    QStandardPaths,
    Qt,
    QTimer,
    pyqtSignal,
)
from PyQt6.QtGui import QAction, QCloseEvent, QColor, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QAbstractSlider,
    QApplication,
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
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from vidmat.core.backgrounds import DEFAULT_BLUR, GREENSCREEN, Background
from vidmat.core.settings import MAX_FEATHER_PX, LiveSettings
from vidmat.errors import VidmatError
from vidmat.pipelines.live import LiveFrame, LivePipeline
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
FILE_KINDS = ("image", "video")
#: What the picker falls back to when a remembered file cannot be used: the default look.
FALLBACK_KIND = "blur"


#: The largest value a QSlider holds (a C int); a blur beyond it pins the slider there.
_SLIDER_LIMIT = 2**31 - 1


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def _setting_float(
    qs: QSettings,
    key: str,
    default: float,
    lo: float,
    hi: float,
    *,
    invalid_below: float | None = None,
) -> float:
    """A number from the settings file, clamped to its control's range ``lo..hi``.

    The file is plain text that a user, another version or a crash may have left
    anything in; one unusable value must cost that value (it becomes ``default``),
    never the start of the program. Not a number, NaN and infinity are unusable, and
    so is anything below ``invalid_below`` (a negative blur is no strength at all,
    so it gets the default rather than the weakest blur).
    """
    try:
        value = float(qs.value(key, default))
    except (TypeError, ValueError, ArithmeticError):
        return default
    if not math.isfinite(value) or (invalid_below is not None and value < invalid_below):
        return default
    return min(max(value, lo), hi)


def _setting_bool(qs: QSettings, key: str, default: bool) -> bool:
    """A yes/no from the settings file: INI files hold text, and junk means ``default``."""
    value = qs.value(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return default


def _unique_path(folder: Path, stem: str, suffix: str, taken: set[Path] | None = None) -> Path:
    """``folder/stem+suffix``, or with -1, -2... appended until no file and nothing in
    ``taken`` has the name: two saves in the same second must not share a timestamped name."""
    taken = taken or set()
    path = folder / f"{stem}{suffix}"
    n = 1
    while path.exists() or path in taken:
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


def _default_dir(kind: QStandardPaths.StandardLocation) -> str:
    paths = QStandardPaths.standardLocations(kind)
    for p in paths:
        if Path(p).is_dir():
            return p
    return str(Path.home() if Path.home().is_dir() else Path.cwd())


class LiveWindow(QMainWindow):
    """Main window; see the module docstring. ``overrides`` beat remembered settings."""

    recordingSaved = pyqtSignal(object)  # RecordingInfo, or an error string
    #: What a background file's reading found (an animation standing still, a video cut
    #: short): said from the render thread too, so it reaches the status bar queued.
    backgroundNote = pyqtSignal(str)
    #: An output beside the view that failed (a virtual camera whose device went), from
    #: its own thread: shown, and the run ends with exit 2 as headless does.
    outputFailed = pyqtSignal(str)
    #: The remembered look settings besides the background (one control each).
    SETTINGS_KEYS = ("smoothing", "threshold", "feather", "mirror")

    def statusBar(self) -> QStatusBar:
        """The window's status bar: QMainWindow makes it on the first call, so it is never
        None, which PyQt's type stubs allow for."""
        bar = super().statusBar()
        assert bar is not None
        return bar

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
        #: Why no video is showing (the camera did not open, the pipeline failed); cleared
        #: when frames come. What a terminal user is told if the window never showed video.
        self.failure = ""
        self.last_saved: Any = None
        self.last_snapshot: Path | None = None
        self._closing = False
        #: Pipelines stopped whose threads had not ended (a model still on its frame):
        #: waited for before the program exits (:meth:`wait_for_threads`).
        self._lingering: list[tuple[Any, Any]] = []
        self._frame_count = 0
        self._bg_kind = "blur"
        self._bg_color = GREENSCREEN
        self._bg_blur = DEFAULT_BLUR
        self._bg_paths: dict[str, str] = {}
        self._bg_cache: dict[str, Background] = {}
        #: The background error on the overlay and the overlay it replaced (text, is error).
        #: Errors a later success of the same action takes back ("background": a file
        #: that would not open; "record": a folder missing), each with what the overlay
        #: said before it: (message, before, before_is_error).
        self._passing_errors: dict[str, tuple[str, str, bool]] = {}
        #: Recordings that failed or could not be saved: the command exits 2 for them.
        self.recording_failures: list[str] = []
        self.recordings_saved: list[Any] = []  # RecordingInfo of each recording saved
        self._saving: list[threading.Thread] = []  # recordings being finalised
        #: Remembered settings (SETTINGS_KEYS, "background") this run took from the command
        #: line: options typed for one run are not the user's new defaults, so they are not
        #: saved unless the user changes them in the window (which removes them from here).
        self._from_command_line: set[str] = set()
        #: Recordings not yet in place (recording or being finalised); a lock because
        #: finalising ends on its own thread.
        self._recording_targets: set[Path] = set()
        self._targets_lock = threading.Lock()
        self._recording_target: Path | None = None
        #: Extra sinks (virtual camera) attached to every pipeline this window starts.
        self.sinks: list[Callable[[LiveFrame], None]] = []
        #: Called with the pipeline's info dict when its first frame is out.
        self.started_hooks: list[Callable[[dict], None]] = []

        self._build_ui()
        self._restore(overrides or {})
        self._shortcuts()
        self.recordingSaved.connect(self._on_recording_saved)
        self.backgroundNote.connect(self._on_background_note)
        self.outputFailed.connect(self._on_pipeline_error)

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
        # The view holds the focus at first (a click on it takes it back): the arrow keys
        # are the smoothing's until a slider is clicked or tabbed to.
        self.view.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.view.setFocus()

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
        #: Looks given (command line, settings) between the slider's steps: a --feather
        #: 0.5 on a slider of whole pixels ran at 0. Held until the slider is moved.
        self._between_steps: dict[str, float] = {}
        for key, slider in (
            ("smoothing", self.smoothing_slider),
            ("threshold", self.threshold_slider),
            ("feather", self.feather_slider),
        ):
            slider.valueChanged.connect(lambda _value, key=key: self._changed_here(key))
            slider.valueChanged.connect(lambda _v, key=key: self._between_steps.pop(key, None))
            slider.valueChanged.connect(self._on_sliders)
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
            ("Up", lambda: self._arrow(up=True)),
            ("Down", lambda: self._arrow(up=False)),
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

    def _arrow(self, up: bool) -> None:
        """Up/Down: smoothing, unless another slider has the focus (clicked or tabbed to),
        which then takes the arrow as it would without the shortcut: the threshold's
        arrows had moved the smoothing."""
        focused = self.focusWidget()
        if isinstance(focused, QAbstractSlider) and focused is not self.smoothing_slider:
            step = QAbstractSlider.SliderAction
            focused.triggerAction(step.SliderSingleStepAdd if up else step.SliderSingleStepSub)
            return
        self.smoothing_slider.setValue(self.smoothing_slider.value() + (10 if up else -10))

    # ========================================================== settings
    def _restore(self, overrides: dict[str, Any]) -> None:
        """Remembered settings, then the command line's ``overrides`` over them.

        Every remembered value that cannot be used falls back to its default (numbers
        are also clamped to their control's range), so a damaged settings file can
        never stop the window from opening, nor leave a value the pipeline refuses.
        """
        qs = self.qs
        self._from_command_line = {k for k in (*self.SETTINGS_KEYS, "background") if k in overrides}
        geo = qs.value("geometry")
        if isinstance(geo, (QByteArray, bytes)) and not self.restoreGeometry(geo):
            log.info("ignoring the remembered window geometry: it is not one Qt can restore")
        kind = qs.value("background/kind", FALLBACK_KIND)
        self._bg_kind = kind if isinstance(kind, str) and kind in BG_KEYS else FALLBACK_KIND
        try:
            from vidmat.core.backgrounds import parse_color

            self._bg_color = parse_color(str(qs.value("background/color", _hex(GREENSCREEN))))
        except VidmatError:
            self._bg_color = GREENSCREEN
        # Remembered values are held to what the setting takes, not to the slider's
        # span, which widens to show them (see _show_on): a feather of 35 set on a slider
        # widened by --feather 50 came back as 20 the next run.
        self._bg_blur = _setting_float(
            qs, "background/blur", DEFAULT_BLUR, 0.0, _SLIDER_LIMIT, invalid_below=0.0
        )
        for k in FILE_KINDS:
            p = qs.value(f"background/{k}")
            if isinstance(p, str) and p:
                self._bg_paths[k] = p

        def look(key: str, default: float, hi: float) -> float:
            """The command line's value, else the remembered one within 0..``hi``."""
            if key in overrides:
                return float(overrides[key])
            return _setting_float(qs, key, default, 0.0, hi)

        smoothing = look("smoothing", 0.5, 1.0)
        threshold = look("threshold", 0.5, 1.0)
        feather = look("feather", 0.0, MAX_FEATHER_PX)
        # No slider: the command line's --contrast and --grow hold for this run, and are
        # not remembered.
        self._contrast = float(overrides.get("contrast", LiveSettings().contrast))
        self._grow = int(overrides.get("grow", LiveSettings().grow))
        mirror = bool(overrides.get("mirror", _setting_bool(qs, "mirror", False)))
        bg = overrides.get("background")
        if isinstance(bg, Background):
            self._adopt_background(bg, overrides.get("background_path"))
        if self._bg_kind in FILE_KINDS and self._bg_kind not in self._bg_cache:
            # Open a remembered file now rather than when the camera starts, so that a
            # file that is gone shows as the fallback in the picker from the start.
            self._restore_file_background(self._bg_kind)
        self._show_look("smoothing", smoothing)
        self._show_look("threshold", threshold)
        self._show_look("feather", feather)
        _show_on(self.blur_slider, self._bg_blur)
        self.mirror_box.blockSignals(True)
        self.mirror_box.setChecked(mirror)
        self.mirror_box.blockSignals(False)
        self._sync_bg_widgets()

    #: key -> (its slider's steps per unit of the setting)
    _LOOK_STEPS: ClassVar[dict[str, int]] = {"smoothing": 100, "threshold": 100, "feather": 1}

    def _look_slider(self, key: str) -> QSlider:
        return {
            "smoothing": self.smoothing_slider,
            "threshold": self.threshold_slider,
            "feather": self.feather_slider,
        }[key]

    def _show_look(self, key: str, value: float) -> None:
        """Put a look's ``value`` on its slider (widened to it, see :func:`_show_on`) and
        hold it exactly where it falls between the slider's steps."""
        steps = self._LOOK_STEPS[key]
        _show_on(self._look_slider(key), value * steps)
        if round(value * steps) != value * steps:
            self._between_steps[key] = value
        else:
            self._between_steps.pop(key, None)

    def _looks(self) -> dict[str, float]:
        """Smoothing, threshold and feather as applied: the sliders', or a value given
        between their steps until the slider is moved."""
        shown = {k: self._look_slider(k).value() / s for k, s in self._LOOK_STEPS.items()}
        return {**shown, **self._between_steps}

    def _restore_file_background(self, kind: str) -> None:
        """Open the remembered file of ``kind``; if it cannot be used, fall back visibly.

        The picker then shows the fallback (never "Image…" over a blur), the status
        bar says once why, and the dead path is forgotten so it is not saved again.
        """
        path = self._bg_paths.get(kind)
        if path:
            try:
                self._bg_kind = self._load_file_background(kind, path).kind
                return
            except VidmatError as exc:
                why = (  # os.path.exists: False, not ValueError, for a path with a NUL
                    "no longer exists"
                    if not os.path.exists(os.path.expanduser(path))
                    else f"cannot be used ({str(exc).rstrip('.')})"
                )
                message = f"The remembered background {kind} {path} {why}; using {FALLBACK_KIND}."
        else:
            message = f"No background {kind} file is remembered; using {FALLBACK_KIND}."
        self._bg_paths.pop(kind, None)
        self._bg_cache.pop(kind, None)
        self._bg_kind = FALLBACK_KIND
        log.warning("live: %s", message)
        self.statusBar().showMessage(message, 15000)

    def _adopt_background(self, bg: Background, path: str | None = None) -> None:
        """A background given on the command line becomes the picker's selection.

        ``path`` is the file an image or video background was opened from: kept so
        that it is remembered along with the kind, and the next run shows the same.
        """
        if bg.kind == "color":
            self._bg_kind = "green" if bg.rgb == GREENSCREEN else "color"
            self._bg_color = bg.rgb
        elif bg.kind == "blur":
            self._bg_kind, self._bg_blur = "blur", bg.blur
        elif bg.kind in FILE_KINDS:
            self._bg_kind = bg.kind
            self._bg_cache[bg.kind] = bg
            if path:
                self._bg_paths[bg.kind] = str(path)
            else:  # an older remembered file is not this one: never show or save it as such
                self._bg_paths.pop(bg.kind, None)
        else:
            self._bg_kind = bg.kind

    def save_settings(self) -> None:
        """Remember what is shown, except what this run's command line set and the user
        left alone (see ``_from_command_line``): ``vidmat live --mirror`` once must not
        mirror every later run. Reads the controls, never :meth:`background`, so that
        closing neither opens files nor fails on a background."""
        qs = self.qs
        qs.setValue("geometry", self.saveGeometry())
        looks: dict[str, float | bool] = {**self._looks(), "mirror": self.mirror_box.isChecked()}
        for key, value in looks.items():
            if key not in self._from_command_line:
                qs.setValue(key, value)
        if "background" not in self._from_command_line:
            self._save_background()
        qs.sync()

    def _save_background(self) -> None:
        qs = self.qs
        qs.setValue("background/kind", self._bg_kind)
        qs.setValue("background/color", _hex(self._bg_color))
        qs.setValue("background/blur", self._bg_blur)
        for k in FILE_KINDS:
            if self._bg_paths.get(k):
                qs.setValue(f"background/{k}", self._bg_paths[k])
            else:  # a path found dead this run is not remembered again
                qs.remove(f"background/{k}")

    def background(self) -> Background:
        """The background the picker shows, as the pipeline takes it."""
        k = self._bg_kind
        if k in FILE_KINDS and k not in self._bg_cache:
            self._restore_file_background(k)  # falls back to blur when it cannot
            self._sync_bg_widgets()
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
        return self._bg_cache[k]

    def _load_file_background(self, kind: str, path: str) -> Background:
        """Open ``path``, asked for as ``kind``, and keep it under the kind it really is.

        A video chosen under Image plays as a video (and an image under Video stands
        still): it is kept as that kind, so that the callers put the picker on what is
        applied, as a --bg file on the command line is shown by what it is.
        """
        from vidmat.io.images import load_background

        if not Path(path).expanduser().exists():
            # load_background's word for a --bg text matching nothing ("neither a colour,
            # blur, ...") speaks of text the user never typed here.
            raise VidmatError(f"{path} does not exist.")
        # What opening the file says comes out as one status message: an animation's note
        # and a transparency's came one after the other, the second hiding the first. A
        # video's later word (cut short, heard once it has played through) goes on its own.
        opening: list[str] | None = []

        def warn(message: str) -> None:
            if opening is not None:
                opening.append(message)
            else:
                self.backgroundNote.emit(message)

        try:
            bg = load_background(path, warn=warn)
        except (ValueError, ArithmeticError, OSError) as exc:  # one sentence, not a traceback
            raise VidmatError(f"{path} cannot be opened as a background ({exc}).") from None
        finally:
            said, opening = opening, None
        if said:
            self.backgroundNote.emit(" ".join(said))
        if bg.kind not in FILE_KINDS:
            raise VidmatError(f"{path} is not an image or video file.")
        self._bg_cache[bg.kind] = bg
        self._bg_paths[bg.kind] = path
        if bg.kind != kind and self._bg_paths.get(kind) == path:
            del self._bg_paths[kind]  # the other kind's entry must not go on naming this file
        return bg

    def current_settings(self) -> LiveSettings:
        return LiveSettings(
            background=self.background(),
            contrast=self._contrast,
            mirror=self.mirror_box.isChecked(),
            grow=self._grow,
            **self._looks(),
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
        """Switch the background; image/video ask for a file unless one is known or given.

        On failure the picker stays on what is applied and the reason is shown.
        """
        if kind not in BG_KEYS:
            raise ValueError(f"unknown background kind {kind!r}")
        if kind in FILE_KINDS:
            opened = self._ensure_file(kind, path)
            if opened is None:
                self._sync_bg_widgets()
                return False
            kind = opened  # a video picked under Image is shown as Video
        self._bg_kind = kind
        self._sync_bg_widgets()
        self._apply_background()
        return True

    def _ensure_file(self, kind: str, path: str | None) -> str | None:
        """Have ``kind``'s file open: ``path`` if given, else the one open or remembered,
        else ask. Returns the kind the file opened as (None: none did). A remembered file
        that fails to open is forgotten, so that B does not keep offering it."""
        if path is not None:
            return self._try_load(kind, path)
        if kind in self._bg_cache:
            return kind
        known = self._bg_paths.get(kind)
        if known:
            opened = self._try_load(kind, known)
            if opened is None:
                self._bg_paths.pop(kind, None)
            return opened
        return self.choose_file(kind)

    def _try_load(self, kind: str, path: str) -> str | None:
        """Open ``path`` asked for as ``kind``: the kind it opened as, or None (shown why).

        It opens on this thread, under a wait cursor: a 24 MP photo takes about a second
        to decode, and the window that stood still without a sign looked hung. (The
        recording and virtual camera are fed off this thread and go on.)"""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            return self._load_file_background(kind, path).kind
        except VidmatError as exc:
            self._show_passing_error("background", str(exc))
            return None
        finally:
            QApplication.restoreOverrideCursor()

    def _on_bg_combo(self, index: int) -> None:
        self.set_background_kind(str(self.bg_combo.itemData(index)))

    def cycle_background(self) -> None:
        """B: step through the kinds that need no dialog (and files already chosen).

        A remembered file that cannot be opened is skipped (with its reason shown), so
        B always lands on a background that is applied.
        """
        kinds = [
            k
            for k in BG_KEYS
            if k not in FILE_KINDS or k in self._bg_cache or self._bg_paths.get(k)
        ]
        i = kinds.index(self._bg_kind) if self._bg_kind in kinds else -1
        for step in range(1, len(kinds) + 1):
            if self.set_background_kind(kinds[(i + step) % len(kinds)]):
                return

    def choose_file(self, kind: str) -> str | None:
        """Ask for a ``kind`` file: the kind it opened as, or None (cancelled or unusable)."""
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
            return None
        return self._try_load(kind, path)

    def _choose_file_clicked(self) -> None:
        if self._bg_kind not in FILE_KINDS:
            return
        opened = self.choose_file(self._bg_kind)
        if opened is not None:
            self._bg_kind = opened  # a video picked under Image is shown as Video
            self._sync_bg_widgets()
            self._apply_background()

    def pick_color(self) -> None:
        c = QColorDialog.getColor(QColor(*self._bg_color), self, "Background colour")
        if c.isValid():
            self.set_color((c.red(), c.green(), c.blue()))

    def set_color(self, rgb: tuple[int, int, int]) -> None:
        self._bg_color = rgb
        self._bg_kind = "color"
        self._sync_bg_widgets()
        self._apply_background()

    def _on_blur(self, value: int) -> None:
        self._bg_blur = float(value)
        if self._bg_kind == "blur":
            self._apply_background()

    def _apply_background(self) -> None:
        """Hand the picker's background to the pipeline.

        A change that took also takes down an earlier background error: that error is
        about a file the user has since moved on from, and would otherwise stay over
        the video until a restart.
        """
        self._changed_here("background")
        bg = self.background()
        if self.pipeline is not None:
            try:
                self.pipeline.update(background=bg)
            except VidmatError as exc:
                self._show_passing_error("background", str(exc))
                return
        self._clear_passing_error("background")

    def _show_passing_error(self, action: str, message: str) -> None:
        """Show an error of ``action`` ("background", "record"), remembering what the
        overlay said before it (the video ended, the camera is retrying...) to put back
        once the action works: a recording error stayed over the video for good."""
        held = self._passing_errors.get(action)
        before = held[1:] if held is not None else (self.view.message, self.view.message_is_error)
        self.show_error(message)
        self._passing_errors[action] = (message, *before)

    def _clear_passing_error(self, action: str) -> None:
        held = self._passing_errors.pop(action, None)
        if held is None:
            return
        message, before, before_is_error = held
        if self.view.message == message:  # nothing newer has replaced it meanwhile
            self.view.set_message(before, error=before_is_error)

    def _on_sliders(self) -> None:
        self._push(**self._looks())

    def _on_mirror(self, on: bool) -> None:
        self._changed_here("mirror")
        self._push(mirror=bool(on))

    def _changed_here(self, key: str) -> None:
        """The user changed ``key`` in the window: from now on it is theirs to remember."""
        self._from_command_line.discard(key)

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
        bridge.error.connect(self._on_pipeline_error)
        bridge.finished.connect(self._on_finished)
        bridge.status.connect(self._on_capture_status)
        self.bridge = bridge
        try:
            pipe = self.make_pipeline(self.current_settings(), bridge.callbacks())
            pipe.start()
        except VidmatError as exc:
            self.pipeline = None
            self.failure = str(exc)
            self.show_error(f"{exc}\nRetrying in {self.retry_interval:g} s…")
            self._retry_timer.start(int(self.retry_interval * 1000))
            return
        except Exception as exc:  # never a dead window
            log.exception("could not start the live pipeline")
            self.pipeline = None
            self.failure = f"Could not start: {type(exc).__name__}: {exc}"
            self.show_error(self.failure)
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

    def _stop_pipeline(self, timeout: float = 10.0) -> None:
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
            pipe.stop(timeout)
            if any(thread.is_alive() for thread in pipe.threads()):
                # its bridge too: the threads call it as they finish their frame, and one
                # deleted under them raised "wrapped C/C++ object ... has been deleted"
                self._lingering.append((pipe, bridge))
                return
        if bridge is not None:
            bridge.deleteLater()

    def wait_for_threads(self, say: Callable[[str], None]) -> None:
        """Block until the threads of every stopped pipeline have ended, ``say``-ing so
        once when that takes a while. A model cannot be stopped inside a frame (17 s at
        --size 2048 on a CPU), and a program that exited under it was killed by the C++
        runtime ("terminate called without an active exception"), a recording's last
        moments with it; the window closes first, without freezing while it waits."""
        lingering, self._lingering = self._lingering, []
        threads = [t for pipe, _ in lingering for t in pipe.threads()]
        for thread in threads:
            thread.join(0.5)
        if any(thread.is_alive() for thread in threads):
            say("waiting for the model to finish the frame it is on")
        for thread in threads:
            thread.join()
        for _, bridge in lingering:
            if bridge is not None:
                bridge.deleteLater()

    def _on_pipeline_error(self, message: str) -> None:
        self.failure = message
        self.show_error(message)

    def _on_started(self, info: dict) -> None:
        self.failure = ""
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
            except VidmatError as exc:  # a virtual camera that does not open: as headless,
                self._on_pipeline_error(str(exc))  # the run has failed (exit 2)

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

    @property
    def frames_shown(self) -> int:
        """Frames painted in this window, over all pipelines: 0 means it never showed video."""
        return self._frame_count

    def _on_capture_status(self, event: str, message: str) -> None:
        if event == "lost":
            self.view.set_message(f"Camera lost — {message}")
            self.statusBar().showMessage(message, 5000)
        elif event == "reopened":
            self.view.set_message("")
            self.statusBar().showMessage(message, 3000)
        elif event == "ended":
            self.view.set_message("The video ended.")
        elif event == "damaged":
            self.statusBar().showMessage(message, 8000)

    def _on_background_note(self, message: str) -> None:
        """Heard in silence before: the window showed an animation's first picture only,
        or looped a damaged video early, with nothing said."""
        log.warning("live: %s", message)
        self.statusBar().showMessage(message, 10000)

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
        rec = self.recorder
        if rec is not None and getattr(rec, "failed", False):
            # A full disk mid-recording: say so now, not when the user presses stop after
            # recording nothing for an hour (stopping it raises the failure, shown).
            self.stop_recording()
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
        """--record's path once, then a fresh timestamped name in the record folder.

        Auto names get -1, -2... as snapshots do: two recordings in one second must not
        share a name, whether the first is in place (it would be refused, and a window
        user cannot pass --overwrite) or still being finalised under a temporary name
        (its rename would be replaced by the second's).
        """
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
        with self._targets_lock:
            taken = set(self._recording_targets)
        return _unique_path(folder, time.strftime("vidmat-%Y%m%d-%H%M%S"), ".mp4", taken)

    def _on_record_toggled(self, on: bool) -> None:
        if on:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self, path: Path | None = None) -> bool:
        if self.recorder is not None:
            return True
        if self.pipeline is None or not self.pipeline.running:
            # A finished pipeline (a --no-loop file that ended, a failed model) delivers
            # no frames: a recording would only end as "Nothing was recorded".
            self._show_passing_error("record", "Nothing to record: the camera is not running.")
            self._set_record_checked(False)
            return False
        asked = path is None and self._pending_record_path is not None  # --record OUT
        target = Path(path) if path is not None else self._record_target()
        try:
            rec = self.make_recorder(target)
            rec.start()
        except VidmatError as exc:
            self._show_passing_error("record", str(exc))
            self._set_record_checked(False)
            if asked:  # the run was asked to record and could not: it exits 2
                self.recording_failures.append(str(exc))
            return False
        self._clear_passing_error("record")
        self.recorder = rec
        self._recording_target = target
        with self._targets_lock:
            self._recording_targets.add(target)
        self.pipeline.add_sink(rec)
        self._set_record_checked(True)
        self.status_labels["rec"].setText("● REC")
        from vidmat.io.recorder import TRANSPARENT_NOTE

        # what is recorded besides the picture, as headless says it: a silent recording
        # (no microphone found) was told nowhere in the window
        notes = [getattr(rec, "audio_message", "")]
        if self._bg_kind == "transparent":
            notes.append(TRANSPARENT_NOTE)
        said = "; ".join(n for n in notes if n)
        self.statusBar().showMessage(
            f"Recording to {target}" + (f" ({said})" if said else ""), 6000
        )
        return True

    def stop_recording(self, wait: bool = False) -> None:
        rec, self.recorder = self.recorder, None
        self._set_record_checked(False)
        self.status_labels["rec"].setText("")
        if rec is None:
            return
        if self.pipeline is not None:
            self.pipeline.remove_sink(rec)
        target, self._recording_target = self._recording_target, None
        # As headless live stops it: a pipeline that has ended (a --no-loop file whose
        # last picture was held, a duration) knows when, and the last frame lasts until
        # then; _on_finished stops the recording this way. A pipeline still running has
        # no end yet: the last frame gets one frame's time, as it always did.
        pipe = self.pipeline
        end = pipe.ended_at if pipe is not None else None
        cut = pipe is None or not pipe.source_ended

        def finish() -> None:
            try:
                result: Any = rec.stop() if end is None else rec.stop(end=end, cut=cut)
            except Exception as exc:
                result = str(exc)
            finally:  # in place (or given up): from now on the file itself holds the name
                if target is not None:
                    with self._targets_lock:
                        self._recording_targets.discard(target)
            if isinstance(result, str):
                self.recording_failures.append(result)  # read at exit, signal or not
            elif getattr(result, "path", None) is not None:
                self.recordings_saved.append(result)  # said in the terminal at exit too
            self.recordingSaved.emit(result)

        if wait:
            finish()
        else:  # finalising encodes what is queued: not on the GUI thread
            saving = threading.Thread(target=finish, name="vidmat-record-stop", daemon=True)
            self._saving = [t for t in self._saving if t.is_alive()] + [saving]
            saving.start()

    def wait_for_recordings(self) -> None:
        """Block until recordings stopped earlier are saved: R then Q straight away left
        a hidden temporary file, the program gone before the file was finished."""
        for saving in self._saving:
            saving.join()
        self._saving = []

    def _set_record_checked(self, on: bool) -> None:
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.setText("■ Stop recording (R)" if on else "● Record (R)")
        self.record_button.blockSignals(False)

    def _on_recording_saved(self, result: Any) -> None:
        self.last_saved = result
        if isinstance(result, str):
            self._show_passing_error("record", result)
        elif getattr(result, "path", None) is not None:
            self._clear_passing_error("record")
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
        from vidmat.io.files import atomic_output

        path = _unique_path(folder, time.strftime("vidmat-%Y%m%d-%H%M%S"), ".png")
        # Encoded first, then written whole under a temporary name: QImage.save on a full
        # disk left a cut-off PNG under the snapshot's name, and said no reason.
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        encoded = to_qimage(frame.image).save(buffer, "PNG")
        buffer.close()
        try:
            if not encoded:
                raise OSError("the frame could not be encoded as PNG")
            with atomic_output(path, overwrite=False) as part:
                part.write_bytes(data.data())
        except (OSError, VidmatError) as exc:  # a full disk is a DiskFull sentence
            why = getattr(exc, "strerror", None) or str(exc)
            self._show_passing_error("snapshot", f"Could not save the snapshot to {path} ({why}).")
            return None
        self._clear_passing_error("snapshot")
        self.last_snapshot = path
        self.statusBar().showMessage(f"Saved snapshot {path}", 4000)
        return path

    # ========================================================== close
    def closeEvent(self, event: QCloseEvent | None) -> None:
        self._closing = True
        self._retry_timer.stop()
        self._status_timer.stop()
        try:
            self.save_settings()
        except Exception:
            log.exception("saving settings failed")
        if self.recorder is not None:
            self.stop_recording(wait=True)  # the file must be complete when we exit
        self.wait_for_recordings()
        self._stop_pipeline(timeout=0.5)  # the rest is waited for once the window is gone
        super().closeEvent(event)


def _show_on(slider: QSlider, value: float) -> None:
    """Put ``value`` on ``slider``, first widening its range to cover it.

    A slider's span (blur 1..60, feather 0..20) is a convenient one, not a limit of the
    setting: a --bg blur:100 or a --feather 50 on a slider pinned at its end would
    misstate the value in use, and the first touch would silently drop it there (the
    feather and threshold did so at once). Signals are blocked: showing is not changing.
    """
    slider.blockSignals(True)
    slider.setRange(
        min(slider.minimum(), max(0, math.floor(value))),
        max(slider.maximum(), min(_SLIDER_LIMIT, math.ceil(value))),
    )
    slider.setValue(round(value))
    slider.blockSignals(False)


def _default_recorder(path: Path) -> Any:
    from vidmat.io.recorder import Recorder, RecorderConfig

    return Recorder(RecorderConfig(path))


def settings_overrides(
    settings: LiveSettings, explicit: set[str], bg_spec: str | None = None
) -> dict[str, Any]:
    """The fields of ``settings`` the user set on the command line.

    ``bg_spec`` is --bg as typed: for an image or video background its absolute path
    goes along as ``background_path``, so that the picker names the file (an opened
    background no longer knows) and, should the user change the background in the
    window, remembers the file its Image or Video entry held.
    """
    out = {k: getattr(settings, k) for k in explicit}
    if "background" in explicit:
        out["background"] = settings.background
        if bg_spec and settings.background.kind in FILE_KINDS:
            out["background_path"] = str(Path(bg_spec).expanduser().absolute())
    return out


__all__ = ["LiveWindow", "settings_overrides"]
