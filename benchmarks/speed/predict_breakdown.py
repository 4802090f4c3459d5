"""Where ``nnUNetv2_predict -npp 0 -nps 0`` spends its time, and what it costs with a network that costs nothing.

Runs in one process what ``nnUNetv2_predict -f 0 -device cpu -npp 0 -nps 0`` runs (nnU-Net's own
``nnUNetPredictor``: ``initialize_from_trained_model_folder``, then ``predict_from_files_sequential``), with
timers around its stages and nothing changed in it:

* ``import_s``: importing torch and nnU-Net's predictor; ``init_s``: ``initialize_from_trained_model_folder``
  (reading the checkpoint, and ``recursive_find_trainer_class_by_name``, which imports every trainer
  module to find the checkpoint's trainer);
* ``s_per_case``: ``predict_from_files_sequential``'s time per case (preprocessing, prediction, export);
  per case, ``sliding_window_s``
  (``predict_logits_from_preprocessed_data``: padding into the window, the Gaussian tile weight, the
  float16 accumulation, and the network) and ``network_s`` (the network's forward alone, timed by
  forward hooks). The first case also pays for ``compute_gaussian`` over the window (cached for the rest);
* ``peak_rss_gb``: the process's peak resident memory.

With ``--zero-network`` the network is replaced by one without parameters that returns zeros of the right
shape at no cost: what is left is nnU-Net's floor for this model folder's window, the time no network can
save. The exported segmentations are then empty.

usage: python benchmarks/speed/predict_breakdown.py MODEL_FOLDER INPUT_FOLDER OUTPUT_FOLDER [--zero-network]
       [--disable-tta]
Prints one JSON object on the last line of stdout. nnUNet_* variables as for nnUNetv2_predict.
"""
from __future__ import annotations

import time

_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402


def _peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM): unlike getrusage's ru_maxrss, which Linux carries over
    from the parent across fork and exec, it starts anew with the program."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_folder")
    parser.add_argument("input_folder")
    parser.add_argument("output_folder")
    parser.add_argument("--zero-network", action="store_true",
                        help="replace the network by one that returns zeros at no cost (nnU-Net's floor)")
    parser.add_argument("--disable-tta", action="store_true", help="as nnUNetv2_predict --disable_tta")
    args = parser.parse_args(argv)

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from torch import nn

    imported = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)  # as nnUNetv2_predict -device cpu
    sliding: list[float] = []  # seconds of predict_logits_from_preprocessed_data, one call per case

    class TimedPredictor(nnUNetPredictor):
        def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
            start = time.perf_counter()
            try:
                return super().predict_logits_from_preprocessed_data(data)
            finally:
                sliding.append(time.perf_counter() - start)

    class ZeroLogits(nn.Module):
        """(B, C, *S) -> (B, K, *S) zeros; no parameters, so nnU-Net's load_state_dict({}) succeeds."""

        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.num_classes = num_classes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros((x.shape[0], self.num_classes, *x.shape[2:]))

    os.makedirs(args.output_folder, exist_ok=True)  # as nnUNetv2_predict does
    predictor = TimedPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.disable_tta,
                               perform_everything_on_device=True, device=torch.device("cpu"), verbose=False,
                               verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args.model_folder, (0,), checkpoint_name="checkpoint_final.pth")
    initialised = time.perf_counter()
    if args.zero_network:
        predictor.network = ZeroLogits(predictor.label_manager.num_segmentation_heads)
        predictor.list_of_parameters = [predictor.network.state_dict()]
    calls: list[float] = []  # seconds of each network forward: -start, then + end
    predictor.network.register_forward_pre_hook(lambda *_: calls.append(-time.perf_counter()))
    predictor.network.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + time.perf_counter()))

    start = time.perf_counter()
    predictor.predict_from_files_sequential(args.input_folder, args.output_folder, save_probabilities=False,
                                            overwrite=True)
    end = time.perf_counter()
    n = len(sliding)
    if n == 0:
        raise SystemExit(f"no case predicted from {args.input_folder}")
    # every case makes the same number of forward calls (one tile; 8 with mirroring)
    per_case = len(calls) // n
    per_case_network = [sum(calls[i * per_case:(i + 1) * per_case]) for i in range(n)]
    result = {
        "peak_rss_gb": _peak_rss_gb(),
        "model_folder": args.model_folder, "zero_network": args.zero_network, "cases": n,
        "window": list(predictor.configuration_manager.patch_size),
        "import_s": imported - _START, "init_s": initialised - imported,
        "predict_s": end - start, "s_per_case": (end - start) / n,
        "sliding_window_s": sliding, "network_s": per_case_network,
        "first_case_sliding_window_s": sliding[0],
        "mean_outside_network_s": (end - start - sum(per_case_network)) / n,
        "mean_outside_sliding_window_s": (end - start - sum(sliding)) / n,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
