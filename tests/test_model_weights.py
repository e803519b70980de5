"""Every way a weights file can be good or bad, with tiny generated checkpoints."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vidmat.errors import WeightsError
from vidmat.model import weights as W
from vidmat.model.u2net import build_model


@pytest.fixture(scope="module")
def u2netp_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return build_model("u2netp").state_dict()


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = model.state_dict()
    return all(
        torch.equal(mine[k].float(), v.float()) for k, v in state.items() if "num_batches" not in k
    )


def test_official_checkpoint_loads_as_is(tmp_path: Path, u2netp_state) -> None:
    path = tmp_path / "u2netp.pth"
    torch.save(u2netp_state, path)
    model, spec = W.load_weights(path)
    assert spec.arch == "u2netp" and spec.scale == "max" and spec.input_size == 320
    assert not model.training
    assert _same(model, u2netp_state)


def test_module_prefix_and_missing_num_batches_tracked_are_accepted(
    tmp_path: Path, u2netp_state
) -> None:
    state = {f"module.{k}": v for k, v in u2netp_state.items() if "num_batches_tracked" not in k}
    path = tmp_path / "dp.pth"
    torch.save(state, path)
    model, spec = W.load_weights(path)
    assert spec.arch == "u2netp"
    assert _same(model, u2netp_state)


def test_wrapped_state_dict_is_accepted(tmp_path: Path, u2netp_state) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": u2netp_state, "epoch": 3}, path)
    model, _ = W.load_weights(path)
    assert _same(model, u2netp_state)


def _optimizer_state() -> dict:
    """What a training loop saves beside the weights: an AdamW state after one step."""
    prm = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([prm])
    prm.sum().backward()
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"model": s},
        lambda s: {"net": s, "epoch": 7},
        lambda s: {"model_state_dict": s, "optimizer_state_dict": _optimizer_state(), "loss": 0.1},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
        lambda s: {
            "model": {f"module.{k}": v for k, v in s.items()},
            "optimizer": _optimizer_state(),
        },
        lambda s: {"epoch": 1, "checkpoint": {"state_dict": s}, "net": {"state_dict": s}},
        # these were refused as "it has no stage2.rebnconvin layer" while it was there
        lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},  # torch.compile
        lambda s: {f"module.module.{k}": v for k, v in s.items()},  # DataParallel twice
        lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "epoch": 3},
        lambda s: {"weights": s, "epoch": 2},  # a wrapper key of the user's own
        lambda s: {(f"module.{k}" if i % 2 else k): v for i, (k, v) in enumerate(s.items())},
    ],
    ids=[
        "model",
        "net",
        "tutorial",
        "state_dict-module",
        "model-module",
        "nested",
        "compiled",
        "module-twice",
        "lightning",
        "own-key",
        "module-on-some",
    ],
)
def test_training_wrappers_around_a_state_dict_load(tmp_path: Path, u2netp_state, wrap) -> None:
    """Training loops save {'model': state_dict, 'optimizer': ..., 'epoch': ...}; such a
    file was refused as 'not a U-2-Net checkpoint' unless the key was 'state_dict'."""
    path = tmp_path / "checkpoint.pth"
    torch.save(wrap(u2netp_state), path)
    model, spec = W.load_weights(path)
    assert spec.arch == "u2netp" and spec.scale == "max"
    assert _same(model, u2netp_state)


def test_wrappers_of_anything_else_are_still_refused(tmp_path: Path, u2netp_state) -> None:
    """Unwrapping takes only a U-2-Net; other wrapped models, and wrappers carrying Python
    objects, meet the same refusals as before (weights_only still reads the file)."""
    other = {"conv1.weight": torch.zeros(8, 3, 3, 3)}
    for i, obj in enumerate(
        [
            {"model": other},
            {"net": other, "epoch": 2},
            {"state_dict": other},
            {"model": 3},
            # a lone EMA would load with the official preprocessing; a teacher is not the
            # student; two entries of the user's own are not guessed between
            {"ema": u2netp_state, "step": 3, "config": {"size": 256}},
            {"teacher": u2netp_state, "student": other},
            {"a": u2netp_state, "b": u2netp_state},
        ]
    ):
        path = tmp_path / f"other{i}.pth"
        torch.save(obj, path)
        _expect(path, "is not a U-2-Net checkpoint \\(it has no stage2.rebnconvin layer\\)")

    import argparse

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for i, extra in enumerate([argparse.Namespace(lr=1.0), Evil()]):
        path = tmp_path / f"objects{i}.pth"
        torch.save({"model": u2netp_state, "args": extra}, path)
        _expect(path, "holds Python objects other than tensors")
    assert not marker.exists()


def test_full_u2net_is_detected_from_shapes(tmp_path: Path) -> None:
    path = tmp_path / "u2net_human_seg.pth"
    torch.save(build_model("u2net").state_dict(), path)
    model, spec = W.load_weights(path)
    assert spec.arch == "u2net" and spec.name == "u2net_human_seg"
    assert model.arch == "u2net"


def test_safetensors_roundtrip_keeps_spec_and_values(tmp_path: Path, u2netp_state) -> None:
    model = build_model("u2netp")
    model.load_state_dict(u2netp_state)
    spec = W.WeightsSpec(name="mine", arch="u2netp", input_size=256, scale="255")
    path = tmp_path / "mine.safetensors"
    digest = W.save_weights(model, spec, path)
    assert digest == W.sha256_file(path)
    loaded, got = W.load_weights(path)
    assert (got.name, got.input_size, got.scale) == ("mine", 256, "255")
    assert _same(loaded, u2netp_state)
    half = tmp_path / "half.safetensors"
    W.save_weights(model, spec, half, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded_half, _ = W.load_weights(half)
    assert next(loaded_half.parameters()).dtype == torch.float32


def _expect(path: Path, pattern: str) -> None:
    with pytest.raises(WeightsError, match=pattern) as info:
        W.load_weights(path)
    assert str(path) in str(info.value) or path.name in str(info.value)


def test_crafted_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"stage1.x": Evil()}, path)
    with pytest.raises(WeightsError) as info:
        W.load_weights(path)
    assert str(info.value) == (
        f"{path} holds Python objects other than tensors, which vidmat does not load (it "
        "could run code); export its state_dict with torch.save(model.state_dict(), path)."
    )
    assert not marker.exists()


def test_a_pickled_class_is_refused_in_one_plain_sentence(tmp_path: Path) -> None:
    """A class torch does not block but does not allow either (QA: a whole pickled model)
    made torch's message with terminal escapes and a cut-off sentence reach the user."""
    import argparse

    path = tmp_path / "objects.pth"
    torch.save({"stage1.x": torch.zeros(1), "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(WeightsError) as info:
        W.load_weights(path)
    text = str(info.value)
    assert text.startswith(f"{path} holds Python objects other than tensors")
    assert "\x1b" not in text and "\n" not in text and "weights_only" not in text


def test_torch_text_reaches_the_user_without_escapes(tmp_path: Path, monkeypatch) -> None:
    """A damaged pickle is not called unsafe, and torch's advice to load it with
    weights_only=False, its escapes and its line breaks stay out of the sentence."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02garbage garbage")
    with pytest.raises(WeightsError) as info:
        W.load_weights(garbage)
    # torch's own words name the fault ("Unsupported operand 103"; older torch has none)
    said = str(info.value)
    assert said.startswith(f"{garbage} is damaged or not a PyTorch checkpoint (") and said.endswith(
        ")."
    )
    assert "\n" not in said and "weights_only" not in said and len(said) < len(str(garbage)) + 80

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("\x1b[1mPytorchStreamReader failed\x1b[0m  reading zip archive\nmore")

    monkeypatch.setattr(torch, "load", fails)
    odd = tmp_path / "odd.pth"
    torch.save({}, odd)
    with pytest.raises(WeightsError) as info:
        W.load_weights(odd)
    assert str(info.value) == (
        f"{odd} is damaged or not a PyTorch checkpoint (PytorchStreamReader failed reading zip archive)."
    )


def test_safetensors_under_another_name_still_load(tmp_path: Path, tiny_weights: Path) -> None:
    """A safetensors file named .pth was "neither a PyTorch checkpoint nor a safetensors
    file"; it is told by its first bytes."""
    renamed = tmp_path / "weights.pth"
    renamed.write_bytes(tiny_weights.read_bytes())
    model, spec = W.load_weights(renamed)
    assert spec is not None and spec.input_size == 32
    want, _ = W.load_weights(tiny_weights)
    key = "outconv.weight"
    assert torch.equal(model.state_dict()[key], want.state_dict()[key])


def test_bad_files_each_get_one_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _expect(empty, "is empty")

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _expect(text, "neither a PyTorch checkpoint nor a safetensors")

    torch.save(build_model("u2netp").state_dict(), tmp_path / "full.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    _expect(corrupt, "is damaged or not a PyTorch checkpoint")

    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, other)
    _expect(other, "not a U-2-Net checkpoint")
    # another training loop's checkpoint with the same entries: not called a damaged vidmat one
    sd = {"conv1.weight": torch.zeros(8, 3, 3, 3)}
    looped = tmp_path / "loop.pth"
    torch.save({"step": 1, "model": sd, "ema": sd, "opt": {}, "sched": {}}, looped)
    _expect(looped, "not a U-2-Net checkpoint")

    shapes = build_model("u2netp").state_dict()
    shapes["side1.weight"] = torch.zeros(2, 64, 3, 3)
    wrong = tmp_path / "wrong.pth"
    torch.save(shapes, wrong)
    _expect(wrong, "does not fit the u2netp architecture: side1.weight has shape")

    partial = build_model("u2netp").state_dict()
    del partial["outconv.weight"]
    part = tmp_path / "partial.pth"
    torch.save(partial, part)
    _expect(part, "1 tensor missing \\(e.g. outconv.weight\\)")

    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    _expect(bad_st, "not a readable safetensors")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64])
