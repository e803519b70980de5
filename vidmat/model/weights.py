"""The weights registry and the only code that reads or writes weights files.

Weights travel with their preprocessing (input size, scaling, mean/std, output
activation), as torchvision's weight enums do, so a caller can never feed a
model the wrong normalisation. Our own files are safetensors with the spec in
their metadata; official U-2-Net ``.pth`` checkpoints a user already has are
read with ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary
objects, so a crafted file cannot run code.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vidmat.errors import TERMINAL_CODES, WeightsError, plain_text
from vidmat.model.spec import (
    DEFAULT_WEIGHTS,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    OFFICIAL_SPECS,
    REGISTRY,
    WeightsSpec,
)
from vidmat.model.u2net import U2Net, build_model
from vidmat.resources import weights_dir

#: Folder of shipped weights (``weights/`` in a checkout, bundled in a wheel).
WEIGHTS_DIR = weights_dir()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def available_weights() -> list[tuple[WeightsSpec, Path, bool]]:
    """Every registered weights entry with its path and whether the file is present."""
    out = []
    for spec in REGISTRY.values():
        path = WEIGHTS_DIR / (spec.file or "")
        out.append((spec, path, bool(spec.file) and path.is_file()))
    return out


#: A tensor both architectures have, whose shape tells them apart (stage2's input conv).
_ARCH_PROBE = "stage2.rebnconvin.conv_s1.weight"


def detect_arch(state: Mapping[str, Tensor]) -> str:
    """Tell u2netp from u2net by a tensor shape both have (stage2's input conv)."""
    w = state.get(_ARCH_PROBE)
    if w is None or w.dim() != 4:
        raise KeyError(_ARCH_PROBE)
    return {64: "u2netp", 128: "u2net"}.get(int(w.shape[0]), "unknown")


def _clean_state(state: Mapping[object, object]) -> dict[str, Tensor]:
    """Keep named tensors only (a training checkpoint's epoch, loss or optimizer state
    sit beside them), without the prefix a wrapper put before the model's own names.

    The prefix is read off the layer :func:`detect_arch` probes: DataParallel's
    ``module.`` (twice, nested), ``torch.compile``'s ``_orig_mod.`` and a training
    module's attribute (Lightning's ``model.``) were each refused as "no stage2.rebnconvin
    layer" while it was there. Tensors outside the prefix stay as they are and are named
    as unexpected."""
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}
    prefix = ""
    if _ARCH_PROBE not in tensors:
        prefix = next(
            (k.removesuffix(_ARCH_PROBE) for k in tensors if k.endswith("." + _ARCH_PROBE)), ""
        )
    # DataParallel's module. comes off every key that has it, as it always did.
    return {k.removeprefix(prefix).removeprefix("module."): v for k, v in tensors.items()}


#: Keys under which training loops nest a model's state_dict beside their own bookkeeping
#: (epoch, optimizer): Lightning's and mmcv's ``state_dict``, the PyTorch tutorial's
#: ``model_state_dict``, DeepSpeed's ``module`` and the ``model`` / ``net`` of many
#: repositories' own scripts. Tried in this order; the first holding a U-2-Net is taken
#: (then an entry of the user's own: see :func:`_find_state`).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
#: Entries beside a model that hold another copy of it or another network: never taken
#: for the model under a key of the user's own.
_NOT_THE_MODEL = frozenset(
    {"ema", "model_ema", "ema_model", "ema_state_dict", "teacher", "optimizer", "opt", "sched"}
)


def _find_state(obj: Mapping[object, object], depth: int = 2) -> dict[str, Tensor] | None:
    """The U-2-Net tensors of a checkpoint: its own, or those of the first wrapper entry
    (``_WRAPPER_KEYS``, up to ``depth`` levels down) that holds U-2-Net tensors; None when
    nothing in it looks like a U-2-Net.

    A wrapper is taken only when it holds the tensor :func:`detect_arch` reads, so a
    checkpoint of another model wrapped the same way still meets the refusal that names
    the missing layer rather than loading something else. Under a key of the user's own
    (``{"weights": sd}`` was refused as no U-2-Net) it is taken only where it is the one
    such entry, and never from an entry that holds a copy trained or kept another way
    (``_NOT_THE_MODEL``: a lone vidmat EMA would load with the official checkpoints'
    preprocessing, and a teacher beside another student was taken in silence).
    """
    state = _clean_state(obj)
    if _ARCH_PROBE in state:
        return state
    if depth <= 0:
        return None
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            found = _find_state(inner, depth - 1)
            if found is not None:
                return found
    own = [
        found
        for k, v in obj.items()
        if k not in _WRAPPER_KEYS and k not in _NOT_THE_MODEL and isinstance(v, Mapping)
        if (found := _find_state(v, depth - 1)) is not None
    ]
    return own[0] if len(own) == 1 else None


