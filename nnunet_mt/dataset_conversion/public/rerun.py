"""The rerun record of a public-dataset conversion (see :mod:`nnunet_mt.dataset_conversion.rerun_record`): its
sources are the files of the cases discovered, its options the release's common and own options."""
from __future__ import annotations

from pathlib import Path

from nnunet_mt.dataset_conversion.public.cases import DatasetSpec, Discovery, Options
from nnunet_mt.dataset_conversion.rerun_record import RECORD_VERSION
from nnunet_mt.utils.file_fingerprint import files_fingerprint


def _source_files(discovery: Discovery) -> list[Path]:
    files: list[Path] = []
    for case in discovery.cases:
        files.extend(channel.path for channel in case.channels)
        if case.label is not None:
            files.append(case.label)
    return sorted(dict.fromkeys(files))


def record(spec: DatasetSpec, discovery: Discovery, options: Options) -> dict:
    """What the output depends on: converter, options, and every source file's size and modification time."""
    return {
        "version": RECORD_VERSION,
        "converter": spec.converter,
        "options": {"skip_invalid": options.skip_invalid, "annotated": options.annotated, "seed": options.seed,
                    "hidden_labels_file": str(options.hidden_labels_file) if options.hidden_labels_file else None,
                    **{k: v for k, v in options.extra.items()}},
        "sources": files_fingerprint(_source_files(discovery)),
        "problems": {k: v for k, v in sorted(discovery.case_problems.items())},
    }