def test_weights_that_are_not_real_numbers_are_refused(tmp_path: Path, u2netp_state, dtype) -> None:
    """int or bool weights were cast and ran (a matte of 255 everywhere); complex ones
    lost their imaginary part behind torch's warning."""
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in u2netp_state.items()}, path
    )
    name = str(dtype).removeprefix("torch.")
    _expect(path, f"does not hold model weights: [a-z0-9_.]+ is {name}, expected float32")
    # every tensor made half, the BatchNorm counters too: still weights
    halved = tmp_path / "halved.pth"
    torch.save({k: v.half() for k, v in build_model("u2netp").state_dict().items()}, halved)
    assert W.load_weights(halved)[1].arch == "u2netp"


def test_files_of_other_kinds_say_what_they_are_without_torchs_warnings(
    tmp_path: Path, u2netp_state
) -> None:
    """A TorchScript archive, a pickle.dump file and a truncated zip were passed on in
    torch's words (advice to load with weights_only=False, miniz's paragraph, "Unsupported
    operand 149"), below torch's own warnings; a .pth named .safetensors was refused."""
    import pickle
    import warnings

    script = tmp_path / "script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's own
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(script))
    plain = tmp_path / "plain.pth"
    with plain.open("wb") as f:
        pickle.dump(dict(u2netp_state), f, protocol=4)
    full = tmp_path / "full.pth"
    torch.save(u2netp_state, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        _expect(script, "is a TorchScript archive, not a torch.save checkpoint; export")
        _expect(plain, "is a pickle of protocol 4 or 5, which vidmat's safe loader cannot read")
        with pytest.raises(WeightsError) as info:
            W.load_weights(cut)
    assert not [str(w.message) for w in heard]
    said = str(info.value)
    assert said.startswith(f"{cut} is damaged or not a PyTorch checkpoint (")
    assert "miniz" not in said and "If you are seeing" not in said and said.count(". ") == 0
    renamed = tmp_path / "u2netp.safetensors"
    renamed.write_bytes(full.read_bytes())
    model, spec = W.load_weights(renamed)
    assert spec.arch == "u2netp" and _same(model, u2netp_state)


def test_a_layer_of_the_wrong_rank_and_a_pipe_are_named_as_such(
    tmp_path: Path, u2netp_state
) -> None:
    flat = dict(u2netp_state)
    flat["stage2.rebnconvin.conv_s1.weight"] = torch.zeros(64, 16)
    path = tmp_path / "flat.pth"
    torch.save(flat, path)
    _expect(
        path, r"stage2.rebnconvin.conv_s1.weight has shape \(64, 16\), not that of a convolution"
    )
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)  # torch.load waited for a writer forever
    _expect(fifo, "is not a regular file")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("half", [False, True])
