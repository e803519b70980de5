"""`vidmat live` and `vidmat bench live` from the command line, headless, with random weights."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from convert_fixtures import audio_only_file, long_last_clip, truncated_clip
from live_fixtures import disk_full_after, make_clip

from vidmat.cli import main


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("cli") / "clip.mp4", frames=30, fps=30)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    path = tmp_path_factory.mktemp("w") / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), path)
    return path


def test_cli_import_does_not_pull_in_qt():
    code = (
        "import sys, vidmat.cli as c; c.build_parser(); import vidmat.commands.live; "
        "import vidmat.benchmarks.live; "
        "bad = [m for m in sys.modules if m.startswith('PyQt6')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_headless_records_the_requested_duration(tmp_path, clip, weights, capsys):
    out = tmp_path / "out.mp4"
    argv = ["live", "--no-window", "--camera", str(clip), "--record", str(out)]
    argv += ["--duration", "1", "--weights", str(weights), "--size", "64", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "audio" in err
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.duration / 1e6 == pytest.approx(1.0, abs=0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_recording_killed_before_is_pointed_out(tmp_path, clip, weights, capsys):
    """`kill -9` leaves a recording's temporary file (the MP4 is never finished); the next
    recording to that name said nothing of it, as convert does."""
    out = tmp_path / "k.mp4"
    left = tmp_path / ".k.abcd1234.part.mp4"
    left.write_bytes(b"x" * 48)
    os.utime(left, (1, 1))  # untouched for long: no other run is writing it
    argv = ["live", "--no-window", "--camera", str(clip), "--record", str(out), "--quiet"]
    argv += ["--duration", "0.5", "--weights", str(weights), "--size", "64", "--audio", "off"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "vidmat live: note: an unfinished output of k.mp4 from a run that was killed lies "
        "beside it (.k.abcd1234.part.mp4; 0.0 MiB)" in err
    )
    assert left.exists()  # another run may be writing it: said, not deleted


def test_recording_the_transparent_view_says_it_is_over_black(tmp_path, clip, weights, capsys):
    """The README says so "when it starts"; only the window did, headless said nothing."""
    note = "vidmat live: note: the transparent view is recorded over black: MP4 has no alpha"
    for bg, said in (("transparent", True), ("green", False)):
        out = tmp_path / f"{bg}.mp4"
        argv = ["live", "--no-window", "--camera", str(clip), "--record", str(out), "--bg", bg]
        argv += ["--duration", "0.5", "--weights", str(weights), "--size", "64", "--quiet"]
        assert main(argv) == 0
        assert (note in capsys.readouterr().err) is said, bg


def test_a_held_last_frame_is_recorded_as_long_as_it_was_shown(tmp_path, weights, capsys):
    # 10 frames 100 ms apart, the last held 3 s, played once: the capture held it 3 s but
    # the recording gave it 1/fps (a 1.1 s file), as the run's end was not known.
    clip = long_last_clip(tmp_path / "held.mkv")
    out = tmp_path / "out.mp4"
    argv = ["live", "--no-window", "--camera", str(clip), "--no-loop", "--record", str(out)]
    argv += ["--weights", str(weights), "--size", "64", "--quiet", "--audio", "off"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().err
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(4.0, abs=0.15)
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times[-1] == pytest.approx(1.0, abs=0.1)  # the held frame starts at 1 s


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--camera", "/nonexistent/cam.mp4"], "does not exist"),
        (["--duration", "-1"], "--duration"),
        (["--record", "EXISTING"], "already exists"),
        # A folder is refused as one at once, not "already exists; pass --overwrite" first.
        (["--record", "FOLDER"], "FOLDER is a folder; name a file to write instead."),
        (["--record", "FOLDER", "--overwrite"], "FOLDER is a folder; name a file"),
        (["--record", "out.mkv"], "record to an .mp4 file, got out.mkv"),
        (["--contrast", "nan"], "contrast must be > 0"),
        (["--feather", "nan"], "feather must be between 0 and 100 pixels"),
        (["--feather", "1e10"], "feather must be between 0 and 100 pixels"),
        # NaN and inf never reach "elapsed >= duration": they ran forever. --no-loop makes
        # a regression end at the clip's end (and fail here) instead of hanging the suite.
        (["--duration", "nan", "--no-loop"], "--duration must be > 0 seconds, got nan"),
        (["--duration", "inf", "--no-loop"], "leave --duration out to run until stopped"),
        (["--duration", "0"], "--duration must be > 0 seconds"),
        (
            ["--fps", "nan"],
            "--fps must be a finite number of at least 1 for a live picture, got nan",
        ),
        (
            ["--fps", "inf"],
            "--fps must be a finite number of at least 1 for a live picture, got inf",
        ),
        # Below a frame a second a stop waited for the next frame: 1e-9 never stopped.
        (["--fps", "0.1", "--duration", "2"], "--fps must be a finite number of at least 1"),
        (["--fps", "0"], "--fps must be a finite number of at least 1 for a live picture, got 0."),
        (["--camera", ""], "--camera needs a camera index, a device path or a video file"),
        (["--record", "OUT", "--audio", ""], "--audio needs auto, off or an ALSA device"),
        (["--virtual-device", "/dev/video10"], "add --virtual-camera"),
        # An explicitly named microphone that does not open is refused, not ignored.
        (["--record", "OUT", "--audio", "hw:99"], "the microphone 'hw:99' cannot be opened"),
        (["--record", "OUT", "--audio", "CLIP"], "cannot be opened"),
        # headless with nothing to record: it was taken without a word
        (["--audio", "hw:1"], "--audio names the microphone of a recording; add --record"),
        (["--bg", "blur:inf"], "blur"),
        (["--grow", "101"], "at most 100 pixels"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path, clip, weights, capsys, extra, message):
    existing = tmp_path / "taken.mp4"
    existing.write_bytes(b"keep")
    folder = tmp_path / "dir.mp4"
    folder.mkdir()
    swap = {"EXISTING": str(existing), "OUT": str(tmp_path / "au.mp4"), "CLIP": str(clip)}
    swap["FOLDER"] = str(folder)
    extra = [swap.get(a, a) for a in extra]
    message = message.replace("FOLDER", str(folder))
    argv = ["live", "--no-window", "--camera", str(clip), "--weights", str(weights)]
    argv += ["--size", "64", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("vidmat: error: ")  # one sentence
    assert "Error:" not in err  # no exception's name (OverflowError: ...) in place of one
    assert "ALSA lib" not in err  # libasound's own lines are not shown
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4", "taken.mp4"]  # nothing new
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("option", ["--camera", "--bg"])
def test_an_audio_only_file_is_refused_in_live_words(tmp_path, clip, weights, capsys, option):
    # The probe's sentence was convert's: "... has audio only and no video to convert."
    tone = audio_only_file(tmp_path / "tone.m4a")
    argv = ["live", "--no-window", "--camera", str(clip), "--weights", str(weights)]
    argv += ["--size", "64", "--quiet", option, str(tone)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"{tone} has audio only and no video.\n") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("record", "extra", "named"),
    [
        ("cam.mp4", [], "--camera file"),
        ("./cam.mp4", [], "--camera file"),
        ("link.mp4", [], "--camera file"),  # a symlink to the clip being read
        ("hard.mp4", [], "--camera file"),  # a hard link: another name, the same inode
        ("bg.mp4", ["--bg", "bg.mp4"], "--bg file"),
        ("w.mp4", ["--weights", "w.mp4"], "--weights file"),  # it had recorded over them
    ],
)
def test_recording_over_an_input_is_refused_even_with_overwrite(
    tmp_path, clip, weights, capsys, monkeypatch, record, extra, named
):
    monkeypatch.chdir(tmp_path)
    data = clip.read_bytes()
    for name in ("cam.mp4", "bg.mp4"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "link.mp4").symlink_to("cam.mp4")
    os.link(tmp_path / "cam.mp4", tmp_path / "hard.mp4")
    (tmp_path / "w.mp4").write_bytes(weights.read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["live", "--no-window", "--camera", "cam.mp4", "--record", record, "--overwrite"]
    argv += ["--duration", "1", "--weights", str(weights), "--size", "64", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"vidmat: error: the recording {Path(record)} is the {named} itself; "
        "choose another recording name.\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary files left
    assert all((tmp_path / n).read_bytes() == data for n in ("cam.mp4", "bg.mp4", "hard.mp4"))
    assert (tmp_path / "w.mp4").read_bytes() == weights.read_bytes()
    assert (tmp_path / "link.mp4").is_symlink()


@pytest.mark.parametrize(
    ("clip_fps", "extra", "rate"),
    [
        (30, ["--fps", "60"], 30),  # a file never plays faster than its own rate
        (30, ["--fps", "10"], 10),  # ...but slower, skipping frames
        (25, [], 25),  # without --fps: the file's own rate, not a default 30
    ],
)
def test_a_recording_runs_at_the_rate_the_file_plays_at(
    tmp_path, weights, capsys, clip_fps, extra, rate
):
    clip = make_clip(tmp_path / "clip.mp4", frames=clip_fps, fps=clip_fps)  # one second
    out = tmp_path / "out.mp4"
    argv = ["live", "--no-window", "--camera", str(clip), "--record", str(out), "--no-loop"]
    argv += ["--audio", "off", "--weights", str(weights), "--size", "64", "--quiet", *extra]
    assert main(argv) == 0
    wrote = re.search(r"wrote .* \((\d+) frames, ([\d.]+) s", capsys.readouterr().err)
    assert wrote is not None
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
        average = float(c.streams.video[0].average_rate)
        seconds = c.duration / 1e6
    assert len(frames) == int(wrote.group(1)) <= rate + 1
    # Every frame lasts until the next one's real time; the last one a frame at ``rate``.
    assert float(frames[-1].duration * frames[-1].time_base) == pytest.approx(1 / rate, abs=0.002)
    assert average == pytest.approx(rate, rel=0.1)
    assert seconds == pytest.approx(1.0, abs=0.15)
    assert float(wrote.group(2)) == pytest.approx(seconds, abs=0.05)


def test_recording_beside_the_inputs_is_still_allowed(tmp_path, clip, weights, capsys):
    # The check compares files, not names: another file in the same folder records.
    cam = tmp_path / "cam.mp4"
    cam.write_bytes(clip.read_bytes())
    out = tmp_path / "cam_live.mp4"
    argv = ["live", "--no-window", "--camera", str(cam), "--record", str(out), "--bg", "green"]
    argv += ["--duration", "0.5", "--weights", str(weights), "--size", "64", "--quiet"]
    assert main(argv) == 0
    assert out.stat().st_size > 0 and cam.read_bytes() == clip.read_bytes()


def test_a_background_parse_failure_is_one_sentence(clip, weights, capsys, monkeypatch):
    # Whatever the spec parser raises (OverflowError came through as its name before
    # the core refused blur:inf itself), live says one sentence naming --bg.
    def explode(spec):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr("vidmat.core.backgrounds.parse_background", explode)
    monkeypatch.setattr("vidmat.io.images.parse_background", explode)
    for record in ([], ["--record", str(clip.with_name("never.mp4"))]):
        argv = ["live", "--no-window", "--camera", str(clip), "--bg", "blur:1e999"]
        argv += ["--weights", str(weights), "--size", "64", "--quiet", *record]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == (
            "vidmat: error: --bg 'blur:1e999' is not a background vidmat can use "
            "(cannot convert float infinity to integer).\n"
        )
    assert not clip.with_name("never.mp4").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("pyvirtualcam") is not None, reason="pyvirtualcam is installed"
)
def test_virtual_camera_without_the_package_says_what_to_install(clip, weights, capsys):
    argv = ["live", "--no-window", "--camera", str(clip), "--weights", str(weights)]
    argv += ["--size", "64", "--quiet", "--duration", "1", "--virtual-camera"]
    assert main(argv) == 2
    assert "pip install" in capsys.readouterr().err


def test_window_without_display_is_one_sentence(clip, weights, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    argv = ["live", "--camera", str(clip), "--weights", str(weights), "--size", "64"]
    assert main(argv) == 2
    assert "--no-window" in capsys.readouterr().err


def test_bench_live_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "live", "--resolution", "96x64", "--seconds", "1", "--warmup", "0.3"]
    argv += ["--size", "32", "--bg", "green", "--precision", "fp32", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    s = data["summary"]
    assert s["resolution"] == "96x64" and s["displayed_fps"] > 5 and s["queue_max_depth"] == 1
    # what was timed: two runs at --precision fp32 and bf16 could not be told apart
    assert s["weights"] == "u2netp-random" and s["precision"] == "fp32"
    stages = {r["stage"].split(" ")[0] for r in data["results"]}
    assert {"model", "refine", "end-to-end"} <= stages
    assert len(data["rss_mib"]) >= 2


def test_bench_live_counts_the_frames_the_source_was_too_late_for(tmp_path, monkeypatch):
    """A file read slower than it plays loses frames before the queue, as a slow camera
    does; bench live counted only the queue's drops and called such a run loss-free."""
    from vidmat.io.camera import VideoSource

    read = VideoSource.next_frame

    def slow(self):
        time.sleep(0.05)  # 50 ms a frame for a 30 fps source: about one in three is late
        return read(self)

    monkeypatch.setattr(VideoSource, "next_frame", slow)
    out = tmp_path / "bench.json"
    argv = ["bench", "live", "--resolution", "96x64", "--seconds", "1.5", "--warmup", "0.3"]
    argv += ["--size", "32", "--fps", "30", "--json", str(out)]
    assert main(argv) == 0
    s = json.loads(out.read_text())["summary"]
    assert s["source_skipped"] >= 5 and s["captured_fps"] < 25
    lost = s["dropped"] + s["source_skipped"]
    captured = round(s["captured_fps"] * s["seconds"])
    assert abs(s["lost_pct"] - 100 * lost / (captured + s["source_skipped"])) < 2


