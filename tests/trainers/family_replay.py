"""Trains one tiny trainer of each family and prints what its final checkpoint holds, as digests.

usage: family_replay.py OUT.json [--runs N] [--start TRAINER=CHECKPOINT] [TRAINER ...]

Run in a subprocess whose ``nnUNet_results`` is private (each run deletes its trainer's output folder first)
and with ``nnUNet_n_proc_DA=0`` (in-process augmentation: seeded runs replay). Supervised trainers start from
their seeded initialisation; each semi-supervised one from the supervised trainer's checkpoint of the same run
(``-pretrained_weights``), or from the checkpoint ``--start`` gives for that supervised trainer. OUT.json maps each trainer to one digest dictionary per run: the sha256 of every
tensor of the final checkpoint's ``network_weights``, ``student_weights``, ``optimizer_state`` and
``semi_supervised`` state, and of its history, so that two runs, or two versions of the code, compare key by key.

``test_replay.py`` runs it; the same script run with ``PYTHONPATH=<an export of another commit>`` gives that
commit's digests (its ``nnunet_mt`` is then the one imported), which is how a refactoring shows that it
changed no number.
"""
import hashlib
import io
import json
import os
import shutil
import sys

#: trainer -> the trainer whose checkpoint it starts from (None: seeded initialisation)
FAMILIES = {
    "nnUNetTrainerDeepMedic_tiny": None,
    "nnUNetTrainerMeanTeacher_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerMeanTeacherReleasedGram_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerPiModel_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerDeepMedicPseudoLabel_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerDeepMedicEN_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerDeepMedicUDA_tiny": "nnUNetTrainerDeepMedic_tiny",
    "nnUNetTrainerUNet_tiny": None,
    "nnUNetTrainerMeanTeacherUNet_tiny": "nnUNetTrainerUNet_tiny",
}
DATASET = "901"


def _variant_start(name: str) -> str:
    """A mean-teacher variant (``nnUNetTrainerMeanTeacher<Variant>_tiny``) starts as its family's trainer does."""
    if name.startswith("nnUNetTrainerMeanTeacher") and not name.startswith("nnUNetTrainerMeanTeacherUNet"):
        return FAMILIES["nnUNetTrainerMeanTeacher_tiny"]
    raise SystemExit(f"{name}: not a trainer of {', '.join(FAMILIES)} or a mean-teacher variant")


def _sha(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:16]


def _flatten(prefix: str, value, out: dict) -> None:
    import torch

    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, torch.Tensor)) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}.{i}", v, out)
    else:
        out[prefix] = _sha(value) if isinstance(value, torch.Tensor) else json.dumps(value, default=str)[:200] \
            if not isinstance(value, (bytes, bytearray)) else hashlib.sha256(value).hexdigest()[:16]


def digest(checkpoint: dict) -> dict:
    out = {}
    for key in ("network_weights", "student_weights", "optimizer_state", "semi_supervised", "current_epoch"):
        if key in checkpoint:
            _flatten(key, checkpoint[key], out)
    return out


def train(trainer_name: str, pretrained: str | None) -> str:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    # the plugin's trainers read -pretrained_weights from the command line, as under nnUNetv2_train
    sys.argv = [sys.argv[0], *(["-pretrained_weights", pretrained] if pretrained else [])]
    trainer = get_trainer_from_args(DATASET, "3d_fullres", 0, trainer_name, device=torch.device("cpu"))
    shutil.rmtree(trainer.output_folder, ignore_errors=True)  # a replay starts afresh...
    os.makedirs(trainer.output_folder)  # ...and logs to the file the trainer has named
    maybe_load_checkpoint(trainer, False, False, pretrained)
    trainer.run_training()
    return os.path.join(trainer.output_folder, "checkpoint_final.pth")


def main(argv: list[str]) -> None:
    out, runs, names, given = argv[0], 1, argv[1:], {}
    while names[:1] in (["--runs"], ["--start"]):
        if names[0] == "--runs":
            runs = int(names[1])
        else:
            trainer, checkpoint = names[1].split("=", 1)
            given[trainer] = checkpoint
        names = names[2:]
    import nnunet_mt
    import torch

    # the trainers of the nnunet_mt that is imported (PYTHONPATH): with an editable install, a module missing
    # from an older export (nnunet_mt.utils before issue 30) would be found in the installed checkout instead
    os.environ["nnUNet_extTrainer"] = os.path.join(os.path.dirname(nnunet_mt.__file__), "trainers")

    names = names or list(FAMILIES)
    result = {name: [] for name in names}
    for _ in range(runs):
        finals = dict(given)
        for name in names:
            start = FAMILIES[name] if name in FAMILIES else _variant_start(name)
            if start is not None and start not in finals:
                finals[start] = train(start, None)
            finals[name] = train(name, finals.get(start))
            result[name].append(digest(torch.load(finals[name], map_location="cpu", weights_only=False)))
    result["_code"] = os.path.dirname(nnunet_mt.__file__)  # which nnunet_mt ran (PYTHONPATH)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
