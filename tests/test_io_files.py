"""Outputs appear complete or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from vidmat.errors import VidmatError
from vidmat.io.files import (
    atomic_folder,
    atomic_output,
    atomic_write_text,
    check_output_path,
    leftover_parts,
    require_file,
    require_folder,
)
from vidmat.io.formats import FRAME_FOLDER


def test_atomic_output_renames_on_success_with_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    old = os.umask(0o022)
    try:
        with atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
            tmp.write_bytes(b"data")
            assert not target.exists()
    finally:
        os.umask(old)
    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("links", [True, False])
def test_an_output_written_meanwhile_is_not_replaced_without_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    """Two converts to one output both passed the check at their start and both renamed
    over it at their end: each exited 0, the first result silently gone."""
    if not links:  # a file system without hard links: the check just before the rename
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(1, "no")))
    target = tmp_path / "out.mp4"
    with (
        pytest.raises(VidmatError, match=r"written meanwhile .* kept as out-2.mp4 instead"),
        atomic_output(target, overwrite=False) as tmp,
    ):
        tmp.write_bytes(b"second")
        target.write_bytes(b"first")  # the other run finishes first
    assert target.read_bytes() == b"first"  # not replaced, and this run's work not lost
    assert (tmp_path / "out-2.mp4").read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.mp4", "out.mp4"]
    (tmp_path / "out-2.mp4").unlink()
    target.unlink()
    with atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"alone")
    assert target.read_bytes() == b"alone" and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    with atomic_output(target) as tmp:  # --overwrite: replaced, as asked
        tmp.write_bytes(b"again")
    assert target.read_bytes() == b"again"


def test_a_folder_output_made_meanwhile_keeps_this_runs_frames_beside_it(tmp_path: Path) -> None:
    """A PNG-frame convert whose folder another run made meanwhile deleted every frame it
    had written with "already exists"; a folder there from the start is refused as before."""
    target = tmp_path / "frames"
    with (
        pytest.raises(VidmatError, match=r"written meanwhile .* kept as frames-2 instead"),
        atomic_folder(target) as tmp,
    ):
        (tmp / "000001.png").write_bytes(b"mine")
        target.mkdir()
        (target / "000001.png").write_bytes(b"theirs")
    assert (target / "000001.png").read_bytes() == b"theirs"
    assert (tmp_path / "frames-2" / "000001.png").read_bytes() == b"mine"
    with (
        pytest.raises(VidmatError, match="already exists; pass --overwrite"),
        atomic_folder(target) as tmp,
    ):
        (tmp / "x").write_bytes(b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "frames-2"]


@pytest.mark.parametrize("dangling", [False, True])
def test_atomic_folder_replaces_a_link_not_its_target(tmp_path: Path, dangling: bool) -> None:
    """--overwrite of a frame folder that is a symbolic link left a hidden '.NAME.*.old'
    link behind (rmtree refuses links, quietly); a dangling link could not be replaced."""
    target = tmp_path / "elsewhere"
    if not dangling:
        target.mkdir()
        (target / "keep.txt").write_text("keep")
    link = tmp_path / "frames"
    link.symlink_to(target)
    with atomic_folder(link, overwrite=True) as tmp:
        (tmp / "frame_000001.png").write_bytes(b"png")
    assert not link.is_symlink() and sorted(p.name for p in link.iterdir()) == ["frame_000001.png"]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == ({"frames"} if dangling else {"frames", "elsewhere"})
    if not dangling:
        assert (target / "keep.txt").read_text() == "keep"


def test_atomic_folder_gets_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    with atomic_folder(target) as tmp:
        (tmp / "0.png").write_bytes(b"x")
    assert (target / "0.png").exists()
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_check_output_path_refuses_what_would_fail(tmp_path: Path) -> None:
    existing = tmp_path / "x.mp4"
    existing.write_bytes(b"")
    with pytest.raises(VidmatError, match="--overwrite"):
        check_output_path(existing, overwrite=False)
    check_output_path(existing, overwrite=True)
    with pytest.raises(VidmatError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.mp4", overwrite=False)
    # A folder where a file goes, a file where a folder goes, a file as the parent.
    folder = tmp_path / "out"
    folder.mkdir()
    # Refused as what it is with or without --overwrite: "already exists; pass
    # --overwrite" came first, and with --overwrite the kind was refused anyway.
    for overwrite in (False, True):
        with pytest.raises(VidmatError, match="is a folder; name a file"):
            check_output_path(folder, overwrite=overwrite)
        with pytest.raises(VidmatError, match="is a file; this output is a folder"):
            check_output_path(existing, overwrite=overwrite, folder=True)
    check_output_path(folder, overwrite=True, folder=True)
    with pytest.raises(VidmatError, match="already exists; pass --overwrite"):
        check_output_path(folder, overwrite=False, folder=True)  # a PNG sequence's folder
    with pytest.raises(VidmatError, match=r"is a file, not a folder to write y\.mp4 into"):
        check_output_path(existing / "y.mp4", overwrite=False)
    # The probe leaves nothing behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.mp4"]


def test_check_output_path_probes_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission bits do not stop root; a folder that refuses a file does."""
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(VidmatError, match=r"not writable \(Permission denied\)"):
        check_output_path(tmp_path / "x.mp4", overwrite=False)