def test_look_options_reach_the_live_settings():
    from vidmat.cli import build_parser
    from vidmat.commands.live import LiveRequest

    argv = ["live", "--threshold", "0.6", "--contrast", "inf", "--feather", "2"]
    args = build_parser().parse_args([*argv, "--smoothing", "0", "--grow", "-2"])
    s = LiveRequest(args).settings()
    assert (s.threshold, s.contrast, s.feather, s.smoothing) == (0.6, float("inf"), 2.0, 0.0)
    assert s.grow == -2
    plain = LiveRequest(build_parser().parse_args(["live"])).settings()
    assert plain.contrast == 1.0 and plain.grow == 0
    # What the window lets beat its remembered settings: exactly what was given.
    assert LiveRequest(args).explicit() == {"threshold", "contrast", "feather", "smoothing", "grow"}
    given = build_parser().parse_args(["live", "--bg", "green", "--mirror"])
    assert LiveRequest(given).explicit() == {"background", "mirror"}
    # --no-mirror turns a mirror the window remembers off for this run.
    unmirrored = LiveRequest(build_parser().parse_args(["live", "--no-mirror"]))
    assert unmirrored.explicit() == {"mirror"} and unmirrored.settings().mirror is False
    assert LiveRequest(build_parser().parse_args(["live"])).explicit() == set()


