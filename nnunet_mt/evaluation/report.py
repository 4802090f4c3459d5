"""The reproduction's report: Dice tables, paired tests, box plots and Figs. 2-3 of Cui et al., IPMI 2019.

``write_report`` takes, for each number of annotated training scans ("count"), the test-set metrics of
every method (``metrics.evaluate_cases``) and writes:

- ``table_dice.md`` / ``.csv``: the paper's Tables 2-3 (Dice mean ± std per method and count, best mean
  in bold, ``*`` where a paired t-test against the reference method gives p < 0.05);
- ``per_case_metrics.csv``, ``statistics.csv`` / ``.md``: every number behind the tables;
- ``boxplot_dice_n{count}.png``: per-case Dice per method;
- ``fig2_training_dice_n{count}.png``: training Dice of student and teacher vs step (the paper's Fig. 2);
- ``fig3_overlays_n{count}.png``: segmentations of a small and a large lesion (the paper's Fig. 3);
- ``report.md`` tying them together.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_mt.evaluation.metrics import METRIC_KEYS
from nnunet_mt.evaluation.statistics import COMPARISON_KEYS, mean_std, paired_comparison
from nnunet_mt.utils.atomic import write_csv

#: metrics compared between methods in statistics.csv / report.md
COMPARED_METRICS = ("dice", "hd95_mm", "avd_ml", "lesion_f1")
METRIC_NAMES = {"dice": "Dice", "hd95_mm": "HD95 (mm)", "avd_ml": "absolute volume difference (mL)",
                "lesion_f1": "lesion-wise F1"}
#: the paper marks differences from the mean teacher at p < 0.05 (paired t-test)
SIGNIFICANCE_LEVEL = 0.05
#: colour of the segmentation overlays in Fig. 3: pure red stands out of a grey-scale image
OVERLAY_RGB = (1.0, 0.0, 0.0)
#: the ground truth's outline on every method's panel, so misses and false positives show at a glance
REFERENCE_RGB = (0.2, 1.0, 0.2)
REFERENCE_COLOR = "tab:red"
OTHER_COLOR = "tab:blue"
DPI = 150


@dataclass
class CountResult:
    """Test-set results of all methods trained with ``count`` annotated scans."""

    count: int                                   # annotated training scans
    images: dict[str, Path]                      # test case -> image file of channel 0 (for overlays)
    references: dict[str, Path]                  # test case -> reference label file
    predictions: dict[str, dict[str, Path]]      # method -> test case -> predicted label file
    metrics: dict[str, dict[str, dict[str, float]]]  # method -> case -> case_metrics(...) dict
    training_logs: dict[str, Path] = field(default_factory=dict)  # method -> mean_teacher_log.json


# ---- numbers ------------------------------------------------------------------------------------------
def _cases(result: CountResult, reference_method: str) -> list[str]:
    return sorted(result.metrics[reference_method])


def _values(result: CountResult, method: str, metric: str, cases: list[str]) -> list[float]:
    return [float(result.metrics[method][c].get(metric, math.nan)) for c in cases]


def common_cases(result: CountResult, methods: list[str], metric: str, cases: list[str]) -> list[str]:
    """The cases where ``metric`` is defined (not NaN) for every method: the cases every row averages.

    A NaN is a case the metric cannot score for that method (Dice: reference and prediction both empty;
    HD95: either empty, e.g. a missed lesion). Dropping it for that method alone would let rows count
    different cases and flatter a method that predicts nothing where it fails; dropping it for all keeps
    the rows comparable, and the misses are counted beside HD95 (:func:`metric_summary`)."""
    return [c for c in cases
            if not any(math.isnan(float(result.metrics[m][c].get(metric, math.nan))) for m in methods)]


def metric_summary(result: CountResult, methods: list[str], reference_method: str, metric: str) -> list[dict]:
    """Per method: mean, sample std and n of ``metric`` over :func:`common_cases`, and ``missed``, the test
    cases (all of them) whose lesion the method's prediction missed entirely (no predicted voxel)."""
    cases = _cases(result, reference_method)
    common = common_cases(result, methods, metric, cases)
    rows = []
    for m in methods:
        mean, std, n = mean_std(_values(result, m, metric, common))
        missed = sum(1 for v in _values(result, m, "missed", cases) if v == 1)
        rows.append({"count": result.count, "method": m, "metric": metric, "mean": mean, "std": std, "n": n,
                     "missed": missed})
    return rows


