"""A widget that shows frames scaled to fit, keeping their aspect ratio, with an overlay message.

Painting with QPainter into whatever size the window has makes resizing free;
transparent (RGBA) frames are drawn over a checkerboard so the cut-out is visible.
"""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QRect, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QImage, QPainter, QPaintEvent, QPixmap
from PyQt6.QtWidgets import QSizePolicy, QWidget


def to_qimage(image: np.ndarray, copy: bool = True) -> QImage:
    """uint8 RGB (H,W,3) or RGBA (H,W,4) → QImage.

    With ``copy=False`` the QImage points into the array's memory: the caller
    must keep the array alive (and unchanged) as long as the image is used.
    """
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    if image.ndim == 3 and image.shape[2] == 4:
        fmt = QImage.Format.Format_RGBA8888
    elif image.ndim == 3 and image.shape[2] == 3:
        fmt = QImage.Format.Format_RGB888
    elif image.ndim == 2:
        fmt = QImage.Format.Format_Grayscale8
    else:
        raise ValueError(f"cannot show an image of shape {image.shape}")
    # PyQt reads the array's buffer through the memoryview; its stubs name sip.voidptr only.
    qimage = QImage(image.data, w, h, image.strides[0], fmt)  # type: ignore[call-overload]
    return qimage.copy() if copy else qimage


def fit_rect(src: QSize, dst: QRect) -> QRect:
    """The largest rectangle of ``src``'s aspect ratio centred in ``dst``."""
    if src.isEmpty() or dst.isEmpty():
        return QRect()
    scaled = src.scaled(dst.size(), Qt.AspectRatioMode.KeepAspectRatio)
    x = dst.x() + (dst.width() - scaled.width()) // 2
    y = dst.y() + (dst.height() - scaled.height()) // 2
    return QRect(x, y, scaled.width(), scaled.height())


class VideoView(QWidget):
    """Shows the newest frame; ``set_message`` puts a line of text over it (or alone)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._image: QImage | None = None
        self._array: np.ndarray | None = None
        self._message = ""
        self._message_is_error = False
        self._checker = self._make_checker()
        self.painted = 0

    @staticmethod
    def _make_checker() -> QPixmap:
        pm = QPixmap(16, 16)
        pm.fill(QColor(200, 200, 200))
        p = QPainter(pm)
        p.fillRect(0, 0, 8, 8, QColor(150, 150, 150))
        p.fillRect(8, 8, 8, 8, QColor(150, 150, 150))
        p.end()
        return pm

    def sizeHint(self) -> QSize:
        return QSize(800, 450)

    @property
    def image(self) -> QImage | None:
        return self._image

    def set_frame(self, image: np.ndarray) -> None:
        # No copy: the pipeline makes a fresh array per frame and never touches it
        # again, and holding it here keeps the QImage's memory alive.
        self._array = np.ascontiguousarray(image)
        self._image = to_qimage(self._array, copy=False)
        self.update()

    def set_message(self, text: str, error: bool = False) -> None:
        self._message = text
        self._message_is_error = error
        self.update()

    @property
    def message(self) -> str:
        return self._message

    @property
    def message_is_error(self) -> bool:
        """Whether the overlay is drawn as an error (red), so a caller can put it back as it was."""
        return self._message_is_error

    def image_rect(self) -> QRect:
        if self._image is None:
            return QRect()
        return fit_rect(self._image.size(), self.rect())

    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(24, 24, 24))
        if self._image is not None:
            target = self.image_rect()
            if self._image.hasAlphaChannel():
                p.drawTiledPixmap(target, self._checker)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(QRectF(target), self._image)
        if self._message:
            font = QFont(self.font())
            font.setPointSizeF(max(11.0, self.height() / 32))
            p.setFont(font)
            metrics = p.fontMetrics()
            box = metrics.boundingRect(
                self.rect().adjusted(40, 0, -40, 0),
                int(Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignCenter),
                self._message,
            ).adjusted(-14, -10, 14, 10)
            box.moveCenter(self.rect().center())
            bg = QColor(150, 20, 20, 220) if self._message_is_error else QColor(0, 0, 0, 180)
            p.fillRect(box, bg)
            p.setPen(QColor(255, 255, 255))
            p.drawText(
                box, int(Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignCenter), self._message
            )
        p.end()
        self.painted += 1
