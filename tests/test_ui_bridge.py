"""The Qt bridge: callbacks from worker threads become signals, with at most one frame pending."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")

from vidmat.ui.bridge import LiveBridge


def test_frames_from_a_thread_coalesce_to_the_newest(qtbot):
    bridge = LiveBridge()
    got: list[int] = []
    bridge.frameReady.connect(lambda: got.append(bridge.take_frame()))

    def worker():
        for i in range(50):  # far faster than the GUI thread drains its events
            bridge.on_frame(i)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    qtbot.waitUntil(lambda: bool(got) and got[-1] == 49, timeout=2000)
    qtbot.wait(20)
    assert got[-1] == 49  # the newest frame is always shown...
    assert len(got) < 50 and bridge.skipped == 50 - len(got)  # ...older ones never queue up
    assert bridge.take_frame() is None


def test_callbacks_become_signals(qtbot):
    bridge = LiveBridge()
    cb = bridge.callbacks()
    with qtbot.waitSignal(bridge.error, timeout=1000) as err:
        threading.Thread(target=cb["on_error"], args=("boom",)).start()
    assert err.args == ["boom"]
    with qtbot.waitSignal(bridge.status, timeout=1000) as st:
        cb["on_status"]("lost", "camera gone")
    assert st.args == ["lost", "camera gone"]
    with qtbot.waitSignals([bridge.started, bridge.finished], timeout=1000):
        cb["on_started"]({"width": 4})
        cb["on_finished"]()
