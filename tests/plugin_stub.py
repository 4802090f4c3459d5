"""PluginTrainer without nnU-Net's set-up: nnU-Net's own hooks replaced, for one test, by recorders, so a test
sees in what order the plugin's steps and nnU-Net's calls happen (``tests/trainers/test_plugin_trainer.py``)."""
from __future__ import annotations

import torch
from torch import nn

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: nnUNetTrainer's methods PluginTrainer calls through ``super()``
NNUNET_HOOKS = ("initialize", "on_train_start", "on_epoch_start", "on_epoch_end", "perform_actual_validation",
                "on_train_end", "plot_network_architecture", "load_checkpoint")


def stub_nnunet(monkeypatch, calls: list) -> None:
    """Replace nnUNetTrainer's hooks (for the test) by recorders appending ``"nnU-Net <hook>"`` to ``calls``;
    ``on_epoch_end`` counts the epoch and ``save_checkpoint`` writes the network's weights, as nnU-Net's do."""
    def recorder(name):
        def hook(self, *args, **kwargs):
            calls.append(f"nnU-Net {name}")
            if name == "on_epoch_end":
                self.current_epoch += 1
        return hook

    for name in NNUNET_HOOKS:
        monkeypatch.setattr(nnUNetTrainer, name, recorder(name))

    def save_checkpoint(self, filename):
        calls.append("nnU-Net save_checkpoint")
        torch.save({"network_weights": self.network.state_dict()}, filename)

    monkeypatch.setattr(nnUNetTrainer, "save_checkpoint", save_checkpoint)


def bare(cls: type, out, calls: list | None = None, epochs: int = 5, iterations: int = 20):
    """An instance of ``cls`` (a PluginTrainer subclass) holding what the plugin's steps read, as nnU-Net's
    ``__init__`` and ``initialize`` leave it; its log lines are appended to ``calls`` as ``"log: <line>"``."""
    t = object.__new__(cls)
    t.logged = [] if calls is None else calls
    t.print_to_log_file = lambda *args, **kwargs: t.logged.append("log: " + " ".join(map(str, args)))
    t.output_folder, t.fold, t.preprocessed_dataset_folder_base = str(out), 0, None
    t.num_epochs, t.num_iterations_per_epoch, t.current_epoch = epochs, iterations, 0
    t.local_rank, t.is_ddp, t.device, t.disable_checkpointing = 0, False, torch.device("cpu"), False
    t.my_init_kwargs = {"configuration": "3d_fullres", "fold": 0}
    t.inference_allowed_mirroring_axes = None
    t.was_initialized, t.training_seed = True, 0
    t.network = nn.Linear(2, 1)
    return t
