"""Output files that are never half-written: write to a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import numbers
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from vidmat.errors import VidmatError
from vidmat.signals import stops_deferred


@dataclass(frozen=True)
class FolderKind:
    """A folder vidmat writes whole, and how to know one: ``--overwrite`` replaces only
    such a folder. A project folder that took the output's name (and held a
    ``frames.csv``) was deleted with everything in it."""

    what: str  # "a PNG frame folder"
    test: Callable[[Path], bool]

    def foreign(self, path: Path) -> str | None:
        """Why ``path`` must not be replaced (a folder not of this kind, nor empty), or None."""
        try:
            if (
                path.is_dir()
                and not path.is_symlink()
                and any(path.iterdir())
                and not self.test(path)
            ):
                return f"{path} holds files vidmat cannot tell as its own (it is not {self.what})"
        except OSError as exc:  # an unreadable folder: what is in it cannot be told
            return f"{path} cannot be read ({exc.strerror or exc})"
        return None


def json_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a record a tool wrote beside its output), or None when
    there is none or it is not one: how a folder a tool wrote is told from others."""
    try:
        said = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return said if isinstance(said, dict) else None


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file.

    By device and inode when both exist, so a symlink, a hard link or ``./x`` against
    ``x`` is caught; by resolved path when one does not exist yet.
    """
    a, b = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return a.samefile(b)
    return a.resolve() == b.resolve()


def check_not_input(
    output: Path, source: Path, output_name: str = "output", source_name: str = "input"
) -> None:
    """Refuse an output that is a file the command reads, --overwrite or not.

    Writing it would destroy the input while it is still being read: the user loses
    the very file they meant to process. The names say which option is which, e.g.
    "the recording x.mp4 is the camera file itself".
    """
    if same_file(source, output):
        raise VidmatError(
            f"the {output_name} {output} is the {source_name} itself; "
            f"choose another {output_name} name."
        )


def check_results_apart(
    out: Path,
    option: str,
    files: Sequence[tuple[str, Path | None]],
    folders: Sequence[tuple[str, Path | None]] = (),
) -> None:
    """Refuse a results file (--json) that would replace what the command reads,
    --overwrite or not: one of ``files`` (the weights: ``--json w.safetensors
    --overwrite`` left them holding the scores) or a file inside one of ``folders`` (a
    mask of the data). A new file beside them replaces nothing and is let be. Entries
    are (what to call it, path); None is skipped."""
    out = Path(out)
    if not out.exists() or is_stream(out):
        return
    for what, source in files:
        if source is not None and Path(source).is_file():
            check_not_input(out, Path(source), option, what)
    where = out.resolve()
    for what, folder in folders:
        if folder is not None and Path(folder).resolve() in where.parents:
            raise VidmatError(
                f"{option} {out} is a file in the {what} {folder}, which this run reads; "
                "write the results elsewhere."
            )


def check_out_apart(
    out: Path,
    inputs: Sequence[tuple[str, Path]],
    why: str,
    option: str = "--out",
    holding: bool = True,
) -> None:
    """Refuse an output folder that is, holds or lies inside an input, --overwrite or not.

    A folder output replaces ``out`` as a whole once complete: an ``out`` that is an
    input, or a folder above one, deleted what had just been read; one inside an input
    folder adds files to it. Paths are compared resolved, so ``./d``, a symlink or
    ``d/..`` name the same place. ``inputs`` are (what to call it, path); ``why`` ends
    the sentence. ``holding``: False for a folder that files are only added to (a cache),
    which may hold an input without harm.
    """
    o = Path(out).resolve()
    for what, source in inputs:
        s = Path(source).resolve()
        if o == s:
            where = "is"
        elif holding and o in s.parents:
            where = "holds"
        elif s in o.parents:
            where = "lies inside"
        else:
            continue
        raise VidmatError(f"{option} {out} {where} the {what} {source}, {why}")


def _own_stream(path: Path) -> Any:
    """``sys.stdout`` or ``sys.stderr`` where ``path`` names the file behind them
    (``/dev/stdout`` when the shell sent it to a file; ``-``, as command-line tools
    name standard output), else None."""
    if str(path) == "-":  # a file named "-" was written, in silence
        return sys.stdout
    try:
        st = Path(path).stat()
    except OSError:
        return None
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        with contextlib.suppress(OSError):
            if os.path.samestat(st, os.fstat(fd)):
                return stream
    return None


def is_stream(path: Path) -> bool:
    """A character device or pipe, or this process's own standard output or error under
    any name: text is written into it, never renamed over it. A rename replaced the device
    node or the link itself (``--json /dev/full --overwrite`` as root left a plain file at
    /dev/full; ``--json /dev/stdout > scores.json`` replaced the /dev/stdout link)."""
    return _own_stream(path) is not None or _is_device(path)


def _is_device(path: Path) -> bool:
    """A character device or a pipe."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output_path(
    path: Path,
    overwrite: bool,
    folder: bool = False,
    stream_ok: bool = False,
    kind: FolderKind | None = None,
) -> None:
    """Refuse early, with one sentence, what would fail or destroy data later.

    ``folder``: the output is a folder of files (a PNG sequence), not one file. The
    parent is probed with a real temporary file, because permission bits do not tell
    (root ignores them; /proc, read-only mounts and full disks refuse anyway), and a
    long conversion should not run only to fail at its end.

    A folder where a file goes (or a file where a folder goes) is refused as that
    before ``overwrite`` is looked at: --overwrite never replaces one kind with the
    other, so advising it only led to a second refusal.

    ``stream_ok``: a text output (--json) may name a device or pipe (``/dev/stdout``),
    written in place by :func:`atomic_write_text`; every other device is refused, as the
    rename that replaces an output would put a plain file in its place.

    ``kind``: the folder output's kind; an existing folder not of it is never replaced.
    """
    path = Path(path)
    size = len(os.fsencode(path.name))
    if size > NAME_MAX:
        # the temporary name fits (it is cut short), so only the final rename failed
        raise VidmatError(
            f"the output name {path.name[:24]}... is {size} bytes long, and file systems "
            f"take names of up to {NAME_MAX}; choose a shorter output name."
        )
    stream = is_stream(path)
    if stream or (path.exists() and not path.is_dir() and not path.is_file()):
        if stream_ok and not folder and stream:
            return
        raise VidmatError(
            f"{path} is a device, pipe or this program's own output, not a file; name a "
            "file to write."
        )
    if path.exists():
        if path.is_dir() and not folder:
            raise VidmatError(f"{path} is a folder; name a file to write instead.")
        if folder and not path.is_dir():
            raise VidmatError(f"{path} is a file; this output is a folder, name another.")
        why = kind.foreign(path) if kind is not None else None
        if why is not None:
            raise VidmatError(
                f"{why}; --overwrite replaces only such a folder, so name another output."
            )
        if folder and Path.cwd().resolve().is_relative_to(path.resolve()):
            # '-o .' inside an old frame folder failed after the whole conversion (EBUSY)
            raise VidmatError(
                f"{path} is the current folder or holds it, which cannot be replaced; run "
                "vidmat from another folder or name another output."
            )
        if not overwrite:
            raise VidmatError(f"{path} already exists; pass --overwrite to replace it.")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise VidmatError(f"{parent} is a file, not a folder to write {path.name} into.")
    if not parent.is_dir():
        raise VidmatError(f"output folder {parent} does not exist.")
    try:
        _write_probe(parent)
    except OSError as exc:
        raise VidmatError(
            f"output folder {parent} is not writable ({exc.strerror or type(exc).__name__})."
        ) from None