def validate_results(results: list[CountResult], methods: list[str], reference_method: str) -> None:
    """Every count has metrics of every method on the same cases; counts are unique."""
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be a non-empty list without repeats, got {methods}")
    if reference_method not in methods:
        raise ValueError(f"reference method {reference_method!r} is not among the methods {methods}")
    counts = [r.count for r in results]
    if len(set(counts)) != len(counts):
        raise ValueError(f"each count may appear once, got counts {counts}")
    for r in results:
        for m in methods:
            if m not in r.metrics:
                raise ValueError(f"count {r.count}: no metrics for method {m!r} (have {sorted(r.metrics)})")
        ref_cases = set(r.metrics[reference_method])
        for m in methods:
            if set(r.metrics[m]) != ref_cases:
                raise ValueError(f"count {r.count}: method {m!r} was evaluated on other cases than "
                                 f"{reference_method!r}: missing {sorted(ref_cases - set(r.metrics[m]))}, "
                                 f"extra {sorted(set(r.metrics[m]) - ref_cases)}")


def dice_summary(results: list[CountResult], methods: list[str], reference_method: str) -> list[dict]:
    """Rows of Tables 2-3: Dice mean and sample std (ddof=1) over the test cases per count and method,
    paired t-test / Wilcoxon p of the method vs the reference method, and whether it has the best mean.

    Every row averages the same cases (:func:`common_cases`): a case whose Dice is NaN for some method
    (reference and its prediction both empty) is left out of every row.
    """
    rows = []
    for r in results:
        cases = common_cases(r, methods, "dice", _cases(r, reference_method))
        ref_dice = _values(r, reference_method, "dice", cases)
        block = []
        for m in methods:
            dice = _values(r, m, "dice", cases)
            mean, std, n = mean_std(dice)
            test = None if m == reference_method else paired_comparison(ref_dice, dice)
            block.append({"count": r.count, "method": m, "n_cases": n, "dice_mean": mean, "dice_std": std,
                          "p_ttest_vs_reference": math.nan if test is None else test["p_t"],
                          "p_wilcoxon_vs_reference": math.nan if test is None else test["p_w"]})
        means = [b["dice_mean"] for b in block if not math.isnan(b["dice_mean"])]
        for b in block:
            b["best"] = bool(means) and b["dice_mean"] == max(means)
        rows.extend(block)
    return rows


def significant(p: float) -> bool:
    """The paper's asterisk: paired t-test p < 0.05."""
    return not math.isnan(p) and p < SIGNIFICANCE_LEVEL


def statistics_rows(results: list[CountResult], methods: list[str], reference_method: str) -> list[dict]:
    """``paired_comparison`` of each method against the reference, per count and compared metric."""
    rows = []
    for r in results:
        for m in methods:
            if m == reference_method:
                continue
            for metric in COMPARED_METRICS:
                cases = common_cases(r, methods, metric, _cases(r, reference_method))  # the table's cases
                test = paired_comparison(_values(r, reference_method, metric, cases), _values(r, m, metric, cases))
                rows.append({"count": r.count, "method": m, "reference_method": reference_method, "metric": metric,
                             **test})
    return rows


# ---- text -----------------------------------------------------------------------------------------------
def _fmt(x: float, spec: str = ".4f") -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def dice_table_markdown(summary: list[dict], methods: list[str], counts: list[int]) -> str:
    """Tables 2-3 as Markdown: "mean ± std", best mean per column bold, ``\\*`` when p_t < 0.05."""
    by_key = {(s["count"], s["method"]): s for s in summary}
    rows = []
    for m in methods:
        cells = []
        for c in counts:
            s = by_key[(c, m)]
            cell = f"{_fmt(s['dice_mean'])} ± {_fmt(s['dice_std'])}"
            if s["best"]:
                cell = f"**{cell}**"
            if significant(s["p_ttest_vs_reference"]):
                cell += "\\*"  # escaped: a bare * next to ** would be read as emphasis
            cells.append(cell)
        rows.append([m, *cells])
    return _md_table(["Method", *[f"{c} annotated" for c in counts]], rows)


