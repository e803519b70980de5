"""`vidmat train` refuses bad command lines in one sentence, before reading data or writing.

Every case here used to end in a traceback (or a run that failed much later, or
silently trained on nonsense); each must now exit 2 with the sentence on stderr and
leave no run folder, cache or file behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vidmat.cli import main


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, message: str | None
) -> str:
    """Run ``vidmat train argv``: exit 2, one line on stderr (``message`` where given),
    tmp_path unchanged; returns stderr."""
    before = sorted(tmp_path.rglob("*"))
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    if message is not None:
        assert err.strip() == f"vidmat: error: {message}"
    assert sorted(tmp_path.rglob("*")) == before  # no run folder, cache or probe left
    return err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An empty training root: every refusal here comes before its images are read."""
    root = tmp_path / "d"
    root.mkdir()
    return root


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "-1", "--lr must be a positive number."),
        ("--lr", "0", "--lr must be a positive number."),
        ("--lr", "nan", "--lr must be a positive number."),
        ("--weight-decay", "-1", "--weight-decay must be 0 or more."),
        ("--iou-weight", "-0.5", "--iou-weight must be 0 or more."),
        ("--val-every", "0", "--val-every must be at least 1 step."),
        ("--val-n", "0", "--val-n must be at least 1 image."),
        ("--ema", "2", "--ema must be at least 0 and below 1."),
        ("--ema", "1", "--ema must be at least 0 and below 1."),
        ("--ema", "-0.1", "--ema must be at least 0 and below 1."),
        ("--warmup", "-1", "--warmup must be 0 or more steps."),
        (
            "--cudnn-benchmark",
            None,
            "--cudnn-benchmark times cuDNN's algorithms on CUDA, and this run is on cpu; "
            "leave it out.",
        ),
        ("--ckpt-minutes", "-1", "--ckpt-minutes must be positive."),
        ("--ckpt-minutes", "0", "--ckpt-minutes must be positive."),
        ("--val-size", "33", "--val-size must be a multiple of 32 from 32 to 2048."),
        ("--val-size", "0", "--val-size must be a multiple of 32 from 32 to 2048."),
        ("--val-size", "4096", "--val-size must be a multiple of 32 from 32 to 2048."),
        ("--size", "4096", "--size and --mix-size must be multiples of 32 from 32 to 2048."),
        ("--threads", "0", "--threads must be at least 1."),
        ("--threads", "-1", "--threads must be at least 1."),
        ("--seed", "-1", "--seed must be between 0 and 4294967295."),
        ("--seed", "99999999999999999999", "--seed must be between 0 and 4294967295."),
        ("--device", "tpu", "unknown device 'tpu'; use auto, cpu, cuda or cuda:N."),
        (
            "--close-gaps",
            "vitn",
            "--close-gaps names vitn, which no --data folder is called (they are d); give "
            "folder names, or 'none'.",
        ),
    ],
)
def test_out_of_range_values_are_refused(
    tmp_path: Path,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str | None,
    message: str,
) -> None:
    argv = ["--data", str(data), "--run", str(tmp_path / "runs" / "r"), flag]
    _refused([*argv, value] if value is not None else argv, capsys, tmp_path, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_sentence(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", str(data), "--run", str(tmp_path / "r"), "--device", "cuda"]
    _refused(
        argv,
        capsys,
        tmp_path,
        "--device cuda was asked for but no CUDA GPU is usable here (torch reports none); "
        "use --device cpu.",
    )


def test_run_folder_that_is_a_file(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    argv = ["--data", str(data), "--run", str(afile)]
    _refused(argv, capsys, tmp_path, f"--run {afile} is a file, not a folder.")
    assert afile.read_text() == "keep me"


def test_run_folder_under_a_file(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = ["--data", str(data), "--run", str(afile / "r")]
    _refused(argv, capsys, tmp_path, f"--run {afile / 'r'} cannot be created: {afile} is a file.")


def test_cache_folder_under_a_file(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    run = tmp_path / "runs" / "r"
    argv = ["--data", str(data), "--run", str(run), "--cache", str(afile / "x")]
    _refused(argv, capsys, tmp_path, f"--cache {afile / 'x'} cannot be created: {afile} is a file.")


def test_default_cache_that_is_a_file(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs").mkdir()
    cache = tmp_path / "runs" / "cache"
    cache.write_text("")
    argv = ["--data", str(data), "--run", str(tmp_path / "runs" / "r")]
    _refused(
        argv,
        capsys,
        tmp_path,
        f"the data cache {cache} (default beside --run; see --cache) is a file, not a folder.",
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_run_folder_where_nothing_can_be_written(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(data), "--run", "/proc/vidmat-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("vidmat: error: --run /proc/vidmat-run cannot be created or written (")
    assert not Path("/proc/vidmat-run").exists()


def test_init_of_the_other_arch_names_the_right_one(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    init = tmp_path / "small.safetensors"
    spec = WeightsSpec(name="small", arch="u2netp", input_size=32, scale="255")
    save_weights(build_model("u2netp"), spec, init, half=True)
    argv = [
        "--data",
        str(data),
        "--run",
        str(tmp_path / "r"),
        "--arch",
        "u2net",
        "--init",
        str(init),
    ]
    _refused(
        argv,
        capsys,
        tmp_path,
        f"--init {init} holds u2netp weights, not u2net; pass --arch u2netp.",
    )


def test_resume_of_the_other_arch_names_the_right_one(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    run.mkdir()
    last = run / "last.pt"
    from vidmat.train.loop import CHECKPOINT_KEYS

    torch.save({**dict.fromkeys(CHECKPOINT_KEYS, 0), "step": 1, "config": {"arch": "u2netp"}}, last)
    argv = ["--data", str(data), "--run", str(run), "--arch", "u2net"]
    _refused(
        argv,
        capsys,
        tmp_path,
        f"checkpoint {last} is of a u2netp run, not u2net; pass --arch u2netp to resume it, "
        "or name another --run folder.",
    )


def test_resume_from_a_file_that_is_no_checkpoint(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("not a checkpoint")
    argv = ["--data", str(data), "--run", str(tmp_path / "r"), "--resume", str(bogus)]
    err = _refused(argv, capsys, tmp_path, None)
    assert err.startswith(f"vidmat: error: cannot read checkpoint {bogus} (")
    assert err.endswith("); it is not a vidmat training checkpoint.\n")


class _Marker:
    """Unpickled, it would write a file: the way a crafted checkpoint runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_a_crafted_checkpoint_runs_no_code_on_resume(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # torch.load(weights_only=False) ran the file's code (it printed PWNED) before the
    # traceback; the checkpoint is now read as tensors and plain values only.
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    torch.save({"step": 1, "x": _Marker(marker)}, evil)
    argv = ["--data", str(data), "--run", str(tmp_path / "r"), "--resume", str(evil)]
    _refused(
        argv,
        capsys,
        tmp_path,
        f"cannot read checkpoint {evil} (it holds Python objects other than tensors, which "
        "vidmat does not load: they could run code); it is not a vidmat training checkpoint.",
    )
    assert not marker.exists()


def test_resume_from_weights_is_one_sentence(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An official checkpoint (a state dict) as --resume was a KeyError traceback.
    from vidmat.model.u2net import build_model

    weights = tmp_path / "u2netp.pth"
    torch.save(build_model("u2netp").state_dict(), weights)
    argv = ["--data", str(data), "--run", str(tmp_path / "r"), "--resume", str(weights)]
    err = _refused(argv, capsys, tmp_path, None)
    assert err.startswith(f"vidmat: error: {weights} is not a vidmat training checkpoint (no ")
    assert "start from weights with --init" in err


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (
            ":abc",
            "{t}: 'abc' is not a number; after the root come WEIGHT[:COMPOSITE], e.g. {d}:1.0:0.5.",
        ),
        (
            ":1:abc",
            "{t}: 'abc' is not a number; after the root come WEIGHT[:COMPOSITE], e.g. {d}:1.0:0.5.",
        ),
        (":1:0.5:3", "{t} has 3 fields after the root; write ROOT[:WEIGHT[:COMPOSITE]]."),
    ],
)
def test_data_with_a_bad_weight_names_the_weight(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], suffix: str, message: str
) -> None:
    """SourceSpec keeps a non-number field as part of the path; the root still exists."""
    text = f"{data}{suffix}"
    argv = ["--data", text, "--run", str(tmp_path / "r")]
    _refused(argv, capsys, tmp_path, "--data " + message.format(t=text, d=data))


def test_data_with_an_infinite_weight(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", f"{data}:inf", "--run", str(tmp_path / "r")]
    _refused(argv, capsys, tmp_path, f"sampling weight of {data} must be a finite number.")


def test_data_root_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = ["--data", str(afile), "--run", str(tmp_path / "r")]
    _refused(
        argv,
        capsys,
        tmp_path,
        f"training root {afile} is a file, not a folder with images/ and masks/.",
    )


def test_val_and_background_folders_that_are_files(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    base = ["--data", str(data), "--run", str(tmp_path / "r")]
    _refused(
        [*base, "--val", str(afile)],
        capsys,
        tmp_path,
        f"validation root {afile} is a file, not a folder.",
    )
    _refused(
        [*base, "--backgrounds", str(afile)],
        capsys,
        tmp_path,
        f"background folder {afile} is a file, not a folder.",
    )


def test_write_samples_writes_what_training_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """--write-samples: --steps x --batch PNG pairs, pixel for pixel the batches a run of
    the same command line trains on; no --run needed, the cache beside DIR by default."""
    import cv2
    import numpy as np

    from vidmat.train.augment import AugmentConfig
    from vidmat.train.data import SourceSpec, load_source
    from vidmat.train.loop import batch_samples

    root = make_people(tmp_path / "people", n=4)
    out = tmp_path / "look" / "samples"
    argv = ["--data", f"{root}:1:0.5", "--size", "32"]
    argv += ["--batch", "3", "--steps", "2", "--seed", "7", "--no-progress"]
    argv += ["--shadow", "0.5", "--second-person", "0.5"]
    assert main(["train", *argv, "--write-samples", str(out)]) == 0
    assert "wrote 6 samples" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "look").iterdir()) == ["cache", "samples"]
    # training itself still needs its run folder
    assert main(["train", *argv]) == 2
    assert "--run DIR is required" in capsys.readouterr().err
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"{s:06d}_{k:03d}.png" for s in range(2) for k in range(3)]

    src = load_source(SourceSpec.parse(f"{root}:1:0.5"), tmp_path / "cache", progress=False)
    aug = AugmentConfig(shadow=0.5, second_person=0.5)
    for step in range(2):
        imgs, masks = batch_samples(7, step, 3, 32, [src], None, aug)
        for k in range(3):
            name = f"{step:06d}_{k:03d}.png"
            assert np.array_equal(cv2.imread(str(out / "images" / name))[:, :, ::-1], imgs[k])
            mask = cv2.imread(str(out / "masks" / name), cv2.IMREAD_GRAYSCALE)
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask, (masks[k, 0] * 255).astype(np.uint8))

    # an existing folder is refused, unchanged
    assert main(["train", *argv, "--write-samples", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert len(list((out / "images").iterdir())) == 6


def test_write_samples_that_cannot_be_written_leave_no_folder(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cv2.imwrite returns False on a full disk: one sentence, exit 2, no half folder."""
    import cv2

    root = make_people(tmp_path / "people")
    out = tmp_path / "samples"
    argv = ["--data", str(root), "--run", str(tmp_path / "run"), "--size", "32", "--batch", "2"]
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: False)
    assert main(["train", *argv, "--steps", "1", "--no-progress", "--write-samples", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == f"vidmat: error: could not write sample 000000_000.png to {out} (disk full?)."
    )
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".samples")] == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--data '' names no training root; write ROOT[:WEIGHT[:COMPOSITE]], e.g. {e}."),
        (":1", "--data ':1' names no training root; write ROOT[:WEIGHT[:COMPOSITE]], e.g. {e}."),
        ("{d}:", "--data '{d}:': the WEIGHT after ':' is empty; give a number, e.g. {d}:1.0{o}"),
        ("{d}::0.5", "--data '{d}::0.5': the WEIGHT after ':' is empty; give a number, e.g. {x}."),
        ("{d}:1:", "--data '{d}:1:': the COMPOSITE after ':' is empty; give a number, e.g. {x}{o}"),
    ],
)
def test_data_with_an_empty_root_or_field_names_it(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    """'' was read as the current folder, 'd:' as a missing folder named 'd:'."""
    text = value.format(d=data)
    e, o, x = "data/ccp:1.0:0.5", ", or leave out the last ':'.", f"{data}:1.0:0.5"
    expected = message.format(d=data, e=e, o=o, x=x)
    _refused(["--data", text, "--run", str(tmp_path / "r")], capsys, tmp_path, expected)


def test_training_refuses_a_mask_of_another_size_as_eval_does(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    tiny_weights: Path,
) -> None:
    """Training resized such a mask silently; eval refused it. Both now say the same, before
    anything is cached or written, for a training root and for a validation root."""
    import cv2
    import numpy as np

    bad = make_people(tmp_path / "bad")
    cv2.imwrite(str(bad / "masks" / "1.png"), np.zeros((10, 20), np.uint8))
    message = "mask 1.png is 20x10 px and its image 1.png 48x40 (width x height); they must match."
    base = ["--run", str(tmp_path / "run"), "--size", "32", "--batch", "2", "--steps", "1"]
    base += ["--no-progress", "--cache", str(tmp_path / "cache")]
    _refused(["--data", str(bad), *base], capsys, tmp_path, message)

    good = make_people(tmp_path / "good")
    assert main(["train", "--data", str(good), "--val", str(bad), *base]) == 2
    assert capsys.readouterr().err.strip() == f"vidmat: error: {message}"
    assert not (tmp_path / "run").exists()

    argv = ["eval", "--images", str(bad / "images"), "--masks", str(bad / "masks")]
    assert main([*argv, "--weights", str(tiny_weights), "--device", "cpu", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"vidmat: error: {message}"


def test_training_reads_0_1_label_masks_as_0_255_ones(
    tmp_path: Path, make_people: Callable[..., Path]
) -> None:
    """The training cache of a root with 0/1 masks is that of its 0/255 version, not empty."""
    import cv2
    import numpy as np

    from vidmat.train.data import SourceSpec, load_source

    full = make_people(tmp_path / "full")
    labels = make_people(tmp_path / "labels")
    for mask in (labels / "masks").iterdir():
        cv2.imwrite(str(mask), cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) // 255)
    a = load_source(SourceSpec(full), tmp_path / "cache", 48, progress=False)
    b = load_source(SourceSpec(labels), tmp_path / "cache", 48, progress=False)
    assert np.asarray(a.masks).max() == 255
    assert np.array_equal(np.asarray(a.masks), np.asarray(b.masks))


def test_the_closing_line_shows_no_placeholder_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """Trainer keeps -1 as the best score until a validation has run; that is no score."""
    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--size", "32", "--batch", "2", "--steps", "1"]
    argv += ["--no-progress"]
    assert main([*argv, "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"stopped at step 1; no validation (no --val); checkpoint {run / 'last.pt'}" in out
    assert "-1.0000" not in out

    validated = ["--run", str(tmp_path / "run2"), "--val", str(root), "--val-every", "1"]
    assert main([*argv, *validated]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1; best val mean IoU 0." in out and "-1.0000" not in out


def test_validation_images_that_are_training_images_are_pointed_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """../shared's val/viton repeats 193 of its 500 photographs from train/viton under
    other names: a fifth of what a run validated on was training data, and nothing said."""
    train = make_people(tmp_path / "train", n=3)
    val = make_people(tmp_path / "val", n=5)  # the maker's first three images, byte for byte
    for i in range(3):  # under other names, as in val/viton
        for sub in ("images", "masks"):
            (val / sub / f"{i}.png").rename(val / sub / f"v{i}.png")
    argv = ["train", "--data", str(train), "--val", str(val), "--run", str(tmp_path / "run")]
    argv += ["--size", "32", "--batch", "2", "--steps", "1", "--no-progress", "--val-n", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == (
        "vidmat: warning: 3 of the 5 images of --val val are also training images (1 of the "
        "2 validated on); their scores are not held out.\n"
    )
    other = make_people(tmp_path / "other", n=1)
    (other / "images" / "0.png").write_bytes((train / "images" / "0.png").read_bytes()[:-1] + b"x")
    argv = ["train", "--data", str(train), "--val", str(other), "--run", str(tmp_path / "r2")]
    assert main([*argv, "--size", "32", "--batch", "2", "--steps", "1", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("signame", "code", "word"),
    [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated"), ("SIGHUP", 129, "hung up")],
)
def test_a_signal_checkpoints_and_exits_as_the_other_commands_do(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    signame: str,
    code: int,
    word: str,
) -> None:
    """A real Ctrl-C (SIGINT), kill (SIGTERM) or closed terminal (SIGHUP) in the middle of
    a run: the step ends, last.pt and that step's EMA are written, and the command exits
    130 / 143 / 129 with one line (SIGINT and SIGTERM exited 0, as if complete; SIGHUP
    ended the process on the spot, losing the steps since the last checkpoint)."""
    import os
    import signal

    sig = getattr(signal, signame)

    from vidmat.train.loop import Trainer

    step = Trainer.train_step

    def interrupted_after_two(self: Trainer, batch: object = None) -> float:
        loss = step(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), sig)  # what Ctrl-C in a terminal, or kill, sends
        return loss

    monkeypatch.setattr(Trainer, "train_step", interrupted_after_two)
    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    handler = signal.getsignal(sig)
    argv = ["train", "--data", str(root), "--val", str(root), "--run", str(run)]
    argv += ["--size", "32", "--batch", "2", "--steps", "50", "--no-progress"]
    assert main(argv) == code
    captured = capsys.readouterr()
    # the one validation root is the training root, which is said first
    assert captured.err.strip().splitlines()[-1] == f"vidmat: {word}"
    assert f"stopped at step 2; no validation yet; checkpoint {run / 'last.pt'}" in captured.out
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 2
    assert (run / "ema_step2.safetensors").is_file()
    assert signal.getsignal(sig) is handler  # the command's handler is gone again


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_a_resume_that_has_nothing_to_train_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """It printed "stopped at step 5" for --steps 3 and rewrote the run's files. At
    --steps the run is done (exit 0); below it the command line asks for another run."""
    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--size", "32", "--batch", "2", "--no-progress"]
    argv += ["--run", str(run)]
    assert main([*argv, "--steps", "2"]) == 0
    capsys.readouterr()
    before = _files(run)
    last = run / "last.pt"

    assert main([*argv, "--steps", "2"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{last} is already at step 2 of --steps 2; nothing was trained (raise --steps to go on)."
    )
    _refused(
        [*argv[1:], "--steps", "1"],
        capsys,
        tmp_path,
        f"checkpoint {last} is already at step 2, past --steps 1, so nothing was trained; "
        "pass --steps above 2 to go on, or name another --run folder for a new run.",
    )
    assert _files(run) == before


def test_a_resume_under_other_settings_is_refused_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """Other batches under the run's name broke "exact resume" and rewrote config.json.
    What only sets how long, how fast or where the run goes may change, and so may the
    paths of the same folders (a run carried to a GPU machine, where they are .pack/...)."""
    import json
    import shutil

    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    last = run / "last.pt"
    base = ["--data", f"{root}:1:0.5", "--size", "32", "--batch", "2", "--no-progress"]
    base += ["--run", str(run)]
    full = [*base, "--val", str(root), "--backgrounds", str(root / "images")]
    assert main(["train", *full, "--steps", "1"]) == 0
    capsys.readouterr()
    before = _files(run)

    tail = (
        "; resume it with its settings, name another --run folder for a new run, or add "
        "--change-settings to go on with the new ones on purpose."
    )
    for argv, listed in [
        ([*full, "--size", "64", "--batch", "4"], "--size 32 (now 64) and --batch 2 (now 4)"),
        ([*base, "--backgrounds", str(root / "images")], "--val people (now none)"),
        ([*base, "--val", str(root)], "--backgrounds images (now none)"),
        (
            [*full, "--seed", "3", "--shadow", "0.5", "--lr", "0.002"],
            "--lr 0.001 (now 0.002), --shadow 0.0 (now 0.5) and --seed 0 (now 3)",
        ),
        (
            [*full, "--data", f"{root}:2:0.5"],
            "--data people:1.0:0.5 (now people:1.0:0.5,people:2.0:0.5)",
        ),
    ]:
        message = f"checkpoint {last} was trained with {listed}{tail}"
        _refused([*argv, "--steps", "2"], capsys, tmp_path, message)
    assert _files(run) == before

    moved = tmp_path / "elsewhere" / "people"
    shutil.copytree(root, moved)
    free = ["--data", f"{moved}:1:0.5", "--val", str(moved), "--backgrounds", str(moved / "images")]
    free += ["--size", "32", "--batch", "2", "--no-progress", "--run", str(run), "--steps", "2"]
    free += ["--threads", "1", "--workers", "0", "--minutes", "5", "--ckpt-minutes", "9"]
    free += ["--val-every", "7", "--device", "cpu", "--amp", "off", "--no-channels-last"]
    assert main(["train", *free]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {last} at step 1" in out and "stopped at step 2" in out

    assert main(["train", *full, "--steps", "3", "--size", "64", "--change-settings"]) == 0
    out = capsys.readouterr().out
    assert "changed on resume: --size 32 (now 64)\n" in out and "stopped at step 3" in out
    assert json.loads((run / "config.json").read_text())["size"] == 64
    assert torch.load(last, weights_only=False)["step"] == 3


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("when", ["starting", "delivering"])
def test_batch_workers_end_with_a_killed_trainer(
    tmp_path: Path, make_people: Callable[..., Path], when: str
) -> None:
    """kill -9 of `vidmat train --workers 2` left the workers and their forkserver behind
    for good (400 MB each), waiting on a server that never went away. Spawned workers are
    the trainer's own children and end within seconds of it, also when it is killed while
    they still import torch (they then took init for their parent and waited on it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = make_people(tmp_path / "people", n=4)
    argv = [sys.executable, "-m", "vidmat", "train", "--data", str(root)]
    argv += ["--run", str(tmp_path / "run"), "--size", "32", "--batch", "2"]
    argv += ["--steps", "100000", "--workers", "2", "--threads", "1", "--no-progress"]
    # The killed trainer cannot remove multiprocessing's pymp-* folder: it goes in here,
    # not in /tmp, where each run of the suite left two.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        log = tmp_path / "run" / "log.jsonl"
        # "starting": both workers exist, still importing torch (no batch yet);
        # "delivering": steps are logged.
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
            if when == "starting" and len(workers) == 2:
                break
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05 if when == "starting" else 0.2)
        workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, "the workers did not start"
        if when == "starting":  # no step yet: the workers have not delivered a batch
            assert not log.is_file() or len(log.read_text().splitlines()) < 3
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in workers:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running, not a zombie (a worker whose parent is gone is reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_eval_json_never_replaces_what_the_run_reads(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    tiny_weights: Path,
) -> None:
    """--json W.safetensors --overwrite left the weights holding the scores; --json on a
    mask made the next eval fail on it."""
    data = make_people(tmp_path / "data")
    argv = ["eval", "--images", str(data / "images"), "--masks", str(data / "masks")]
    argv += ["--weights", str(tiny_weights), "--device", "cpu", "--no-progress", "--overwrite"]
    weights = tiny_weights.read_bytes()
    mask = (data / "masks" / "1.png").read_bytes()
    assert main([*argv, "--json", str(tiny_weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"vidmat: error: the --json {tiny_weights} is the --weights file itself; choose another --json name."
    )
    assert main([*argv, "--json", str(data / "masks" / "1.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"vidmat: error: --json {data / 'masks' / '1.png'} is a file in the --masks folder "
        f"{data / 'masks'}, which this run reads; write the results elsewhere."
    )
    assert tiny_weights.read_bytes() == weights and (data / "masks" / "1.png").read_bytes() == mask
    out = data / "masks" / "scores.json"  # a new file beside them replaces nothing
    assert main([*argv, "--json", str(out)]) == 0 and out.exists()


def test_fresh_never_resumes_and_a_checkpoint_folder_is_named_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """--fresh --resume RUN/last.pt resumed and wrote over the last.pt --fresh promised to
    leave; --resume RUN said the folder "does not exist"."""
    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--no-progress", "--run", str(run)]
    assert main(["train", *argv, "--steps", "1"]) == 0
    capsys.readouterr()
    last = run / "last.pt"
    _refused(
        [*argv, "--steps", "2", "--fresh"],
        capsys,
        tmp_path,
        f"{last} exists; pick another --run folder for a fresh run.",
    )
    _refused(
        [*argv, "--steps", "2", "--fresh", "--resume", str(last)],
        capsys,
        tmp_path,
        "--fresh starts a run from nothing, --resume goes on with one; give one.",
    )
    _refused(
        [*argv, "--steps", "2", "--resume", str(run)],
        capsys,
        tmp_path,
        f"checkpoint {run} is a folder; name its last.pt (or another .pt).",
    )


def test_a_second_run_on_a_busy_run_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """Two `vidmat train` on one --run both trained from step 0 and wrote over each
    other's last.pt, log and exports, both ending 0."""
    from vidmat.io.files import folder_lock

    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--size", "32", "--batch", "2", "--no-progress"]
    argv += ["--run", str(run), "--steps", "1"]
    with folder_lock(run, "held by this test"):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == (
            f"vidmat: error: another vidmat train is running in {run} (it holds "
            f"{run / '.lock'}); let it finish or stop it, or name another --run folder."
        )
        assert not (run / "last.pt").exists()
    assert main(argv) == 0  # free again once the other has ended
    assert (run / "last.pt").exists()


def test_no_cache_or_run_folder_goes_into_the_data(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--cache DATA/images wrote 1.6 MB of .npy into the data root for 4 images; a run
    folder beside images/ and masks/ in the root is fine (`cd ds && --data . --run runs/a`)."""
    root = make_people(tmp_path / "people")
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--steps", "1", "--no-progress"]
    cache = root / "images" / "cache"
    _refused(
        [*argv, "--run", str(tmp_path / "run"), "--cache", str(cache)],
        capsys,
        tmp_path,
        f"--cache {cache} lies inside the --data folder {root / 'images'}, which training "
        "reads; name a folder outside it.",
    )
    run = root / "images" / "run"
    _refused(
        [*argv, "--run", str(run), "--cache", str(tmp_path / "c")],
        capsys,
        tmp_path,
        f"--run {run} lies inside the --data folder {root / 'images'}, which training reads; "
        "name a folder outside it.",
    )
    monkeypatch.chdir(root)
    local = ["--data", ".", *argv[2:], "--run", "runs/a"]
    assert main(["train", *local]) == 0
    assert (root / "runs" / "a" / "last.pt").exists() and (root / "runs" / "cache").is_dir()


def test_the_default_warmup_follows_a_new_runs_steps_and_a_resume_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """A fixed default of 100 left a run of 100 steps or fewer warming up to its end, the
    learning rate never at its peak nor decayed; a --warmup not below --steps did the same
    on purpose and is refused. Raising --steps on resume must not move the warm-up."""
    import json

    from vidmat.train.loop import TrainConfig, lr_at

    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--no-progress"]
    _refused(
        [*argv, "--run", str(run), "--steps", "20", "--warmup", "20"],
        capsys,
        tmp_path,
        "--warmup 20 is not below --steps 20: the learning rate would still be rising at the "
        "last step and never decay; give a shorter --warmup.",
    )
    assert main(["train", *argv, "--run", str(run), "--steps", "20"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["warmup"] == 2
    cfg = TrainConfig(sources=[], run_dir=run, steps=20, warmup=config["warmup"])
    assert lr_at(1, cfg) == 1.0 and lr_at(19, cfg) == pytest.approx(cfg.min_lr_ratio)

    capsys.readouterr()
    assert main(["train", *argv, "--run", str(run), "--steps", "22"]) == 0
    assert "changed on resume" not in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["warmup"] == 2


def test_a_run_or_cache_that_is_a_data_root_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """--run DATA (for --data DATA) wrote last.pt, config.json and the exports into the
    data's root, and --cache DATA its .npy files; a folder of their own inside it is fine."""
    root = make_people(tmp_path / "people")
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--steps", "1", "--no-progress"]
    _refused(
        [*argv, "--run", str(root)],
        capsys,
        tmp_path,
        f"--run {root} is the --data root {root}; name a folder of its own (beside its "
        "images/ and masks/ is fine).",
    )
    _refused(
        [*argv, "--run", str(tmp_path / "run"), "--cache", str(root)],
        capsys,
        tmp_path,
        f"--cache {root} is the --data root {root}; name a folder of its own (beside its "
        "images/ and masks/ is fine).",
    )
    assert main(["train", *argv, "--run", str(root / "run")]) == 0


def test_a_run_folder_with_another_runs_weights_and_no_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """Its last.pt deleted to save room, the folder's best.safetensors was replaced by a
    new run's worse one, its exports mixed with the new ones and its log cut short."""
    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--no-progress"]
    argv += ["--run", str(run)]
    assert main(["train", *argv, "--steps", "1"]) == 0
    (run / "last.pt").unlink()
    capsys.readouterr()
    _refused(
        [*argv, "--steps", "2"],
        capsys,
        tmp_path,
        f"--run {run} holds a run's weights (ema_step1.safetensors) but no last.pt to go "
        "on from; name another --run folder, or move them out first.",
    )
    other = tmp_path / "other"
    assert main(["train", *argv[:-2], "--run", str(other), "--steps", "1"]) == 0
    capsys.readouterr()
    _refused(
        [*argv, "--steps", "2", "--resume", str(other / "last.pt")],
        capsys,
        tmp_path,
        f"--run {run} holds a run's weights (ema_step1.safetensors) and --resume "
        f"{other / 'last.pt'} is another folder's checkpoint; name another --run folder, "
        "or move them out first.",
    )
    # a copy of the folder's own checkpoint goes on with its run
    (other / "last.pt").rename(other / "step1.pt")
    assert (
        main(
            [
                "train",
                *argv[:-2],
                "--run",
                str(other),
                "--steps",
                "2",
                "--resume",
                str(other / "step1.pt"),
            ]
        )
        == 0
    )


def test_heads_of_the_init_file_a_run_does_not_train_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    """The shipped file keeps a head per input size; trained at 64 px from it, the run
    trained its 192 head alone and exported the 256 and 320 ones as they were, fitted to
    the body before it, without a word."""
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    model = build_model("u2netp")
    model.head_size = 64
    model.add_sized_head(32)
    init = tmp_path / "two.safetensors"
    spec = WeightsSpec(name="two", arch="u2netp", input_size=64, scale="255", head_size=64)
    save_weights(model, spec, init, half=True)
    root = make_people(tmp_path / "people")
    argv = ["train", "--data", str(root), "--batch", "2", "--steps", "1", "--no-progress"]
    argv += ["--init", str(init)]
    assert main([*argv, "--size", "32", "--run", str(tmp_path / "a")]) == 0
    assert (
        capsys.readouterr().err.count(
            f"vidmat: warning: --init {init} has heads for input sizes 64 that a run at 32 px "
            "does not train;"
        )
        == 1
    )
    assert main([*argv, "--size", "32", "--mix-size", "64", "--run", str(tmp_path / "b")]) == 0
    assert "does not train" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--val-n", "5"],
            "--val-n counts images of each --val root; add --val ROOT, or leave it out.",
        ),
        (
            ["--anchor-weight", "5"],
            "--anchor-weight weighs the --anchor term; add --anchor FILE, or leave it out.",
        ),
        (
            ["--anchor-size", "96"],
            "--anchor-size is the side --anchor runs at; add --anchor FILE, or leave it out.",
        ),
    ],
)
def test_an_option_for_a_part_the_run_does_not_have_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_people: Callable[..., Path],
    extra: list[str],
    message: str,
) -> None:
    """They were taken and did nothing, and saved with the run they refused its resume
    without them ("--val-n 5 (now 50)")."""
    root = make_people(tmp_path / "people")
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--steps", "1", "--no-progress"]
    _refused([*argv, "--run", str(tmp_path / "run"), *extra], capsys, tmp_path, message)


def test_a_run_saved_with_an_unused_val_n_resumes_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    import json

    import torch

    root = make_people(tmp_path / "people")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--size", "32", "--batch", "2", "--no-progress"]
    argv += ["--run", str(run)]
    assert main([*argv, "--steps", "1"]) == 0
    ck = torch.load(run / "last.pt", weights_only=False)
    ck["config"]["val_n"] = 5  # as a run started with --val-n 5 and no --val saved it
    ck["config"]["anchor_weight"] = 5.0
    torch.save(ck, run / "last.pt")
    capsys.readouterr()
    assert main([*argv, "--steps", "2"]) == 0
    assert "changed on resume" not in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["val_n"] == 50


def test_write_samples_refuses_what_only_training_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_people: Callable[..., Path]
) -> None:
    root = make_people(tmp_path / "people")
    argv = ["--data", str(root), "--size", "32", "--batch", "2", "--steps", "1", "--no-progress"]
    argv += ["--write-samples", str(tmp_path / "s")]
    _refused(
        [*argv, "--minutes", "3"],
        capsys,
        tmp_path,
        "--write-samples writes samples and trains nothing; leave --minutes out.",
    )
    assert main(["train", *argv, "--warmup", "2"]) == 0  # nothing trains: no warm-up to check