def check_output_folder(path: Path, label: str) -> None:
    """Refuse an output folder that cannot be made or written, creating nothing.

    For outputs that are folders a command makes and fills later (a training run's
    folder and cache): one that is a file, lies under a file or sits on /proc or a
    read-only mount fails at once. The nearest existing folder is probed, and nothing
    is left behind, so a command refused here or later leaves no empty folders.
    """
    try:
        if path.exists() and not path.is_dir():
            raise VidmatError(f"{label} is a file, not a folder.")
        anchor = path
        while not anchor.exists() and anchor.parent != anchor:
            anchor = anchor.parent
        if anchor.exists() and not anchor.is_dir():
            raise VidmatError(f"{label} cannot be created: {anchor} is a file.")
        _write_probe(anchor)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise VidmatError(f"{label} cannot be created or written ({reason}).") from None


def _write_probe(folder: Path) -> None:
    """Create and delete a temporary file in ``folder``; OSError when the folder refuses.

    Permission bits do not tell (root ignores them; /proc, read-only mounts and full
    disks refuse anyway), so a real file is the only sure test.
    """
    fd, probe = tempfile.mkstemp(prefix=".vidmat.", suffix=".probe", dir=folder)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def require_folder(path: Path, what: str) -> None:
    """One sentence for an input folder that is missing or is a file (``what`` names it)."""
    if Path(path).is_dir():
        return
    if Path(path).exists():
        raise VidmatError(f"{what} {path} is a file, not a folder.")
    raise VidmatError(f"{what} {path} does not exist.")