#: What torch's weights-only unpickler says when the pickle asks for a Python object it
#: does not allow (a class, a function such as os.system), across torch 2.1-2.13; other
#: UnpicklingErrors (an unknown opcode, a truncated string) mean a damaged file.
_OBJECT_REFUSAL = re.compile(
    r"GLOBAL|Unsupported class|unrecognized function|new object|Can only build|must be imported"
)


def _unpickling_reason(text: str) -> str:
    """The unpickler's own words from torch's wrapped weights-only message.

    Torch puts them in a paragraph of their own between its advice (to load with
    ``weights_only=False``, which vidmat never does) and a pointer to its documentation.
    """
    paragraphs = [plain_text(p) for p in TERMINAL_CODES.sub("", text).split("\n\n")]
    own = [
        p
        for p in paragraphs
        if p and not p.startswith(("Weights only load failed", "Check the documentation"))
    ]
    return own[0] if own else "damaged pickle data"


class TorchFileRefused(ValueError):
    """A file :func:`load_plain` would not read, and why in words; ``objects``: it asked
    for Python objects (code could run), rather than being damaged or not a pickle;
    ``kind``: what the file is instead, where known ("a TorchScript archive")."""

    def __init__(self, reason: str, objects: bool, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.objects = objects
        self.kind = kind


#: torch's own prefix on errors from its C++ zip reader ("[enforce fail at
#: inline_container.cc:180] . "), which says where in torch, not what is wrong.
_ENFORCE = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")


def _first_sentence(text: str) -> str:
    """The first sentence of a torch error: the rest of a damaged zip's is miniz's advice
    ("This is an internal miniz error. If you are seeing this error, ...")."""
    line = plain_text(_ENFORCE.sub("", text.strip().splitlines()[0] if text.strip() else ""))
    return line.split(". ")[0].rstrip(".")


def load_plain(path: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` that lets only tensors and plain values out of the pickle
    (``weights_only``), for weights and training checkpoints alike: a crafted file cannot
    run code. Raises :class:`TorchFileRefused`.

    torch's warnings are silenced (a TorchScript archive's "dispatching to torch.jit.load",
    a protocol-4 pickle's "please file an issue"): they came out, with torch's file paths,
    above the one sentence that says what is wrong."""
    try:
        # catch_warnings is process-wide: weights load on one thread at a time here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if str(path).endswith(".safetensors") and not mmap:
                # torch.load reads a path of that name as safetensors: a .pth renamed so
                # failed on "header too large". A file object is read for what it holds.
                with open(path, "rb") as f:
                    return torch.load(f, map_location=map_location, weights_only=True)
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch's text here is several paragraphs with terminal escapes that advise
        # loading the file with weights_only=False: not something to pass on.
        objects = bool(_OBJECT_REFUSAL.search(str(exc)))
        kind = None if objects else _plain_pickle(path)
        raise TorchFileRefused(_unpickling_reason(str(exc)), objects, kind) from None
    except Exception as exc:  # torch raises many types for damaged files; all mean 'unreadable'
        text = str(exc)
        if "TorchScript" in text:  # torch's advice here is to load it with weights_only=False
            raise TorchFileRefused(
                "it is a TorchScript archive",
                False,
                "a TorchScript archive, not a torch.save checkpoint",
            ) from None
        raise TorchFileRefused(_first_sentence(text) or type(exc).__name__, False) from None


def _plain_pickle(path: Path) -> str | None:
    """Names a file pickled with protocol 4 or 5 (``pickle.dump``'s default, or torch's
    legacy format saved with ``pickle_protocol=4``), which torch's safe loader cannot read:
    its "Unsupported operand 149" read as a damaged file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return None
    pickled = head in (b"\x80\x04", b"\x80\x05")
    return (
        "a pickle of protocol 4 or 5, which vidmat's safe loader cannot read" if pickled else None
    )


#: The entries of a ``vidmat train`` checkpoint (``RUN/last.pt``) that tell it from other
#: training loops' files; the model package cannot import the training one's own list.
_VIDMAT_CHECKPOINT = ("step", "model", "ema", "opt", "sched")


def _vidmat_checkpoint_spec(obj: Mapping[object, object], path: Path, arch: str) -> WeightsSpec:
    """The spec ``vidmat train`` would have exported this run with: its images scaled by
    255 and its validation size, not the official checkpoints' max-scaling at 320."""
    config = obj.get("config")
    config = config if isinstance(config, Mapping) else {}
    size = config.get("val_size") or config.get("size")
    head = obj.get("head_size")
    head = head if isinstance(head, int) and not isinstance(head, bool) else None
    if size is not None:  # an older run has no config
        try:
            return WeightsSpec(
                name=path.stem, arch=arch, input_size=int(size), scale="255", head_size=head
            )
        except (TypeError, ValueError):  # a size refused
            pass
    return WeightsSpec(name=path.stem, arch=arch, scale="255")


def _read_pth(path: Path) -> tuple[dict[str, Tensor], WeightsSpec | None]:
    """A checkpoint's U-2-Net tensors, and a spec where the file says how it was trained.

    A ``vidmat train`` checkpoint gives its EMA, the weights its validation scored and its
    exports hold; the raw ``model`` beside it is the noisier last step."""
    try:
        obj = load_plain(path)
    except TorchFileRefused as exc:
        if exc.objects:
            raise WeightsError(
                f"{path} holds Python objects other than tensors, which vidmat does not load "
                "(it could run code); export its state_dict with "
                "torch.save(model.state_dict(), path)."
            ) from None
        if exc.kind is not None:
            raise WeightsError(
                f"{path} is {exc.kind}; export the model's state_dict with "
                "torch.save(model.state_dict(), path)."
            ) from None
        raise WeightsError(
            f"{path} is damaged or not a PyTorch checkpoint ({exc.reason})."
        ) from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} is not a checkpoint of model weights (no state_dict found).")
    raw = obj.get("model")
    ours = isinstance(raw, Mapping) and _find_state(raw, depth=0) is not None
    if ours and all(k in obj for k in _VIDMAT_CHECKPOINT):  # another loop's: refused below
        ema = _find_state(obj["ema"], depth=0) if isinstance(obj["ema"], Mapping) else None
        if ema is None:
            # the raw last step at 320 px was loaded instead, without a word
            raise WeightsError(
                f"{path} is a vidmat training checkpoint whose averaged (EMA) weights are "
                "damaged; use the run's best.safetensors or an ema_step file instead."
            )
        arch = detect_arch(ema)
        if arch == "unknown":  # load_weights says so in one sentence
            return ema, None
        return ema, _vidmat_checkpoint_spec(obj, path, arch)
    found = _find_state(obj)
    # nothing U-2-Net-like: its own tensors, which load_weights refuses naming the missing layer
    return (found if found is not None else _clean_state(obj)), None


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], WeightsSpec | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({plain_text(str(exc))})."
        ) from None
    spec = None
    if "vidmat_spec" in meta:
        try:
            spec = WeightsSpec.from_json(meta["vidmat_spec"])
        except (ValueError, TypeError, KeyError) as exc:
            raise WeightsError(f"{path} has an unreadable vidmat spec ({exc}).") from None
    return state, spec


def _sized_head_sizes(state: Mapping[str, Tensor], path: Path) -> list[int]:
    """The input sizes of the heads a file carries besides the model's own (``sized_heads.S.*``)."""
    keys = {k.split(".")[1] for k in state if k.startswith("sized_heads.") and k.count(".") >= 2}
    if not all(k.isdigit() and MIN_INPUT_SIZE <= int(k) <= MAX_INPUT_SIZE for k in keys):
        raise WeightsError(
            f"{path} has a sized head whose name is not an input size in "
            f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}."
        )
    return sorted(int(k) for k in keys)


def _check_finite(state: Mapping[str, Tensor], path: Path) -> None:
    """Refuse NaN or inf anywhere in the weights.

    Such a file loads and runs without a word and gives an empty or a random matte (a
    diverged training run, a bit flip in a copy). A tensor's sum is non-finite when any
    of its values is, and summing is the cheapest full read: on one core u2net's 44 M
    values take 16 ms against 180 ms for ``isfinite().all()`` per tensor (u2netp: 1.4 ms,
    3 % of its load). Only a tensor whose sum is not finite is then read value by value,
    so that a finite file whose sum overflows float32 is not refused.
    """
    floats = [(name, t) for name, t in state.items() if t.is_floating_point()]
    if not floats:
        return
    sums = torch.stack([t.sum(dtype=torch.float32) for _, t in floats])
    if bool(sums.isfinite().all()):
        return
    for name, tensor in floats:
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"weights {path} hold non-finite values (NaN or inf) in {name}; "
                "the file is damaged."
            )


def _tensors(n: int) -> str:
    return f"{n} tensor" if n == 1 else f"{n} tensors"


def _build_and_load(state: dict[str, Tensor], arch: str, path: Path, head_size: int = 320) -> U2Net:
    model = build_model(arch)
    model.head_size = head_size
    for size in _sized_head_sizes(state, path):
        model.add_sized_head(size)
    expected = model.state_dict()
    # num_batches_tracked only matters for momentum=None BatchNorm; older checkpoints lack it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"{_tensors(len(missing))} missing (e.g. {missing[0]})")
        if unexpected:
            what.append(f"{_tensors(len(unexpected))} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"{path} does not fit the {arch} architecture: {', '.join(what)}.")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise WeightsError(
                f"{path} does not fit the {arch} architecture: {k} has shape "
                f"{tuple(v.shape)}, expected {tuple(expected[k].shape)}."
            )
        if expected[k].is_floating_point() and not v.is_floating_point():
            # int or bool weights were cast and ran, a matte of 255 everywhere; complex
            # ones lost their imaginary part with torch's warning. (A counter such as
            # num_batches_tracked made float by a whole-dict .half() still loads.)
            raise WeightsError(
                f"{path} does not hold model weights: {k} is {str(v.dtype).removeprefix('torch.')}, "
                f"expected {str(expected[k].dtype).removeprefix('torch.')}."
            )
    _check_finite(state, path)
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    return model.eval()


def resolve(name_or_path: str | Path) -> tuple[Path, WeightsSpec | None]:
    """Map ``--weights`` (a registry name, "default" or a path) to a file and its spec."""
    key = str(name_or_path)
    if not key.strip():
        # Path("") is the current folder; an empty name is a slip (an unset shell
        # variable), never a request for the default, which is spelt "default".
        raise WeightsError(
            "the weights name is empty; give a registered name "
            f"({', '.join(sorted(REGISTRY))}), 'default' or a path to a weights file."
        )
    if key == "default":
        key = DEFAULT_WEIGHTS
    if key in REGISTRY:
        spec = REGISTRY[key]
        path = WEIGHTS_DIR / (spec.file or "")
        if not spec.file or not path.is_file():
            raise WeightsError(
                f"the shipped weights {key!r} are missing ({path}); reinstall vidmat from a "
                "complete checkout or pass --weights PATH to an official U-2-Net checkpoint."
            )
        return path, spec
    path = Path(key).expanduser()
    if not path.exists():
        names = ", ".join(sorted(REGISTRY))
        raise WeightsError(f"weights {key!r} are neither a registered name ({names}) nor a file.")
    if path.is_dir():
        raise WeightsError(f"weights path {path} is a folder, not a weights file.")
    if not path.is_file():  # a named pipe waited for a writer forever; torch cannot seek one
        raise WeightsError(f"weights path {path} is not a regular file.")
    return path, _registered_at(path)


def weights_file(name_or_path: str | Path) -> Path | None:
    """The file ``--weights`` names (a registered name is a file too), or None where it
    names none: for outputs that must not replace it; loading says why on its own."""
    try:
        return resolve(name_or_path)[0]
    except (WeightsError, OSError):  # a name too long, a folder that cannot be entered
        return None


def _looks_like_safetensors(head: bytes) -> bool:
    """A safetensors file by its first bytes: an 8-byte little-endian header length, then
    the header's JSON ``{``. One renamed .pth was called "neither a PyTorch checkpoint
    nor a safetensors file"."""
    return len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30


def _registered_at(path: Path) -> WeightsSpec | None:
    """The registry entry whose shipped file ``path`` is (by any spelling or link), if any.

    The shipped file given by its path is the same weights as its registered name: it
    reports that name and is checked against the published sha256 just the same.
    """
    for spec, shipped, present in available_weights():
        if present and path.samefile(shipped):
            return spec
    return None


def load_weights(
    name_or_path: str | Path = "default", device: str | torch.device = "cpu"
) -> tuple[U2Net, WeightsSpec]:
    """Load registered or user-supplied weights into a model in eval mode.

    Returns ``(model, spec)``. Every failure is a :class:`WeightsError` naming the
    file and what is wrong with it.
    """
    path, registered = resolve(name_or_path)
    try:
        if registered is not None and registered.sha256:
            digest = sha256_file(path)
            if digest != registered.sha256:
                raise WeightsError(
                    f"{path} fails its checksum (sha256 {digest[:12]}…, expected "
                    f"{registered.sha256[:12]}…); the file is damaged or was replaced."
                )
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:  # no permission to read it, an I/O error of the disk
        raise WeightsError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if not head:
        raise WeightsError(f"{path} is empty.")
    # By the first bytes, not the name: a .pth renamed .safetensors (or the reverse) loads.
    if _looks_like_safetensors(head):
        state, spec = _read_safetensors(path)
    elif head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip format or legacy pickle
        state, spec = _read_pth(path)
    else:
        raise WeightsError(f"{path} is neither a PyTorch checkpoint nor a safetensors file.")

    try:
        arch = detect_arch(state)
    except KeyError:
        probe = state.get(_ARCH_PROBE)
        if probe is not None:  # there, but not a 4-D convolution ("has no ... layer" was wrong)
            raise WeightsError(
                f"{path} is not a U-2-Net checkpoint ({_ARCH_PROBE} has shape "
                f"{tuple(probe.shape)}, not that of a convolution)."
            ) from None
        raise WeightsError(
            f"{path} is not a U-2-Net checkpoint (it has no stage2.rebnconvin layer)."
        ) from None
    if arch == "unknown":
        raise WeightsError(f"{path} is a checkpoint of an unknown U-2-Net variant.")
    if spec is None:
        spec = registered or OFFICIAL_SPECS.get(path.stem) or OFFICIAL_SPECS[arch]
        spec = replace(spec, arch=arch)
    elif spec.arch != arch:
        raise WeightsError(f"{path} says it holds {spec.arch} but its tensors are {arch}.")
    if registered is not None:
        spec = replace(spec, sha256=registered.sha256, name=registered.name, file=registered.file)
    else:
        # A spec's name is the one its file was written under, which renaming does not
        # change (the shipped file's says "H2"); eval, bench model and scenes should name
        # the file the user passed, so any file loaded by path is named by its stem.
        spec = replace(spec, name=path.stem, file=str(path))
    model = _build_and_load(state, arch, path, spec.head_size or spec.input_size)
    return model.to(device), spec


def own_head_size(model: torch.nn.Module, input_size: int) -> int | None:
    """The side a model's own head serves, to keep in what is saved where it
    is not ``input_size`` (see WeightsSpec.head_size); None for a model without sized heads,
    whose one head serves every size."""
    sized = getattr(model, "sized_heads", None)
    head = getattr(model, "head_size", None)
    if not sized or not isinstance(head, int) or head == input_size:
        return None
    return head


def save_weights(
    model: torch.nn.Module, spec: WeightsSpec, path: str | Path, half: bool = False
) -> str:
    """Write weights as safetensors with the spec in the metadata; return the file's sha256.

    ``half`` stores floating tensors as fp16, halving the file (u2netp: ~2.3 MB);
    the loader casts back to the model's dtype. Callers that replace a file users
    rely on wrap this in ``vidmat.io.files.atomic_output`` (the model layer does no
    file management of its own).
    """
    from safetensors.torch import save_file

    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        state[k] = v.contiguous()
    path = Path(path)
    save_file(state, str(path), metadata={"vidmat_spec": spec.to_json()})
    return sha256_file(path)