def test_non_finite_weights_are_refused_naming_the_tensor(
    tmp_path: Path, u2netp_state, bad: float, half: bool
) -> None:
    """They loaded silently and gave a garbage matte; fp16 files (as vidmat ships) too."""
    model = build_model("u2netp")
    model.load_state_dict(u2netp_state)
    with torch.no_grad():
        model.stage3.rebnconv2.conv_s1.weight[1, 2, 0, 1] = bad
    st = tmp_path / "damaged.safetensors"
    W.save_weights(model, W.WeightsSpec(name="d", arch="u2netp"), st, half=half)
    with pytest.raises(WeightsError) as info:
        W.load_weights(st)
    assert str(info.value) == (
        f"weights {st} hold non-finite values (NaN or inf) in stage3.rebnconv2.conv_s1.weight; "
        "the file is damaged."
    )

    state = dict(u2netp_state)
    state["outconv.bias"] = torch.tensor([bad])
    pth = tmp_path / "u2netp.pth"
    torch.save(state, pth)
    with pytest.raises(WeightsError, match=r"non-finite values \(NaN or inf\) in outconv\.bias;"):
        W.load_weights(pth)


def test_finite_weights_whose_sum_overflows_still_load(tmp_path: Path, u2netp_state) -> None:
    """The check sums each tensor first; a sum past float32's range alone is no NaN."""
    state = dict(u2netp_state)
    state["outconv.bias"] = torch.tensor([3e38])
    state["side1.bias"] = torch.tensor([3e38])
    state["stage1.rebnconvin.conv_s1.bias"] = torch.full_like(
        state["stage1.rebnconvin.conv_s1.bias"], 3e38
    )
    path = tmp_path / "big.pth"
    torch.save(state, path)
    model, _ = W.load_weights(path)
    assert float(model.state_dict()["outconv.bias"][0]) == pytest.approx(3e38)