def require_file(path: Path, what: str) -> None:
    """One sentence for an input file that is missing or is a folder (``what`` names it)."""
    if Path(path).is_file():
        return
    if Path(path).is_dir():
        raise VidmatError(f"{what} {path} is a folder, not a file.")
    raise VidmatError(f"{what} {path} does not exist.")


def disk_bytes(path: Path) -> int:
    """The bytes a file, or a folder's files all together, take; what cannot be read
    counts 0 (a leftover deleted meanwhile)."""
    path = Path(path)
    total = 0
    with contextlib.suppress(OSError):
        for f in path.rglob("*") if path.is_dir() else [path]:
            with contextlib.suppress(OSError):
                if f.is_file():
                    total += f.stat().st_size
    return total


def read_input(path: Path) -> bytes:
    """The bytes of an input file, an unreadable one refused in one sentence (the video
    reader's words): a picture without read permission gave a PermissionError traceback
    and ended a whole batch."""
    try:
        return Path(path).read_bytes()
    except PermissionError:
        raise VidmatError(f"{path} cannot be read (permission denied).") from None
    except OSError as exc:
        raise VidmatError(f"{path} cannot be read ({exc.strerror or exc}).") from None


def _umask_mode(path: Path) -> None:
    """Temporary files are created private (0600); a finished output gets the usual mode."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _link_new(tmp: Path, path: Path) -> bool:
    """Give ``tmp`` the name ``path`` only if it is free: True when done. A hard link fails
    when the name is taken; where links are not supported (FAT, some network drives) a
    check just before the rename narrows the window."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:
        if path.exists() or path.is_symlink():
            return False
        os.replace(tmp, path)
        return True
    tmp.unlink()
    return True


def _rename_new(tmp: Path, path: Path) -> bool:
    """Rename the folder ``tmp`` to ``path`` only if nothing is there: True when done."""
    if path.exists() or path.is_symlink():
        return False
    try:
        os.rename(tmp, path)
    except OSError:
        return False  # taken between the look and the rename
    return True


def _keep_beside(
    tmp: Path, path: Path, place: Callable[[Path, Path], bool], why: str | None = None
) -> NoReturn:
    """Keep an output whose name another run took meanwhile under the next free name
    (``stem-2.ext`` for a file, ``NAME-2`` for a folder of frames), put there by ``place``,
    and say so: an hour's recording, or a folder of frames, was deleted for its name.
    ``why`` the name cannot take it, when not that."""
    why = why or f"{path} was written meanwhile (by another run?)"
    for n in range(2, 1000):
        name = f"{path.name}-{n}" if tmp.is_dir() else f"{path.stem}-{n}{path.suffix}"
        other = path.with_name(name)
        if place(tmp, other):
            raise VidmatError(f"{why}; this output was kept as {other.name} instead.")
    raise VidmatError(f"{why}, and no name beside it up to -999 was free; nothing was kept.")


def _publish_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if nothing is there: the check before the work is
    minutes old by now, and two runs writing one output both renamed over it, the
    second result silently replacing the first."""
    if not _link_new(tmp, path):
        _keep_beside(tmp, path, _link_new)


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str | None = None, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success
    (without ``overwrite``, only if ``path`` is still free then).

    The temporary name keeps the real extension (``suffix``) because muxers pick
    the container from it. On any exception, Ctrl-C included, the temporary file
    is removed and nothing appears at ``path``.
    """
    path = Path(path)
    ext = suffix if suffix is not None else path.suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{_part_base(path.stem, ext)}.", suffix=f".part{ext}", dir=path.parent or "."
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _umask_mode(tmp)
        with stops_deferred():  # published whole, or not: not linked and left as a part
            if overwrite:
                os.replace(tmp, path)
            else:
                _publish_new(tmp, path)
    except BaseException as exc:
        full = disk_full(exc, tmp.parent)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if full:
            raise DiskFull(path) from None
        raise


