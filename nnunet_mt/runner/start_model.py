"""``--start-model CHECKPOINT``: every method continues from a supervised DeepMedic the user already has,
instead of the runner's init (and ``--start-epochs``) stages.

The checkpoint must fit what the methods build: a DeepMedic whose every tensor has the shape the method's
trainer gives it for this dataset's input channels and classes (so a U-Net checkpoint, another dataset's
channel count or another width is refused, naming the first tensor that differs and what it means), trained
in the same configuration at the same spacing and normalisation as the derived dataset's plans. Its sha256
goes into ``manifest.json``, so a rerun that names another file is refused like any other changed setting.
A file with the network weights alone (``network_weights``, as ``-pretrained_weights`` reads it) is enough.
"""
from __future__ import annotations

import json
from pathlib import Path

from nnunet_mt.runner.layout import CONFIGURATION
from nnunet_mt.runner.source_dataset import ReproduceError, sha256_of


def load_start_model(path: Path, option: str = "--start-model") -> dict:
    """The checkpoint at ``path`` (a dict with ``network_weights``); a clear error for a missing, unreadable or
    truncated file, or one without network weights, naming the file after ``option`` (the option that gave it;
    empty: the file alone)."""
    import torch

    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if not path.is_file():
        raise ReproduceError(f"{named}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a damaged zip or pickle
        raise ReproduceError(f"{named}: cannot be read as a torch checkpoint "
                             f"({type(e).__name__}: {e}); is the file complete?") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ReproduceError(f"{named}: holds no 'network_weights' (not an nnU-Net checkpoint)")
    return checkpoint


def expected_shapes(trainer_class: type, channels: int, classes: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the DeepMedic that ``trainer_class`` builds for this data."""
    from nnunet_mt.architectures.deepmedic import DeepMedic

    network = DeepMedic(channels, classes, **getattr(trainer_class, "deepmedic_kwargs", {}))
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def check_weights(path: Path, checkpoint: dict, trainer_class: type, channels: int, classes: int) -> None:
    """The checkpoint's tensors are exactly those ``trainer_class``'s network has, shape for shape."""
    have = {k: tuple(v.shape) for k, v in checkpoint["network_weights"].items()}
    want = expected_shapes(trainer_class, channels, classes)
    made_by = checkpoint.get("trainer_name", "an unnamed trainer")
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise ReproduceError(
            f"--start-model {path}: not the DeepMedic that {trainer_class.__name__} builds (made by {made_by}; "
            f"{len(missing)} of its tensors missing, e.g. {(missing or ['-'])[0]}; {len(extra)} unexpected, e.g. "
            f"{(extra or ['-'])[0]})")
    for key, shape in want.items():
        if have[key] != shape:
            raise ReproduceError(f"--start-model {path} (made by {made_by}) does not fit {trainer_class.__name__}: "
                                 f"{key} has shape {list(have[key])}, expected {list(shape)}"
                                 f"{_meaning(key, have[key], shape)}")


def _meaning(key: str, have: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What a differing shape says about the data: the first convolution's input channels, the classifier's
    classes."""
    if key.endswith("layers.0.conv.weight") and have[1] != want[1]:
        return f": {have[1]} input channel(s) in the checkpoint, {want[1]} in this dataset"
    if key.startswith("classifier.conv") and have[0] != want[0]:
        return f": {have[0]} classes in the checkpoint, {want[0]} in this dataset"
    return " (another network width)"


def check_plans(path: Path, checkpoint: dict, plans_file: Path) -> None:
    """Same configuration, spacing and normalisation as the derived dataset's plans (when the checkpoint
    records its plans, as every nnU-Net checkpoint does)."""
    init_args = checkpoint.get("init_args") or {}
    if "plans" not in init_args:
        return
    if init_args.get("configuration", CONFIGURATION) != CONFIGURATION:
        raise ReproduceError(f"--start-model {path}: trained in configuration {init_args['configuration']!r}; "
                             f"the runner trains {CONFIGURATION!r}")
    theirs = init_args["plans"]["configurations"].get(CONFIGURATION, {})
    ours = json.loads(Path(plans_file).read_text())["configurations"][CONFIGURATION]
    for key in ("spacing", "normalization_schemes"):
        if key in theirs and _comparable(theirs[key]) != _comparable(ours[key]):
            raise ReproduceError(f"--start-model {path}: trained with {key} {theirs[key]}, the dataset's plans "
                                 f"({plans_file}) have {ours[key]}: it was trained on other data")


def _comparable(values: list) -> list:
    """Numbers rounded to 1e-6 (plans written on another machine may differ in the last digits), names as they are."""
    return [v if isinstance(v, str) else round(float(v), 6) for v in values]


#: what an exported model keeps of an nnU-Net checkpoint: enough for -pretrained_weights, --start-model and
#: the checks above; no optimizer state, no training history
EXPORTED_KEYS = ("network_weights", "trainer_name", "init_args", "current_epoch")


def export_weights(checkpoint: Path, out: Path) -> str:
    """Write the network weights of ``checkpoint`` (and what identifies them, ``EXPORTED_KEYS``) to ``out``,
    atomically; a few MB to commit where the checkpoint holds the optimizer state too. Returns its sha256."""
    import torch

    state = load_start_model(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({k: state[k] for k in EXPORTED_KEYS if k in state}, tmp)
    tmp.replace(out)
    return sha256_of(out)


def record(path: Path) -> dict:
    """What the manifest keeps of the start model: its name and sha256 (the path may differ between machines)."""
    return {"file": Path(path).name, "sha256": sha256_of(path)}


def check_start_model(path: Path, trainers: list[str], channels: int, classes: int) -> dict:
    """Load ``path`` and check it against every trainer that will start from it; the checkpoint."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_mt.utils.ext_trainer import trainers_dir

    checkpoint = load_start_model(path)
    for name in trainers:
        cls = recursive_find_python_class(trainers_dir(), name, "nnunet_mt.trainers")
        check_weights(path, checkpoint, cls, channels, classes)
    return checkpoint


def check_start_options(args, source) -> None:
    """``--start-model`` with the other options: it replaces the init stages (so their options are refused),
    every method must start from a DeepMedic, and the file must fit each method's network for this source."""
    from nnunet_mt.runner.methods import METHODS

    given = [f"--{k.replace('_', '-')}" for k in ("init_epochs", "init_lr", "start_epochs")
             if getattr(args, k, None) is not None]
    if given:
        raise ReproduceError(f"--start-model replaces the init and start stages: leave out {', '.join(given)}")
    not_deepmedic = [m for m in args.methods if METHODS[m][1] != "nnUNetTrainerDeepMedic"]
    if not_deepmedic:
        raise ReproduceError(f"--start-model holds a DeepMedic; {', '.join(not_deepmedic)} start(s) from another "
                             f"network: run them without --start-model")
    trainers = sorted({METHODS[m][0] + args.trainer_suffix for m in args.methods})
    check_start_model(args.start_model, trainers, source.num_channels, len(source.dataset_json["labels"]))


def main(argv: list[str] | None = None) -> None:
    """``python -m nnunet_mt.runner.start_model export CHECKPOINT OUT``: :func:`export_weights`."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m nnunet_mt.runner.start_model",
                                description="Export an nnU-Net checkpoint's network weights (no optimizer state).")
    p.add_argument("command", choices=["export"])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    try:
        digest = export_weights(args.checkpoint, args.out)
    except ReproduceError as e:
        sys.exit(f"error: {e}")
    print(f"{digest}  {args.out}")


if __name__ == "__main__":
    main()