def test_require_folder_and_file_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "f.png"
    f.write_bytes(b"")
    require_file(f, "image")
    require_folder(tmp_path, "root")
    with pytest.raises(VidmatError, match=r"root .* is a file, not a folder"):
        require_folder(f, "root")
    with pytest.raises(VidmatError, match=r"image .* is a folder, not a file"):
        require_file(tmp_path, "image")
    for check in (require_file, require_folder):
        with pytest.raises(VidmatError, match="does not exist"):
            check(tmp_path / "missing", "thing")


def test_json_text_writes_every_non_finite_number_as_null() -> None:
    import json

    import numpy as np

    from vidmat.io.files import json_text

    payload = {"a": float("nan"), "b": (1.5, float("inf")), "c": [np.float32("nan")], "d": 2}
    text = json_text(payload)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None,
        "b": [1.5, None],
        "c": [None],
        "d": 2,
    }


def test_a_device_is_never_replaced_and_text_goes_into_a_pipe(tmp_path: Path) -> None:
    """--json /dev/full --overwrite, run as root, renamed a plain file over the device
    node; convert -o /dev/null --overwrite would have done the same."""
    import stat
    import threading

    null = Path("/dev/null")
    if not null.exists() or not stat.S_ISCHR(null.stat().st_mode):
        pytest.skip("no /dev/null character device here")
    for overwrite in (False, True):
        with pytest.raises(
            VidmatError,
            match=r"^/dev/null is a device, pipe or this program.s own output, not a file; ",
        ):
            check_output_path(null, overwrite)
    check_output_path(null, False, stream_ok=True)  # a text output may name one
    atomic_write_text(null, "{}\n")
    assert stat.S_ISCHR(null.stat().st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    check_output_path(fifo, False, stream_ok=True)
    atomic_write_text(fifo, "scores\n")
    reader.join(10)
    assert got == ["scores\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # no temporary left


def test_json_to_stdout_sent_to_a_file_follows_what_was_printed(tmp_path: Path) -> None:
    """`vidmat eval ... --json /dev/stdout > scores.json`: /dev/stdout then leads to a plain
    file, so it "already existed", and with --overwrite the rename replaced the
    /dev/stdout link itself; a video output there is refused either way."""
    import subprocess
    import sys

    if not Path("/dev/stdout").exists():
        pytest.skip("no /dev/stdout here")
    code = (
        "from pathlib import Path\n"
        "from vidmat.errors import VidmatError\n"
        "from vidmat.io.files import atomic_write_text, check_output_path\n"
        "print('TABLE')\n"
        "out = Path('/dev/stdout')\n"
        "try:\n"
        "    check_output_path(out, True)\n"
        "except VidmatError as exc:\n"
        "    print('refused:', exc)\n"
        "check_output_path(out, False, stream_ok=True)\n"
        "atomic_write_text(out, '{}\\n')\n"
    )
    target = tmp_path / "scores.txt"
    with open(target, "w") as stdout:
        subprocess.run([sys.executable, "-c", code], stdout=stdout, check=True, timeout=60)
    assert target.read_text() == (
        "TABLE\nrefused: /dev/stdout is a device, pipe or this program's own output, not a "
        "file; name a file to write.\n{}\n"
    )
    assert Path("/dev/stdout").is_symlink() or Path("/dev/stdout").is_char_device()


def test_a_dash_is_standard_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json -` wrote a file named "-" in silence, where command-line tools mean standard
    output; a video output named "-" is refused as any stream is."""
    monkeypatch.chdir(tmp_path)
    check_output_path(Path("-"), False, stream_ok=True)
    atomic_write_text(Path("-"), "{}\n")
    assert capsys.readouterr().out == "{}\n" and list(tmp_path.iterdir()) == []
    with pytest.raises(VidmatError, match="is a device, pipe or this program's own output"):
        check_output_path(Path("-"), True)


def test_a_stream_that_refuses_the_text_is_one_sentence() -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(VidmatError, match=r"^cannot write /dev/full \(No space left on device\)"):
        atomic_write_text(full, "{}\n")
    assert full.is_char_device()


def test_a_folder_lock_refused_inside_leaves_no_folder_it_made(tmp_path: Path) -> None:
    from vidmat.io.files import folder_lock

    run = tmp_path / "a" / "b" / "run"
    with pytest.raises(VidmatError, match="refused"), folder_lock(run, "busy"):
        raise VidmatError("refused before anything was written")
    assert list(tmp_path.iterdir()) == []
    with folder_lock(run, "busy"):
        (run / "last.pt").write_bytes(b"x")
    assert (run / "last.pt").exists() and (run / ".lock").exists()


def test_a_folder_kind_keeps_overwrite_to_folders_of_its_own(tmp_path: Path) -> None:
    """--overwrite replaces a frame folder vidmat wrote, never a folder of other files
    that took its name, neither before the run nor at its end (made meanwhile)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("frame_000001.png", "frames.csv", "audio.m4a", ".DS_Store"):
        (frames / name).write_bytes(b"x")  # what a file browser leaves is not the user's
    check_output_path(frames, overwrite=True, folder=True, kind=FRAME_FOLDER)
    (frames / "notes.txt").write_text("mine")
    with pytest.raises(VidmatError, match=r"frames holds files vidmat cannot tell as its own"):
        check_output_path(frames, overwrite=True, folder=True, kind=FRAME_FOLDER)
    # made during the run: the new frames are kept beside it
    with (
        pytest.raises(VidmatError, match=r"this output was kept as frames-2 instead"),
        atomic_folder(frames, overwrite=True, kind=FRAME_FOLDER) as tmp,
    ):
        (tmp / "frame_000001.png").write_bytes(b"new")
    assert (frames / "notes.txt").read_text() == "mine"
    assert (tmp_path / "frames-2" / "frame_000001.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "frames-2"]


def test_a_stop_signal_during_the_swap_acts_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while --overwrite deleted the old frame folder cut the deletion short: a
    hidden '.frames.*.old' of 45,000 frames was left, never to be pointed out. Now the
    old one is gone and the new one in place when the interrupt acts."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(1, 4):
        (frames / f"frame_{n:06d}.png").write_bytes(b"old")
    (frames / "frames.csv").write_text("old")
    real = shutil.rmtree

    def interrupted_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        if str(path).endswith(".old"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in the deletion
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    with (
        pytest.raises(KeyboardInterrupt),
        atomic_folder(frames, overwrite=True, kind=FRAME_FOLDER) as tmp,
    ):
        (tmp / "frames.csv").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert (frames / "frames.csv").read_text() == "new"


@pytest.mark.parametrize("folder", [False, True])
def test_an_output_of_the_longest_legal_name_is_written(tmp_path: Path, folder: bool) -> None:
    """A 250-byte output name is legal, but its temporary name (15 bytes longer) was not:
    'File name too long' after the whole conversion. A run killed meanwhile leaves that
    shortened name, and it is still known as this output's."""
    # 243 or 247 bytes: "a" first, so a cut by bytes would split an é in two (not UTF-8)
    target = tmp_path / ("a" + "é" * 121 + ("" if folder else ".mp4"))
    with atomic_folder(target) if folder else atomic_output(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255
        tmp.name.encode("utf-8")  # whole characters
        if folder:
            (tmp / "frame_000001.png").write_bytes(b"x")
        else:
            tmp.write_bytes(b"x")
        part = tmp.name
    assert target.exists() and not (tmp_path / part).exists()
    # what a killed run leaves: that name, untouched for minutes
    left = tmp_path / part
    left.mkdir() if folder else left.write_bytes(b"x")
    os.utime(left, (1, 1))
    assert leftover_parts(target, folder=folder) == [left]
    # a name longer than that is refused before any work, not by the rename at the end
    with pytest.raises(
        VidmatError, match=r"is 258 bytes long, and file systems take names of up to 255"
    ):
        check_output_path(tmp_path / ("é" * 127 + ".mp4"), overwrite=False, folder=folder)


@pytest.mark.parametrize(
    ("error", "free", "said"),
    [
        (OSError(28, "No space left on device"), 10**9, True),
        (
            RuntimeError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
            10**9,
            True,
        ),
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
            0,
            True,
        ),
        (OSError("1221120 requested and 1048448 written"), 4096, True),
        (RuntimeError("unexpected pos 64 vs 0"), 10**9, False),  # room left: not the disk
        (PermissionError(13, "Permission denied", "/data/in.png"), 0, False),  # its own cause
        (ValueError("a bug"), 0, False),
        (KeyboardInterrupt(), 0, False),
    ],
)
def test_a_write_that_fails_on_a_full_disk_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, free: int, said: bool
) -> None:
    """torch.save, safetensors and numpy say a full disk each in their own words, or in
    none: training ended in their tracebacks. Nothing is left either way."""
    from collections import namedtuple

    from vidmat.io import files

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - free, free))
    for writer in (files.atomic_output, files.atomic_folder):
        target = tmp_path / ("out.bin" if writer is files.atomic_output else "out")
        with pytest.raises(files.DiskFull if said else type(error)) as got, writer(target) as part:
            (part / "x" if part.is_dir() else part).write_bytes(b"partial")
            raise error
        if said:
            assert str(got.value) == f"cannot write {target} (No space left on device)."
        assert list(tmp_path.iterdir()) == []
