"""What a public-dataset conversion reports: which cases went where, which were skipped and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_mt.dataset_conversion.convert_folder import UNLABELED_IMAGES_FOLDER


@dataclass
class Summary:
    """What went where; :meth:`format` is what the commands print."""

    dataset_dir: Path
    annotated: list[str] = field(default_factory=list)
    unannotated: dict[str, str] = field(default_factory=dict)  # case -> reason
    skipped: dict[str, list[str]] = field(default_factory=dict)  # case -> problems
    ignored: list[Path] = field(default_factory=list)
    hidden_labels_file: Path | None = None
    up_to_date: bool = False
    layout: str | None = None
    #: resampled channel -> case -> [voxels outside that channel's field of view (written as 0), voxels]
    outside_field_of_view: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    grid_channel: str = ""  # the channel whose grid the others are written on
    #: what else was done to the output (sidecars removed, damaged files rewritten), one line each
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{'up to date, nothing written' if self.up_to_date else 'wrote'}: {self.dataset_dir}"]
        if self.layout:
            lines.append(f"  layout: {self.layout}")
        # every case found is counted once, so that a case gone missing shows in the sum
        found = len(self.annotated) + len(self.unannotated) + len(self.skipped)
        lines.append(f"  cases: {found} found = {len(self.annotated)} annotated + {len(self.unannotated)} unannotated "
                     f"+ {len(self.skipped)} skipped")
        lines.append(f"  annotated   (imagesTr + labelsTr): {len(self.annotated)}")
        if self.annotated:
            lines.append(f"    {_short_list(self.annotated)}")
        lines.append(f"  unannotated ({UNLABELED_IMAGES_FOLDER}): {len(self.unannotated)}")
        reasons: dict[str, list[str]] = {}
        for case_id, reason in self.unannotated.items():
            reasons.setdefault(reason, []).append(case_id)
        for reason, cases in reasons.items():
            lines.append(f"    {len(cases)} {reason}: {_short_list(cases)}")
        if self.hidden_labels_file is not None:
            lines.append(f"    hidden labels listed in {self.hidden_labels_file}")
        lines.append(f"  skipped: {len(self.skipped)}")
        for case_id, problems in self.skipped.items():
            lines.append(f"    {case_id}: " + "; ".join(problems))
        if self.ignored:
            lines.append(f"  ignored NIfTI files that are not part of the layout: {len(self.ignored)}, e.g. "
                         + ", ".join(str(p) for p in self.ignored[:3]))
        for channel, cases in self.outside_field_of_view.items():
            lines.append(_field_of_view_line(channel, self.grid_channel, cases))
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


def _field_of_view_line(channel: str, grid: str, cases: Mapping[str, Sequence[int]]) -> str:
    """How much of the resampled channel is 0 only because its field of view does not cover the grid."""
    outside, total = sum(o for o, _ in cases.values()), sum(t for _, t in cases.values())
    affected = sorted((-o / t, case) for case, (o, t) in cases.items() if o)
    line = (f"  {channel} resampled onto the {grid} grid: {100 * outside / max(total, 1):.1f} % of all voxels lie "
            f"outside the {channel} field of view and are 0")
    if not affected:
        return line + "; no case has such voxels"
    shown = [f"{case} {-100 * fraction:.1f} %" for fraction, case in affected]
    return line + f"; {len(affected)} of {len(cases)} cases: {_short_list(shown)}"


def _short_list(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
