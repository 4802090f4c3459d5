"""A public-dataset conversion: what every converter shares once its release's cases are found.

Each dataset module (``isles2022``, ``atlas2``, ``brats``) only *discovers* cases in its release's
layout and says which file is which channel (:mod:`.cases`); everything else happens here, on top of
:mod:`nnunet_mt.dataset_conversion.convert_folder`'s checks (same messages, same atomic rename), so the
converters cannot drift apart in what they accept:

1. discovery gives :class:`~.cases.SourceCase` objects plus problems, per case or global (linked folders and files
   followed, a link that cannot be followed a problem: :mod:`.links`);
2. :func:`convert` validates every file (:mod:`.validation`: readable, finite, 3-D or 4-D as expected, label
   values in the release's set, one voxel grid per case), optionally hides labels (``--annotated N``), and either
   raises one :class:`DatasetConversionError` listing every problem with its file, or skips the bad
   cases (``--skip-invalid``) and says why in the summary (:mod:`.summary`);
3. the dataset is written into a hidden staging folder beside the target and renamed into place (:mod:`.writing`;
   a later run removes the staging folders of killed runs, see ``staging.remove_stale_temporaries``);
   a record of the sources (size and mtime of every file read), the options and the files written is kept in
   ``nnunet_mt_conversion.json`` (:mod:`.rerun`, :mod:`nnunet_mt.dataset_conversion.rerun_record`) so that a
   rerun of the same command is a no-op ("up to date", or a rewrite where a file written was changed since),
   and a rerun after the sources or options changed refuses, saying what differs, unless ``--overwrite`` is
   given. Paths are recorded resolved (absolute), so the same folder given another way is the same source.
   An overwrite also removes the hidden-labels file of the conversion it replaces.

The source folders are only read. Labels hidden by ``--annotated`` are listed in a JSON file *outside*
the dataset folder (default ``<raw root>/Dataset###_Name.hidden_labels.json``), so nnU-Net never sees
them but the user can still evaluate on them. The command line of every converter is :mod:`.command_line`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_mt.dataset_conversion.convert_folder import DatasetConversionError
from nnunet_mt.dataset_conversion.errors import OldDatasetLeft
from nnunet_mt.dataset_conversion.dataset_checks import (check_label_definitions, check_output_location,
                                                          dataset_dir_for, lies_inside)
from nnunet_mt.dataset_conversion.public import rerun
from nnunet_mt.dataset_conversion.public.cases import DatasetSpec, Discovery, Options
from nnunet_mt.dataset_conversion.public.summary import Summary
from nnunet_mt.dataset_conversion.public.validation import validate_case
from nnunet_mt.dataset_conversion.public.writing import (remove_stale_hidden_labels, write_dataset,
                                                         write_hidden_labels)
from nnunet_mt.dataset_conversion.rerun_record import compare_with_existing
from nnunet_mt.dataset_conversion.staging import remove_stale_temporaries


def choose_annotated(labelled: Sequence[str], annotated: int | None, seed: int) -> tuple[list[str], list[str]]:
    """(kept, hidden) case ids: ``annotated`` labelled cases drawn at random with ``seed``, the rest hidden.

    Drawn from the sorted ids so the choice depends only on the set of cases and the seed, never on file
    system order; the draw is nested (the 10 kept with seed s are among the 20 kept with seed s), as the
    runner's counts are, so datasets with different --annotated share their small sets.
    """
    ordered = sorted(labelled)
    if annotated is None:
        return ordered, []
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    kept = sorted(ordered[i] for i in permutation[:annotated])
    hidden = sorted(ordered[i] for i in permutation[annotated:])
    return kept, hidden


# --------------------------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------------------------
def convert(spec: DatasetSpec, discovery: Discovery, options: Options, *, context: str) -> Summary:
    """Validate, split, write atomically (or find the dataset up to date); return what went where.

    Raises :class:`DatasetConversionError` listing every problem (with its file) before anything is written.
    ``discovery`` holds resolved paths (see :func:`.cases.source_folder`); the output paths are resolved here, so the
    record does not depend on the working directory.
    """
    options = replace(options, raw_root=Path(options.raw_root).resolve(),
                      hidden_labels_file=Path(options.hidden_labels_file).resolve()
                      if options.hidden_labels_file is not None else None)
    problems = list(discovery.global_problems)
    dataset_dir = dataset_dir_for(output_raw_root=options.raw_root, dataset_id=options.dataset_id,
                                  dataset_name=options.dataset_name, problems=problems)
    if not lies_inside(options.raw_root, discovery.source_roots):  # the sources are only read
        remove_stale_temporaries(options.raw_root)  # left by killed runs (their writer process is gone)
    if options.annotated is not None and options.annotated < 1:
        problems.append(f"--annotated {options.annotated}: must be at least 1")
    if not discovery.cases and not discovery.case_problems and not discovery.global_problems:
        problems.append(f"{context}: no cases found (is this the right folder?)")
    elif discovery.cases and not discovery.case_problems and all(case.label is None for case in discovery.cases):
        problems.append(_without_annotations(context, discovery, skipped=0))  # before reading every file
    if not spec.regions_class_order:  # region-based label dicts hold tuples, which this check does not cover
        check_label_definitions(labels=dict(spec.labels), problems=problems)  # type: ignore[arg-type]
    if problems or dataset_dir is None:
        if not options.skip_invalid:  # the cases' problems found so far too, so that one run shows them all
            problems.extend(p for case_id in sorted(discovery.case_problems) for p in discovery.case_problems[case_id])
        raise DatasetConversionError(problems, context=f"cannot convert {context}")

    hidden_file = options.hidden_labels_file or dataset_dir.parent / hidden_file_name(dataset_dir)
    record = rerun.record(spec, discovery, options)
    previous = compare_with_existing(dataset_dir, record, overwrite=options.overwrite, converter=spec.converter)
    if previous.up_to_date:
        return _up_to_date_summary(spec, discovery, dataset_dir, previous.existing)

    sources = [d.resolve() for d in discovery.source_roots]
    # an existing dataset folder is explained by previous.problems (what differs), not by a bare "already exists"
    check_output_location(dataset_dir=dataset_dir, dataset_id=options.dataset_id, source_dirs=sources,
                          overwrite=options.overwrite or previous.existing is not None, problems=problems)
    problems.extend(previous.problems)
    if options.annotated is not None:  # only then is a hidden-labels file written
        if hidden_file.is_relative_to(dataset_dir):
            problems.append(f"--hidden-labels-file {hidden_file} lies inside the dataset folder {dataset_dir}: "
                            f"nnU-Net must not see the hidden labels; put it elsewhere")
        if options.hidden_labels_file is not None:  # the default lies beside the dataset, checked with it above
            problems.extend(f"hidden labels file {hidden_file} lies inside the source folder {source}; the source is "
                            f"only read: choose a --hidden-labels-file outside it"
                            for source in sources if hidden_file.is_relative_to(source))

    case_problems = {k: list(v) for k, v in discovery.case_problems.items()}
    allowed = set(int(v) for v in spec.label_map)
    for case in discovery.cases:
        found = validate_case(case, allowed)
        if found:
            case_problems.setdefault(case.case_id, []).extend(found)
    if case_problems and not options.skip_invalid:
        problems.extend(p for case_id in sorted(case_problems) for p in case_problems[case_id])
    valid = [case for case in discovery.cases if case.case_id not in case_problems]
    labelled = [case.case_id for case in valid if case.label is not None]
    if options.annotated is not None and options.annotated > len(labelled):
        problems.append(f"--annotated {options.annotated}: only {len(labelled)} valid annotated case(s) found")
    if not problems and not valid:
        problems.append(f"{context}: every case has a problem, nothing to convert")
    elif not problems and not labelled:
        problems.append(_without_annotations(context, discovery, skipped=len(case_problems)))
        problems.extend(p for case_id in sorted(case_problems) for p in case_problems[case_id])
    if problems:
        raise DatasetConversionError(problems, context=f"cannot convert {context} into {dataset_dir}")

    kept, hidden = choose_annotated(labelled, options.annotated, options.seed)
    kept_set = set(kept)
    summary = Summary(dataset_dir=dataset_dir, annotated=kept, ignored=list(discovery.ignored),
                      skipped={k: case_problems[k] for k in sorted(case_problems)}, layout=discovery.layout,
                      grid_channel=spec.channel_names[0])
    for case in sorted(valid, key=lambda c: c.case_id):
        if case.label is None:
            summary.unannotated[case.case_id] = case.unlabeled_reason
        elif case.case_id not in kept_set:
            summary.unannotated[case.case_id] = f"with the label hidden (--annotated {options.annotated} " \
                                                f"--seed {options.seed})"
    hidden_entries = {case.case_id: str(case.label) for case in valid if case.case_id in set(hidden)}
    if hidden:
        summary.hidden_labels_file = hidden_file
    summary.notes.extend(previous.notes(dataset_dir))  # this conversion's output, damaged: written again
    record["hidden"] = hidden_entries
    record["summary"] = {"annotated": summary.annotated, "unannotated": summary.unannotated,
                         "skipped": summary.skipped,
                         "hidden_labels_file": str(hidden_file) if hidden else None}

    left = None
    try:
        write_dataset(spec, valid, kept_set, dataset_dir, record)
    except OldDatasetLeft as error:  # the new dataset is in place: its sidecars follow it, then the error
        left = error
    summary.outside_field_of_view = record["summary"]["outside_field_of_view"]
    if hidden:
        write_hidden_labels(hidden_file, hidden_entries, dataset_dir)
    _remove_stale_sidecars(summary, previous.existing,
                           default_hidden_file=dataset_dir.parent / hidden_file_name(dataset_dir))
    if left is not None:
        raise left
    return summary


def hidden_file_name(dataset_dir: Path) -> str:
    """The default hidden-labels file's name, beside the dataset folder (outside it: nnU-Net must not see it)."""
    return f"{dataset_dir.name}.hidden_labels.json"


