"""The progress lines every trainer logs: totals with each epoch, the final validation announced."""
import json

from nnunet_mt.training.progress import epoch_progress, training_length_lines, validation_cases


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


class _Trainer:
    """What ``training_length_lines`` reads of a trainer."""
    num_epochs, num_iterations_per_epoch, current_epoch = 5, 20, 0
    loss_composition = "Ls + beta * Lc"
    rampup_length = 400
    log_name = "mean_teacher"


def test_the_start_gives_the_length_and_explains_a_composite_loss():
    t = _Trainer()
    length, note = training_length_lines(t)
    assert length == "training length: 5 epochs x 20 steps = 100 optimizer steps"
    assert note == ("note: nnU-Net's train_loss (loss_tr in progress.png) is L = Ls + beta * Lc; it rises while beta "
                    "ramps up over the first 400 steps, also when the supervised loss Ls falls: that is not "
                    "divergence. Ls alone is in the per-epoch 'mean teacher:' lines and in progress_mean_teacher.png")
    t.loss_composition, t.current_epoch = None, 3
    assert training_length_lines(t) == ["training length: 5 epochs x 20 steps = 100 optimizer steps "
                                        "(resuming after epoch 3)"]
