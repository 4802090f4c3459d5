"""What a run leaves for a reader: the note when the report no longer covers an earlier run's methods or
counts, and the small result files ``--results`` copies beside the code."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunet_mt.trainers.variant_names import current_method_name
from nnunet_mt.utils.atomic import write_json

#: the small text files of a run worth keeping beside the code (``--results``); large outputs stay in the workdir
RESULT_FILES = ("manifest.json", "splits.json", "timings.json", "report/table_dice.csv", "report/table_dice.md",
                "report/per_case_metrics.csv", "report/statistics.csv", "report/statistics.md",
                "report/screening.md", "report/screening_n*.csv")


def announce_replaced_report(report_dir: Path, methods: list[str], counts: list[int]) -> None:
    """The report covers this invocation's methods and counts: say what an earlier report had beyond them."""
    record = report_dir / "contents.json"
    if record.exists():
        old = json.loads(record.read_text())
        # a report written before a method's rename names it the old way: it is not gone
        gone_methods = [m for m in old.get("methods", []) if current_method_name(m) not in methods]
        gone_counts = [n for n in old.get("counts", []) if n not in counts]
        if gone_methods or gone_counts:
            print(f"note: {report_dir} is rewritten for methods {', '.join(methods)} and counts "
                  f"{', '.join(map(str, counts))}; the previous report also had "
                  + "; ".join(x for x in (f"methods {', '.join(gone_methods)}" if gone_methods else "",
                                          f"counts {', '.join(map(str, gone_counts))}" if gone_counts else "") if x)
                  + ". Their trainings and predictions stay in the work folder: rerun with them in --methods / "
                    "--counts to report them again.", flush=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(record, {"methods": methods, "counts": counts})


def export_results(workdir: Path, dest: Path) -> list[str]:
    """Copy the run's :data:`RESULT_FILES` that exist into ``dest`` (flat, names kept); returns their names.
    The manifest loses ``source_folder``/``source_files`` (paths and file stamps of this machine)."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for pattern in RESULT_FILES:
        for f in sorted(workdir.glob(pattern)):
            if f.name == "manifest.json":
                manifest = {k: v for k, v in json.loads(f.read_text()).items()
                            if k not in ("source_folder", "source_files")}
                write_json(dest / f.name, manifest)
            else:
                shutil.copyfile(f, dest / f.name)
            copied.append(f.name)
    return copied
