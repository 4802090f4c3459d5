"""The progress lines every trainer logs: totals with each epoch, the final validation announced."""
import importlib.util
import json

from nnunet_mt.training.progress import ProgressMixin, epoch_progress, validation_cases


def test_epoch_line_gives_totals_and_time_left():
    assert epoch_progress(2, 5, 20) == "epoch 3/5, step 60/100 (60 %)"
    assert epoch_progress(2, 5, 20, 12.0) == "epoch 3/5, step 60/100 (60 %), this epoch 12.0 s, about 24.0 s left"
    assert epoch_progress(299, 300, 250, 600.0).startswith("epoch 300/300, step 75000/75000 (100 %), this epoch 10 min 0 s")
    assert "left" not in epoch_progress(4, 5, 20, 3.0)
    assert epoch_progress(0, 300, 250, 600.0).endswith("about 49 h 50 min left")


def test_validation_cases_come_from_the_split_file(tmp_path):
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"]},
                                                            {"train": ["c"], "val": ["a", "b"]}]))
    assert validation_cases(str(tmp_path), 0) == ["c"]
    assert validation_cases(str(tmp_path), "1") == ["a", "b"]
    assert validation_cases(str(tmp_path), 7) is None  # nnU-Net then draws a random split itself
    assert validation_cases(str(tmp_path), "all") is None
    assert validation_cases(str(tmp_path / "missing"), 0) is None


class _Base:
    """Stands in for nnUNetTrainer: the hooks ProgressMixin wraps."""

    def __init__(self):
        self.logged, self.calls = [], []
        self.num_epochs, self.num_iterations_per_epoch, self.current_epoch = 5, 20, 0
        self.fold, self.output_folder, self.preprocessed_dataset_folder_base = 0, "/out", None

    def print_to_log_file(self, *args):
        self.logged.append(" ".join(map(str, args)))

    def on_train_start(self):
        self.calls.append("train_start")

    def on_epoch_start(self):
        self.calls.append("epoch_start")

    def on_epoch_end(self):
        self.calls.append("epoch_end")
        self.current_epoch += 1  # as nnU-Net does, after logging

    def perform_actual_validation(self, save_probabilities=False):
        self.calls.append("validation")

    def plot_network_architecture(self):
        self.calls.append("plot")


class _Trainer(ProgressMixin, _Base):
    loss_composition = "Ls + beta * Lc"
    rampup_length = 400
    log_name = "mean_teacher"


def test_mixin_logs_around_nnunets_hooks_and_skips_the_hiddenlayer_diagram():
    t = _Trainer()
    t.on_train_start()
    for _ in range(2):
        t.on_epoch_start()
        t.on_epoch_end()
    t.perform_actual_validation()
    t.plot_network_architecture()
    plotted = ["plot"] if importlib.util.find_spec("hiddenlayer") is not None else []
    assert t.calls == ["train_start", "epoch_start", "epoch_end", "epoch_start", "epoch_end", "validation", *plotted]
    text = "\n".join(t.logged)
    assert "training length: 5 epochs x 20 steps = 100 optimizer steps" in text
    assert "is L = Ls + beta * Lc; it rises while beta ramps up over the first 400 steps" in text
    assert "'mean teacher:' lines and in progress_mean_teacher.png" in text
    assert "epoch 1/5, step 20/100 (20 %)" in text and "epoch 2/5, step 40/100 (40 %)" in text
    assert "predicting the validation cases of fold 0" in text and "final validation done in" in text