def _conventions(reference_method: str) -> str:
    return (f"Cells: mean ± sample standard deviation (ddof = 1) of the lesion Dice over the test cases. "
            f"A prediction that misses a lesion entirely scores Dice 0; a case where reference and some "
            f"method's prediction are both empty has no Dice and is left out of every row, so every method is "
            f"averaged over the same cases. "
            f"**Bold**: best mean in the column. \\*: paired Student's t-test against {reference_method} on the "
            f"same test cases gives p < {SIGNIFICANCE_LEVEL} (two-sided, scipy.stats.ttest_rel), as in Tables 2-3 "
            f"of Cui et al. (IPMI 2019); never shown on the {reference_method} row.")


def statistics_markdown(stats: list[dict], reference_method: str) -> str:
    """statistics.csv as Markdown, one table per count; t-test and Wilcoxon p side by side."""
    parts = [f"Paired tests of each method against {reference_method} on the same test cases "
             f"(two-sided; difference = {reference_method} − method; pairs with a NaN value are dropped; "
             f"both p = 1 when all differences are zero)."]
    for count in sorted({s["count"] for s in stats}):
        rows = [[METRIC_NAMES[s["metric"]], s["method"], str(s["n"]), _fmt(s["mean_reference"]),
                 _fmt(s["mean_other"]), _fmt(s["mean_difference"]), _fmt(s["t"], ".3f"), _fmt(s["p_t"], ".4g"),
                 _fmt(s["w"], ".1f"), _fmt(s["p_w"], ".4g")]
                for s in stats if s["count"] == count]
        parts.append(f"### {count} annotated training scans\n\n" + _md_table(
            ["Metric", "Method", "n", f"mean {reference_method}", "mean method", "difference", "t",
             "p (t-test)", "W", "p (Wilcoxon)"], rows))
    return "\n\n".join(parts) + "\n"


# ---- figures --------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def _figure_context(plt):
    """nnU-Net's logger sets a large seaborn font scale globally; draw in matplotlib's defaults."""
    with plt.style.context("default"), plt.rc_context({"font.size": 10}):
        yield


def plot_dice_boxplot(result: CountResult, methods: list[str], reference_method: str, path: Path) -> Path:
    """Box plot of the per-case Dice of each method with the cases as points; the reference is highlighted."""
    plt = _pyplot()
    cases = _cases(result, reference_method)
    data = [np.array([v for v in _values(result, m, "dice", cases) if not math.isnan(v)]) for m in methods]
    with _figure_context(plt):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(methods) + 2), 4.5), layout="constrained")
        positions = np.arange(1, len(methods) + 1)
        boxes = ax.boxplot([d if d.size else [np.nan] for d in data], positions=positions, widths=0.5,
                           patch_artist=True, showfliers=False, medianprops={"color": "black"})
        # the same small offsets in every box, so a case is easy to follow from method to method
        jitter = np.linspace(-0.12, 0.12, len(cases)) if len(cases) > 1 else np.zeros(1)
        for i, (m, d) in enumerate(zip(methods, data)):
            color = REFERENCE_COLOR if m == reference_method else OTHER_COLOR
            boxes["boxes"][i].set(facecolor=color, alpha=0.25, edgecolor=color)
            values = _values(result, m, "dice", cases)
            x = [positions[i] + jitter[j] for j, v in enumerate(values) if not math.isnan(v)]
            ax.scatter(x, d, s=22, color=color, edgecolor="black", linewidth=0.5, zorder=3)
        ax.set_xticks(positions, methods)
        for label in ax.get_xticklabels():
            if label.get_text() == reference_method:
                label.set_fontweight("bold")
        ax.set_xlabel("method (reference in red, bold)")
        ax.set_ylabel("lesion Dice per test case")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"Test-set Dice, {result.count} annotated training scans ({len(cases)} test cases)")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