def test_an_empty_weights_name_is_refused_not_taken_for_the_default() -> None:
    for empty in ("", "  "):
        with pytest.raises(WeightsError, match=r"^the weights name is empty; give a registered"):
            W.load_weights(empty)


def test_missing_names_and_folders(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="neither a registered name"):
        W.load_weights(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="is a folder"):
        W.load_weights(tmp_path)


def test_registered_weights_checksum_is_verified(tmp_path: Path, monkeypatch, u2netp_state) -> None:
    model = build_model("u2netp")
    spec = W.WeightsSpec(name="shipped", arch="u2netp", scale="255", file="shipped.safetensors")
    digest = W.save_weights(model, spec, tmp_path / "shipped.safetensors")
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(W.REGISTRY, "shipped", W.WeightsSpec(**{**spec.__dict__, "sha256": digest}))
    _, got = W.load_weights("shipped")
    assert got.name == "shipped" and got.sha256 == digest

    monkeypatch.setitem(
        W.REGISTRY, "shipped", W.WeightsSpec(**{**spec.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(WeightsError, match="fails its checksum"):
        W.load_weights("shipped")

    monkeypatch.setitem(
        W.REGISTRY, "gone", W.WeightsSpec(name="gone", arch="u2netp", file="gone.safetensors")
    )
    with pytest.raises(WeightsError, match="are missing"):
        W.load_weights("gone")


def test_a_file_loaded_by_path_is_named_by_its_stem(tmp_path: Path) -> None:
    """A spec keeps the name its file was written under (the shipped file says "H2"),
    which eval and bench reported for a renamed file; the file's own stem is what a
    user passed and sees."""
    spec = W.WeightsSpec(name="H2", arch="u2netp", scale="255", file="H2.safetensors")
    path = tmp_path / "person_v3.safetensors"
    W.save_weights(build_model("u2netp"), spec, path)
    _, got = W.load_weights(path)
    assert (got.name, got.file, got.input_size, got.scale) == (
        "person_v3",
        str(path),
        320,
        "255",
    )

    official = tmp_path / "my_finetune.pth"
    torch.save({"model": build_model("u2netp").state_dict()}, official)
    _, got = W.load_weights(official)
    assert (got.name, got.file, got.scale) == ("my_finetune", str(official), "max")


def test_the_registered_file_by_path_is_the_registered_weights(tmp_path: Path, monkeypatch) -> None:
    """``--weights weights/u2netp_person.safetensors`` reported "H2", the name inside the
    file; by path it is now the registered entry, named and checksummed as by its name."""
    inner = W.WeightsSpec(name="H2", arch="u2netp", scale="255", file="H2.safetensors")
    shipped = tmp_path / "shipped.safetensors"
    digest = W.save_weights(build_model("u2netp"), inner, shipped)
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path)
    registered = W.WeightsSpec(
        name="person", arch="u2netp", scale="255", file=shipped.name, sha256=digest
    )
    monkeypatch.setitem(W.REGISTRY, "person", registered)
    (tmp_path / "link.safetensors").symlink_to(shipped)
    (tmp_path / "sub").mkdir()
    roundabout = f"{tmp_path}/sub/../{shipped.name}"
    for given in ("person", shipped, roundabout, tmp_path / "link.safetensors"):
        _, got = W.load_weights(given)
        assert (got.name, got.file, got.sha256) == ("person", shipped.name, digest), given

    monkeypatch.setitem(W.REGISTRY, "person", replace(registered, sha256="0" * 64))
    with pytest.raises(WeightsError, match="fails its checksum"):
        W.load_weights(shipped)


def test_a_file_keeps_its_sized_heads_and_its_own_size(tmp_path: Path, u2netp_state) -> None:
    model = build_model("u2netp")
    model.load_state_dict(u2netp_state)
    torch.nn.init.normal_(model.add_sized_head(320).side1.weight)
    path = tmp_path / "heads.safetensors"
    W.save_weights(model, W.WeightsSpec(name="h", arch="u2netp", input_size=256), path)
    loaded, spec = W.load_weights(path)
    assert spec.input_size == 256 and loaded.head_size == 256
    assert list(loaded.sized_heads) == ["320"]
    assert _same(loaded, model.state_dict())
    x = torch.randn(1, 3, 320, 320)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model.eval()(x))

    state = dict(model.state_dict())
    state["sized_heads.big.side1.weight"] = state.pop("sized_heads.320.side1.weight")
    odd = tmp_path / "odd.pth"
    torch.save(state, odd)
    _expect(odd, "sized head whose name is not an input size")


@pytest.mark.parametrize(
    ("key", "value"),
    [("input_size", "abc"), ("input_size", 100), ("input_size", 4096), ("std", [1, 0, 1])],
)
def test_a_spec_the_engine_cannot_use_is_refused_on_load(
    tmp_path: Path, u2netp_state, key: str, value: object
) -> None:
    """A file's spec comes from its metadata; a size of 'abc' loaded and then failed in
    the engine as int()'s traceback, and 4096 as '--size 4096 is out of range'."""
    import json

    from safetensors.torch import save_file

    spec = json.loads(W.WeightsSpec(name="w", arch="u2netp").to_json())
    spec[key] = value
    path = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in u2netp_state.items()}
    save_file(state, str(path), metadata={"vidmat_spec": json.dumps(spec)})
    _expect(path, "has an unreadable vidmat spec")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_file_is_one_sentence(tmp_path: Path, u2netp_state) -> None:
    path = tmp_path / "u2netp.pth"
    torch.save(u2netp_state, path)
    path.chmod(0)
    _expect(path, "cannot be read \\(Permission denied\\)")


def test_a_spec_without_a_head_size_is_written_as_before_and_later_fields_are_read_past() -> None:
    """Every export carried "head_size": null, which the previous vidmat cannot read (its
    from_json passes every key on); a field a later vidmat adds is left aside here."""
    import json

    from vidmat.model.spec import WeightsSpec

    plain = WeightsSpec(name="a", arch="u2netp", input_size=256, scale="255")
    assert "head_size" not in json.loads(plain.to_json())
    headed = WeightsSpec(name="a", arch="u2netp", input_size=160, scale="255", head_size=256)
    assert json.loads(headed.to_json())["head_size"] == 256
    assert WeightsSpec.from_json(headed.to_json()).head_size == 256
    later = {**json.loads(plain.to_json()), "colour_space": "srgb"}
    assert WeightsSpec.from_json(json.dumps(later)) == plain


def test_the_weights_file_of_a_name_too_long_is_none(tmp_path: Path) -> None:
    """convert's guard asked for it after making the output folder, and the OSError left
    that folder behind; loading says why in its own sentence."""
    assert W.weights_file(tmp_path / ("w" * 300 + ".pth")) is None