class DiskFull(VidmatError):
    """A write that failed on a full disk, in one sentence; ``strerror`` as OSError's."""

    strerror = os.strerror(errno.ENOSPC)

    def __init__(self, path: Path) -> None:
        super().__init__(f"cannot write {path} ({self.strerror}).")  # as atomic_write_text says it


#: Free bytes below which a failed write is taken for a full disk.
_NEARLY_FULL = 1 << 20


def disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, is the disk being full.

    Writers say so in their own words: OSError's ENOSPC or EDQUOT, safetensors' "No
    space left on device (os error 28)", and no words at all from torch.save
    ("unexpected pos 64 vs 0") or numpy ("1221120 requested and 1048448 written"), for
    which the folder's free space decides. Each had ended training in a traceback."""
    if not isinstance(exc, Exception) or isinstance(exc, VidmatError):
        return False  # Ctrl-C, or a sentence already
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "os error 28" in text:
        return True
    # Only a failure that names no cause asks the disk: an OSError with another errno
    # (EACCES, EIO, a missing input) is that error, however little room is left.
    wordless = isinstance(exc, RuntimeError) or (isinstance(exc, OSError) and exc.errno is None)
    if not wordless:
        return False
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


#: The longest file name most file systems take, in bytes (NAME_MAX).
NAME_MAX = 255


def _part_base(base: str, ext: str = "") -> str:
    """``base`` cut so that ``.BASE.XXXXXXXX.partEXT`` fits in :data:`NAME_MAX` bytes: an
    output of a legal 250-byte name failed on its temporary name ("File name too long")."""
    room = NAME_MAX - len(os.fsencode(f"..{'x' * 8}.part{ext}"))
    raw = os.fsencode(base)
    if len(raw) <= room:
        return base
    try:  # whole characters: half of one made a name that is not UTF-8
        base.encode("utf-8")
    except UnicodeEncodeError:  # a name that was not UTF-8 to begin with: cut as bytes
        return os.fsdecode(raw[:room])
    return raw[:room].decode("utf-8", "ignore")


#: A temporary output untouched for this long (seconds) is taken for a dead run's: a
#: running convert writes to its own every few frames.
STALE_PART_SECONDS = 60.0