def _remove_stale_sidecars(summary: Summary, existing: dict | str | None, *, default_hidden_file: Path) -> None:
    """Remove the hidden-labels files an earlier conversion of this dataset wrote and this one did not (a rerun
    without --annotated, or with another --hidden-labels-file), saying so in the summary."""
    earlier = existing.get("summary", {}).get("hidden_labels_file") if isinstance(existing, dict) else None
    candidates = [Path(earlier)] if earlier else []
    for path in remove_stale_hidden_labels([*candidates, default_hidden_file], summary.hidden_labels_file,
                                           summary.dataset_dir):
        summary.notes.append(f"removed {path}: the hidden labels of the dataset replaced")


def _without_annotations(context: str, discovery: Discovery, *, skipped: int) -> str:
    """nnU-Net plans and trains on imagesTr only: a dataset without annotated case fails there, so stop here."""
    if skipped:  # the input is right, its files are not: the problems follow this one
        found, hint = f"no annotated case is left after skipping the {skipped} case(s) with the problems below", ""
    else:
        found = f"no annotated case among the {len(discovery.cases)} found"
        hint = f"; {discovery.without_annotations_hint}" if discovery.without_annotations_hint else ""
    return (f"{context}: {found}; nnU-Net needs annotated training cases (nnUNetv2_plan_and_preprocess stops on a "
            f"dataset with numTraining 0){hint}")



def _up_to_date_summary(spec: DatasetSpec, discovery: Discovery, dataset_dir: Path, stored: dict) -> Summary:
    """The summary of the conversion that wrote the dataset (this very one); the hidden-labels file rewritten if
    it went missing."""
    summary = Summary(**stored["summary"], dataset_dir=dataset_dir, ignored=list(discovery.ignored), up_to_date=True,
                      layout=discovery.layout, grid_channel=spec.channel_names[0])
    summary.skipped = {k: list(v) for k, v in summary.skipped.items()}
    if summary.hidden_labels_file is not None:
        summary.hidden_labels_file = Path(summary.hidden_labels_file)
        write_hidden_labels(summary.hidden_labels_file, stored.get("hidden", {}), dataset_dir)
    # an overwrite killed between the dataset's rename and the removal may have left one
    _remove_stale_sidecars(summary, None, default_hidden_file=dataset_dir.parent / hidden_file_name(dataset_dir))
    return summary
