#!/usr/bin/env bash
# The count-10 screen from the committed start, one method at a time (README.md beside this file).
#
#   results/screen-n10/run.sh METHOD [METHOD ...]
#
# From the repository root, with the package installed. Regenerates the seeded synthetic cohort in $WORK if
# it is missing and checks it against start/cohort_sha256.txt, trains each METHOD from start/start_n10.pth
# (finished stages are skipped, an interrupted training continues), then exports the method's final model
# (network weights only) to $OUT/models and puts its rows into $OUT/screening_n10.csv, replacing that method's
# rows only (merge_rows.py), and prints the choice rule's scores from that file.
#
#   WORK    work folder outside the repository (default ../screen-n10-work)
#   OUT     where rows and models go (default results/screen-n10, or results/screen-n10/seed$SEED; the second
#           round's methods: results/screen-n10/next[/seed$SEED]; a GPU run should use another folder: GPU and
#           CPU rows are different runs and never share a comparison)
#   SEED    the trainings' seed (--training-seed; default 0, the screen's). Another seed trains in its own
#           work folder, $WORK/screen-seed$SEED, from the same start and cohort: the seed spread of the
#           choice rule's step 7 (README.md)
#   DEVICE  cpu (default) or cuda
#   CODE    optional: a frozen export of the code (git archive) put first on PYTHONPATH
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SEED="${SEED:-0}"
case "$SEED" in ''|*[!0-9]*) echo "SEED must be a non-negative integer, not '$SEED'" >&2; exit 2;; esac
# nnunet_mt_reproduce's module in the code that runs: nnunet_mt.reproduce up to issue 30's reorganisation (the
# frozen CODE of the screen's methods), nnunet_mt.commands.reproduce after it. Decided by CODE's files, not by
# an import: with an editable install, a module missing from CODE is found in the installed checkout.
# The same code calls the no-consistency control MeanTeacher-beta0 (renamed after it), and has none of the second
# round's methods (NEXT: README.md's step 9), which run on later code, in their own work folder and OUT.
REPRODUCE=nnunet_mt.commands.reproduce; CONTROL=MeanTeacher-no-consistency; NEXT="MeanTeacher-released-short-schedule"
if [ -n "${CODE:-}" ] && [ -f "$CODE/nnunet_mt/reproduce.py" ]; then
  REPRODUCE=nnunet_mt.reproduce; CONTROL=MeanTeacher-beta0; NEXT=""
fi
ALL="DeepMedic MeanTeacher-released MeanTeacher-kl-confident MeanTeacher-mse MeanTeacher-kl MeanTeacher-squared PseudoLabel MeanTeacher $CONTROL"
[ $# -ge 1 ] || { echo "usage: $0 METHOD [METHOD ...]  (the order of README.md: $ALL; second round: ${NEXT:-none in this code})" >&2; exit 2; }
FIRST=""; SECOND=""
for M in "$@"; do
  case " $ALL " in
    *" $M "*) FIRST=1;;
    *) case " $NEXT " in *" $M "*) SECOND=1;;
       *) echo "$M: not a method of this screen (its methods: $ALL; second round: ${NEXT:-none in this code})" >&2; exit 2;;
       esac;;
  esac
done
if [ -n "$FIRST" ] && [ -n "$SECOND" ]; then
  echo "the second round's methods ($NEXT) run in a call of their own: their rows go to next/, not beside the first round's" >&2
  exit 2
fi
WORK="$(mkdir -p "${WORK:-../screen-n10-work}" && cd "${WORK:-../screen-n10-work}" && pwd)"
SCREEN=screen; DEFAULT_OUT="$HERE"
if [ -n "$SECOND" ]; then SCREEN=screen-next; DEFAULT_OUT="$HERE/next"; fi
if [ "$SEED" != 0 ]; then SCREEN="$SCREEN-seed$SEED"; DEFAULT_OUT="$DEFAULT_OUT/seed$SEED"; fi
OUT="$(mkdir -p "${OUT:-$DEFAULT_OUT}" && cd "${OUT:-$DEFAULT_OUT}" && pwd)"
DEVICE="${DEVICE:-cpu}"
[ -n "${CODE:-}" ] && export PYTHONPATH="$CODE"
export nnUNet_n_proc_DA=0  # in-process augmentation: the seeded trainings replay

cd "$WORK"  # before any python: a checkout in the current folder would shadow CODE
if [ ! -d nnUNet_raw/Dataset990_SyntheticStrokeDWI ]; then
  nnunet_mt_synthetic -d 990 --num-unlabeled 81 --num-workers 1 --raw-root nnUNet_raw
fi
sha256sum --quiet -c "$HERE/start/cohort_sha256.txt" || { echo "the regenerated cohort differs from the start's" >&2; exit 1; }
( cd "$HERE/start" && sha256sum --quiet -c start_n10.pth.sha256 )

for M in "$@"; do
  echo "=== $M: start $(date -u +%FT%T)"
  python -m "$REPRODUCE" -d 990 --raw nnUNet_raw --workdir "$SCREEN" \
    --counts 10 --shared-test 20 --validation 10 --seed 0 --training-seed "$SEED" \
    --start-model "$HERE/start/start_n10.pth" --methods "$M" \
    --epochs 20 --iterations-per-epoch 50 --val-iterations 2 --snapshot-every 4 \
    --unlabeled-truth nnUNet_raw_truth/Dataset990_SyntheticStrokeDWI/labelsUnlabeled \
    --volume-cases 8 --screen --device "$DEVICE" --num-processes 2
  TRAINER="$(python -c "from nnunet_mt.runner.methods import METHODS; print(METHODS['$M'][0])")"
  python -m nnunet_mt.runner.start_model export \
    "$SCREEN/nnUNet_results/Dataset500_SyntheticStrokeDWI_n10/${TRAINER}__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth" \
    "$OUT/models/$M.pth"
  # The rows of every method with diagnostics in this work folder go to a scratch file, and only M's are put
  # into OUT's CSV. The choice that writes them stops when the baseline's rows are not in this work folder
  # (a fresh one holds M's only): whether M's rows were written is merge_rows.py's check, not its exit status.
  ROWS="$SCREEN/n10/screening_rows.csv"; rm -f "$ROWS"
  # shellcheck disable=SC2086
  python -m nnunet_mt.evaluation.choice "$SCREEN/n10/diagnostics" --count 10 --methods $ALL $NEXT --write "$ROWS" \
    > "$SCREEN/n10/choice.log" 2>&1 || true
  [ -f "$ROWS" ] || { cat "$SCREEN/n10/choice.log" >&2; echo "$M: no screening rows were written" >&2; exit 1; }
  python "$HERE/merge_rows.py" "$ROWS" "$OUT/screening_n10.csv" "$M"
  python -m nnunet_mt.evaluation.choice "$OUT/screening_n10.csv" 2>/dev/null \
    || echo "(no choice from $OUT/screening_n10.csv yet: the rule needs the baseline's and every candidate's rows)"
  echo "=== $M: done $(date -u +%FT%T)"
done