def read_training_log(path: Path) -> dict[str, list]:
    """A ``<method>_log.json`` of the semi-supervised trainers: needs ``dice_step`` and ``dice_<model>`` lists."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: training log not found")
    log = json.loads(path.read_text())
    curves = [k for k in log if k.startswith("dice_") and k != "dice_step"]
    if "dice_step" not in log or not curves:
        raise ValueError(f"{path}: a training log needs 'dice_step' and 'dice_student'/'dice_teacher' lists, "
                         f"has keys {sorted(log)}")
    for k in curves:
        if len(log[k]) != len(log["dice_step"]):
            raise ValueError(f"{path}: {k} has {len(log[k])} entries but dice_step has {len(log['dice_step'])}")
    return log


def plot_training_dice(logs: dict[str, Path], count: int, path: Path) -> Path:
    """The paper's Fig. 2: mean training Dice of student and teacher vs optimizer step, one panel per method."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    colors = {"dice_student": "tab:blue", "dice_teacher": "tab:red"}
    with _figure_context(plt):
        fig, axes = plt.subplots(1, len(logs), figsize=(6.5 * len(logs), 4.5), squeeze=False, sharey=True,
                                 layout="constrained")
        for ax, (method, log_file) in zip(axes[0], logs.items()):
            log = read_training_log(log_file)
            for key in sorted(k for k in log if k.startswith("dice_") and k != "dice_step"):
                ax.plot(log["dice_step"], log[key], "o-", ms=3, color=colors.get(key), label=key[len("dice_"):])
            ax.set_title(method)
            ax.set_xlabel("training step (optimizer iterations)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        axes[0][0].set_ylabel("mean training Dice (annotated patches)")
        fig.suptitle(f"Training Dice of student and teacher, {count} annotated training scans (cf. Fig. 2)")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


def choose_overlay_cases(lesion_ml: dict[str, float]) -> list[str]:
    """Fig. 3's subjects: the cases with the smallest and the largest reference lesion volume among those
    with a lesion (one case if only one has a lesion, none if none has)."""
    with_lesion = sorted((v, c) for c, v in lesion_ml.items() if v > 0)
    if not with_lesion:
        return []
    small, large = with_lesion[0][1], with_lesion[-1][1]
    return [small] if small == large else [small, large]


def _read_array(path: Path):
    import SimpleITK as sitk

    if not Path(path).is_file():
        raise ValueError(f"{path}: file not found")
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def _gray_window(image: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile of the non-zero (brain) voxels, so the skull-stripped background does not
    squeeze the brain's contrast."""
    values = image[image != 0]
    values = values if values.size else image.ravel()
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), (float(hi) if hi > lo else float(lo) + 1.0)  # a flat image still needs vmin < vmax


def _crop_box(image: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """In-plane bounding box of the non-zero voxels of the whole volume (the head), plus a margin."""
    nonzero = np.argwhere(np.any(image != 0, axis=0))
    if nonzero.size == 0:
        return slice(None), slice(None)
    lo = np.maximum(nonzero.min(0) - margin, 0)
    hi = np.minimum(nonzero.max(0) + margin + 1, image.shape[1:])
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _show_panel(ax, image_slice: np.ndarray, mask: np.ndarray, window: tuple[float, float], aspect: float,
                reference: np.ndarray | None = None) -> None:
    ax.imshow(image_slice, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    rgba = np.zeros((*mask.shape, 4))
    rgba[mask] = (*OVERLAY_RGB, 0.4)
    ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    # a contour of a constant mask is undefined (matplotlib warns)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[OVERLAY_RGB], linewidths=1.2)
    if reference is not None and reference.any() and not reference.all():
        ax.contour(reference.astype(float), levels=[0.5], colors=[REFERENCE_RGB], linewidths=1.0, linestyles="--")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_overlays(result: CountResult, methods: list[str], path: Path, label: int = 1) -> Path | None:
    """The paper's Fig. 3: the axial slice with the largest reference lesion area of a small- and a
    large-lesion test subject, ground truth and every method's segmentation over the channel-0 image.

    Returns None (and writes nothing) when no test case with an image and predictions of every method has
    a reference lesion.
    """
    plt = _pyplot()
    usable = [c for c in sorted(result.references) if c in result.images
              and all(c in result.predictions.get(m, {}) for m in methods)]
    refs, lesion_ml = {}, {}
    for c in usable:
        ref, spacing = _read_array(result.references[c])
        refs[c] = (ref == label, spacing)
        lesion_ml[c] = float(refs[c][0].sum()) * math.prod(spacing) / 1000.0
    chosen = choose_overlay_cases(lesion_ml)
    if not chosen:
        return None
    with _figure_context(plt):
        fig, axes = plt.subplots(len(chosen), 1 + len(methods), figsize=(2.7 * (1 + len(methods)), 3.0 * len(chosen)),
                                 squeeze=False, layout="constrained")
        for row, case in enumerate(chosen):
            ref_mask, spacing = refs[case]
            image, _ = _read_array(result.images[case])
            if image.shape != ref_mask.shape:
                raise ValueError(f"{result.images[case]}: image shape {image.shape} differs from the reference "
                                 f"{result.references[case]}: {ref_mask.shape}")
            z = int(np.argmax(ref_mask.sum(axis=(1, 2))))  # slice with the largest lesion area
            window, (ys, xs) = _gray_window(image), _crop_box(image)
            aspect = spacing[1] / spacing[2]  # pixel height / width in mm
            panels = [("Ground truth", ref_mask, None)]
            for m in methods:
                pred, _ = _read_array(result.predictions[m][case])
                if pred.shape != ref_mask.shape:
                    raise ValueError(f"{result.predictions[m][case]}: prediction shape {pred.shape} differs from "
                                     f"the reference {result.references[case]}: {ref_mask.shape}")
                panels.append((m, pred == label, result.metrics.get(m, {}).get(case, {}).get("dice", math.nan)))
            for col, (name, mask, dice) in enumerate(panels):
                ax = axes[row][col]
                _show_panel(ax, image[z][ys, xs], mask[z][ys, xs], window, aspect,
                            reference=None if col == 0 else ref_mask[z][ys, xs])
                head = name if row == 0 else ""
                tail = "" if dice is None else f"Dice {_fmt(dice, '.3f')}"
                ax.set_title("\n".join(t for t in (head, tail) if t) or " ", fontsize=10)
            axes[row][0].set_ylabel(f"{case}\nlesion {lesion_ml[case]:.2f} mL\naxial slice z = {z}", fontsize=10)
        fig.suptitle(f"Segmentations of a small and a large lesion, {result.count} annotated training scans "
                     f"(cf. Fig. 3)\nred = segmentation, dashed green = ground truth outline, "
                     f"Dice over the whole 3D case", fontsize=11)
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
    return path


# ---- the report -----------------------------------------------------------------------------------------
def write_report(out_dir: Path, results: list[CountResult], methods: list[str], reference_method: str = "MeanTeacher",
                 title: str = "Semi-supervised lesion segmentation with a mean teacher: reproduction",
                 notes: str = "", label: int = 1) -> dict[str, Path]:
    """Write tables, statistics, figures and ``report.md`` into ``out_dir``; returns file name -> path.

    ``methods`` fixes the row order; ``reference_method`` is the method every other one is tested against
    (the mean teacher in the paper); ``label`` is the lesion label drawn in the overlays.
    """
    validate_results(results, methods, reference_method)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: r.count)
    counts = [r.count for r in results]
    files: dict[str, Path] = {}

    summary = dice_summary(results, methods, reference_method)
    dice_md = dice_table_markdown(summary, methods, counts)
    files["table_dice.md"] = out_dir / "table_dice.md"
    files["table_dice.md"].write_text(dice_md + "\n\n" + _conventions(reference_method) + "\n")
    files["table_dice.csv"] = write_csv(out_dir / "table_dice.csv", summary,
                                        ["count", "method", "n_cases", "dice_mean", "dice_std",
                                         "p_ttest_vs_reference", "p_wilcoxon_vs_reference", "best"])

    per_case = []
    metric_keys = list(METRIC_KEYS)
    for r in results:
        for m in methods:
            for case in _cases(r, reference_method):
                values = r.metrics[m][case]
                metric_keys += [k for k in values if k not in metric_keys]
                per_case.append({"count": r.count, "method": m, "case": case, **values})
    files["per_case_metrics.csv"] = write_csv(out_dir / "per_case_metrics.csv", per_case,
                                               ["count", "method", "case", *metric_keys])

    stats = statistics_rows(results, methods, reference_method)
    files["statistics.csv"] = write_csv(out_dir / "statistics.csv", stats,
                                        ["count", "method", "reference_method", "metric", *COMPARISON_KEYS])
    files["statistics.md"] = out_dir / "statistics.md"
    files["statistics.md"].write_text(statistics_markdown(stats, reference_method))

    figure_lines = []
    for r in results:
        figure_lines.append(f"### {r.count} annotated training scans")
        name = f"boxplot_dice_n{r.count}.png"
        files[name] = plot_dice_boxplot(r, methods, reference_method, out_dir / name)
        figure_lines.append(f"Per-case test Dice: ![Dice box plot, {r.count} annotated]({name})")
        name = f"fig2_training_dice_n{r.count}.png"
        logs = {m: r.training_logs[m] for m in [*methods, *r.training_logs] if m in r.training_logs}
        if logs:
            files[name] = plot_training_dice(logs, r.count, out_dir / name)
            figure_lines.append(f"Training Dice of student and teacher (Fig. 2): ![Fig. 2, {r.count} annotated]"
                                f"({name})")
        else:
            figure_lines.append("Fig. 2 (training Dice): skipped, no training log was given for this count.")
        name = f"fig3_overlays_n{r.count}.png"
        if plot_overlays(r, methods, out_dir / name, label=label) is not None:
            files[name] = out_dir / name
            figure_lines.append(f"Small and large lesion (Fig. 3): ![Fig. 3, {r.count} annotated]({name})")
        else:
            figure_lines.append("Fig. 3 (overlays): skipped, no test case with an image, predictions of every "
                                "method and a reference lesion.")

    stats_by_key = {(s["count"], s["method"], s["metric"]): s for s in stats}
    p_rows = [[m, *[f"t-test p = {_fmt(stats_by_key[(c, m, 'dice')]['p_t'], '.4g')}, Wilcoxon p = "
                    f"{_fmt(stats_by_key[(c, m, 'dice')]['p_w'], '.4g')} (n = {stats_by_key[(c, m, 'dice')]['n']})"
                    for c in counts]]
              for m in methods if m != reference_method]
    other_tables = []
    for metric in COMPARED_METRICS[1:]:
        by_method = [{row["method"]: row for row in metric_summary(r, methods, reference_method, metric)}
                     for r in results]
        rows = []
        for m in methods:
            cells = []
            for summaries in by_method:
                s_m = summaries[m]
                missed = f"; {s_m['missed']} missed" if metric == "hd95_mm" else ""
                cells.append(f"{_fmt(s_m['mean'])} ± {_fmt(s_m['std'])} (n = {s_m['n']}{missed})")
            rows.append([m, *cells])
        other_tables.append(f"### {METRIC_NAMES[metric]}\n\n"
                            + _md_table(["Method", *[f"{c} annotated" for c in counts]], rows))

    files["report.md"] = out_dir / "report.md"
    listing = "\n".join(f"- [{n}]({n})" for n in sorted(files) if n != "report.md")
    files["report.md"].write_text("\n\n".join([
        f"# {title}",
        *([notes] if notes else []),
        "## Lesion Dice on the test set (cf. Tables 2-3 of Cui et al., IPMI 2019)",
        dice_md,
        _conventions(reference_method),
        f"## Paired tests of Dice against {reference_method}",
        "Two-sided paired Student's t-test (scipy.stats.ttest_rel, the paper's test) and Wilcoxon signed-rank "
        "test (scipy.stats.wilcoxon) on the same test cases; n = pairs used. All metrics: "
        "[statistics.md](statistics.md).",
        _md_table(["Method", *[f"{c} annotated" for c in counts]], p_rows) if p_rows else "(no other method)",
        "## Other metrics (mean ± sample std over test cases; n = cases where the metric is defined for every "
        "method)",
        "Each metric's mean runs over the test cases where it is defined for every method, so every method is "
        "averaged over the same cases. HD95 is undefined when reference or prediction is empty, so a "
        "prediction that misses a lesion entirely has none: the HD95 cells count such misses (\"missed\", over "
        "all test cases) beside the mean. Lesion-wise F1 is undefined when neither mask has a lesion. "
        "Lesions are 3D connected components (26-connectivity); a reference lesion counts as detected when "
        "any predicted voxel overlaps it.",
        *other_tables,
        "## Figures",
        *figure_lines,
        "## Files",
        listing,
    ]) + "\n")
    return files