def test_a_capture_failure_mid_run_finalises_the_recording_and_exits_2(
    tmp_path, clip, weights, capsys
):
    # The camera file deleted under a looping run: the capture fails when it reopens the
    # file at its end. That was printed as a status line and the run exited 0, as if it
    # had finished.
    import threading

    cam = tmp_path / "cam.mp4"
    cam.write_bytes(clip.read_bytes())  # one second at 30 fps
    out = tmp_path / "out.mp4"

    def unlink_once_recording() -> None:
        # Once the recording's temporary file is there, the camera file is open; a fixed
        # 0.5 s deleted it before it was opened on a loaded machine (another error).
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".out.*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        cam.unlink()

    threading.Thread(target=unlink_once_recording, daemon=True).start()
    argv = ["live", "--no-window", "--camera", str(cam), "--loop", "--duration", "5"]
    argv += ["--record", str(out), "--audio", "off", "--weights", str(weights)]
    argv += ["--size", "64", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"vidmat: error: capture failed: {cam} does not exist.\n"), err
    assert err.count("capture failed") == 1 and "wrote" in err
    with av.open(str(out)) as c:  # finalised: a whole, playable file of the first pass
        assert c.duration / 1e6 == pytest.approx(1.0, abs=0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_duration_is_wall_time_even_when_frames_come_slowly(tmp_path, weights, capsys):
    # At 1 fps the next frame comes a second after the first: the run waited for it (and
    # --fps 0.1 --duration 2 ran and recorded 10 s). It stops at --duration on the clock,
    # and the last frame lasts until then, not a whole second.
    clip = make_clip(tmp_path / "clip.mp4", frames=30, fps=30)
    out = tmp_path / "out.mp4"
    argv = ["live", "--no-window", "--camera", str(clip), "--fps", "1", "--duration", "0.4"]
    argv += ["--record", str(out), "--audio", "off", "--weights", str(weights)]
    argv += ["--size", "64", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    wrote = re.search(r"wrote .* \((\d+) frames, ([\d.]+) s", err)
    assert wrote is not None and wrote.group(1) == "1", err
    with av.open(str(out)) as c:
        seconds = c.duration / 1e6
    assert seconds == pytest.approx(0.4, abs=0.05)
    assert float(wrote.group(2)) == pytest.approx(seconds, abs=0.05)


def test_sigterm_while_the_model_loads_is_said_and_exits_143(tmp_path, clip):
    # The SIGTERM handler used to be installed only once the pipeline ran: a kill during
    # the model load ended the process on the spot, rc -15 and no word.
    import signal
    import time

    code = (
        "import sys, time, vidmat.commands.live as L\n"
        "from vidmat.cli import main\n"
        "def slow_load(self):\n"
        "    print('loading', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n"
        "L.LiveRequest.engine = slow_load\n"
        f"sys.exit(main(['live', '--no-window', '--camera', {str(clip)!r}, '--quiet']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while proc.stderr.readline().strip() != "loading":
        assert proc.poll() is None and time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err == "vidmat: terminated\n"


def test_a_recording_that_fails_mid_run_stops_the_run_and_exits_2(
    tmp_path, clip, weights, capsys, monkeypatch
):
    # The writer raising (a full disk) was found out only at --duration's end (never with
    # --loop alone), and its error replaced the summary lines.
    import time

    disk_full_after(monkeypatch, 5)
    out = tmp_path / "out.mp4"
    argv = ["live", "--no-window", "--camera", str(clip), "--loop", "--duration", "30"]
    argv += ["--record", str(out), "--audio", "off", "--weights", str(weights)]
    argv += ["--size", "64", "--quiet"]
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 15  # stopped at the failure, not after 30 s
    err = capsys.readouterr().err
    said = f"vidmat: error: recording to {out} failed: No space left on device.\n"
    assert err.endswith(said), err
    assert re.search(r"vidmat live: \d+ frames, .* fps, latency", err)  # the summary
    assert "wrote" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no .part file, no half recording


@pytest.mark.parametrize(
    ("resolution", "noted"),
    [
        ("128x48", True),  # wider than the 64x48 file: scaled up
        ("64x96", True),  # taller
        ("32x24", False),  # smaller: scaled down, nothing to say
        (None, False),
    ],
)
def test_a_resolution_larger_than_the_file_is_noted(clip, weights, capsys, resolution, noted):
    # 8000x8000 on a 240x320 file scaled every frame up, 13 s and 2.4 GB for 1 s, unsaid.
    argv = ["live", "--no-window", "--camera", str(clip), "--no-loop", "--weights"]
    argv += [str(weights), "--size", "64", "--quiet"]
    argv += ["--resolution", resolution] if resolution else []
    assert main(argv) == 0
    err = capsys.readouterr().err
    note = (
        f"vidmat live: note: --resolution {resolution} is larger than the file's own 64x48; "
        "every frame is scaled up, which adds no detail but costs time and memory.\n"
    )
    assert (note in err) is noted, err
    assert err.count("note:") == int(noted)


def test_a_truncated_file_as_the_camera_plays_what_decodes_and_says_so(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It ended as if complete, exit 0; convert says the same file is damaged and exits 2.
    cut = truncated_clip(tmp_path)
    out = tmp_path / "rec.mp4"
    argv = ["live", "--no-window", "--camera", str(cut), "--record", str(out), "--no-loop"]
    argv += ["--audio", "off", "--weights", str(weights), "--size", "64", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    said = re.search(r"only (\d+) of 30 frames could be decoded; the frames that decoded were", err)
    assert said is not None and "Traceback" not in err
    assert err.count("truncated or damaged") == 1  # said once, as the run's error
    with av.open(str(out)) as c:  # the recording of what played is kept
        assert 0 < len(list(c.decode(video=0))) <= int(said.group(1))


def test_a_looping_run_over_a_truncated_file_runs_its_time_and_succeeds(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --duration loops the file: the damage is said when it happens, the run is not cut.
    cut = truncated_clip(tmp_path)
    argv = ["live", "--no-window", "--camera", str(cut), "--duration", "1.5"]
    argv += ["--weights", str(weights), "--size", "64", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("is truncated or damaged") == 1 and "error" not in err
    assert "vidmat live: warning: " in err