def leftover_parts(path: Path, folder: bool = False) -> list[Path]:
    """Temporary outputs beside ``path`` of the names :func:`atomic_output` and
    :func:`atomic_folder` give it, untouched for :data:`STALE_PART_SECONDS`: a run killed
    outright (``kill -9``, a power cut) never removes its own, and a killed convert can
    leave gigabytes hidden by the dot. One still being written is another run's."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    # tempfile's 8 random characters exactly, and the name taken literally: ".clip.*"
    # also matched clip.matte.mp4's leftovers, and "take[1]" was read as a pattern
    rand = "?" * 8
    if folder:
        pattern = f".{glob.escape(_part_base(path.name))}.{rand}.part"
    else:
        base = _part_base(path.stem, path.suffix)
        pattern = f".{glob.escape(base)}.{rand}.part{glob.escape(path.suffix)}"
    now = time.time()
    found = []
    try:
        for p in parent.glob(pattern):
            with contextlib.suppress(OSError):
                if p.is_dir() == folder and now - p.stat().st_mtime > STALE_PART_SECONDS:
                    found.append(p)
    except OSError:
        return []
    return sorted(found)


def leftovers_note(dst: Path, leftovers: list[Path]) -> list[str]:
    """A word on temporary outputs an earlier run left beside this one (see
    :func:`leftover_parts`); they are not deleted, as another run may be writing them."""
    if not leftovers:
        return []
    size = sum(disk_bytes(p) for p in leftovers)
    names = ", ".join(p.name for p in leftovers[:3]) + (", ..." if len(leftovers) > 3 else "")
    one = len(leftovers) == 1
    return [
        f"{'an unfinished output' if one else f'{len(leftovers)} unfinished outputs'} of "
        f"{dst.name} from a run that was killed {'lies' if one else 'lie'} beside it "
        f"({names}; {size / 2**20:.1f} MiB); delete {'it' if one else 'them'} unless "
        "another vidmat is still writing to it."
    ]


_folder_lock = threading.Lock()


@contextlib.contextmanager
def atomic_folder(
    path: Path, overwrite: bool = False, kind: FolderKind | None = None
) -> Iterator[Path]:
    """Like :func:`atomic_output` for a folder of files (a PNG sequence).

    The files go into a hidden temporary folder beside ``path``; only when all are
    written is it renamed into place (an old folder is moved aside first and deleted
    afterwards, so there is no moment with neither). An old folder not of ``kind`` is
    never replaced (checked again here: it may have changed during the run).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    existed = path.exists() or path.is_symlink()
    tmp = Path(tempfile.mkdtemp(prefix=f".{_part_base(path.name)}.", suffix=".part", dir=parent))
    try:
        yield tmp
        _umask_mode(tmp)
        with _folder_lock, stops_deferred():
            old = None
            if path.exists() or path.is_symlink():  # a link replaced is the link, not its target
                if not overwrite and existed:
                    raise VidmatError(f"{path} already exists; pass --overwrite to replace it.")
                if not overwrite:  # another run made it meanwhile
                    _keep_beside(tmp, path, _rename_new)  # raises, saying where they are
                why = kind.foreign(path) if kind is not None else None
                if why is not None:  # a folder of the user's took the name during the run
                    _keep_beside(tmp, path, _rename_new, why)
                old = Path(
                    tempfile.mkdtemp(prefix=f".{_part_base(path.name)}.", suffix=".old", dir=parent)
                )
                os.rmdir(old)
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:  # the old folder back under its name, not hidden
                    os.replace(old, path)
                raise
            if old is not None:
                # rmtree refuses a link (quietly, with ignore_errors): it was left behind
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink()
    except BaseException as exc:
        full = disk_full(exc, parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFull(path) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all; a device or pipe (see
    :func:`is_stream`) is written in place."""
    # Our own output is written through, after what was printed: not reopened, which
    # truncated the file the shell sent it to.
    own = _own_stream(path)
    if own is None and not _is_device(path):
        try:
            with atomic_output(path) as tmp:
                tmp.write_text(text)
        except OSError as exc:  # a full disk: the results were printed, the file is not there
            raise VidmatError(f"cannot write {path} ({exc.strerror or exc}).") from None
        return
    try:
        if own is not None:
            own.write(text)
            own.flush()
        else:
            sys.stdout.flush()
            with open(path, "a") as stream:
                stream.write(text)
    except OSError as exc:  # /dev/full, a closed pipe
        raise VidmatError(f"cannot write {path} ({exc.strerror or exc}).") from None


def json_text(payload: Any, default: Any = None) -> str:
    """``payload`` as indented JSON that strict readers take: a NaN or infinite number
    (the flicker of a one-frame sequence) is written as null, not as Python's ``NaN``,
    which ``JSON.parse`` and ``jq`` refuse."""

    def plain(x: Any) -> Any:
        if isinstance(x, numbers.Real) and not math.isfinite(x):  # numpy's floats too
            return None
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return json.dumps(plain(payload), indent=2, default=default, allow_nan=False) + "\n"


@contextlib.contextmanager
def folder_lock(folder: Path, busy: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for as long as the block runs; ``busy`` is the sentence said
    when another process holds it. Two training runs on one --run folder both started from
    step 0 and wrote over each other's checkpoint, log and exports, both ending 0. The
    kernel lets the lock go when the holder dies (kill -9 too); where there is no fcntl
    (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise VidmatError(busy) from None
        try:
            yield
        finally:
            # Still locked: refused before it wrote anything (a mask of another size),
            # nothing is left, the folders made for it included.
            if made and [p.name for p in folder.iterdir()] == [lock.name]:
                with contextlib.suppress(OSError):
                    lock.unlink()
                    for empty in made:
                        empty.rmdir()
            fcntl.flock(handle, fcntl.LOCK_UN)
