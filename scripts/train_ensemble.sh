#!/usr/bin/env bash
# The whole ensemble recipe of issue #13 as one command: diverse members trained side by
# side, averaged into one ensemble file, then distilled into one bundled-size net and
# one fast net. Made for one GPU (members run concurrently: one small CNN leaves most
# of a large GPU idle) and for a short lease of one, so every stage is budgeted in
# minutes: each run's epoch count is fitted to its budget (train.budget_minutes).
#
#   scripts/train_ensemble.sh DATA OUT [MEMBER_MINUTES] [DISTILL_MINUTES]
#
#   DATA             a ferlab cache (ferlab prepare ... -o fer.npz) or any source it reads
#   OUT              a new folder: runs, logs, ens.pt, student.pt, fast.pt, fast-int8.onnx,
#                    summary.txt (every accuracy, with the command that made it)
#   MEMBER_MINUTES   training budget of each member (default 6)
#   DISTILL_MINUTES  training budget of each distilled student (default 3)
#
# Environment: PARALLEL (members at once; default 5 on a GPU, 1 otherwise),
# MEMBERS (how many of the recipes below, default all 5), FERLAB (the command, default
# `ferlab`; `python3 -m ferlab` with PYTHONPATH=src where it is not installed), PYTHON
# (the interpreter that has torch, default python3),
# EXTRA (overrides added to every run, e.g. "data.limit=2000" for a dry run).
#
# Wall time is about ceil(MEMBERS / PARALLEL) * MEMBER_MINUTES + DISTILL_MINUTES plus
# data loading, ten-crop scoring and the int8 export (~2 minutes on a GPU machine).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
data=$1
out=$2
member_minutes=${3:-6}
distill_minutes=${4:-3}
read -r -a ferlab <<<"${FERLAB:-ferlab}"
read -r -a extra <<<"${EXTRA:-}"
if [ ! -e "$data" ]; then echo "error: $data: no such data file or folder" >&2; exit 2; fi
if [ -e "$out" ]; then echo "error: $out exists; give a new folder (nothing is overwritten)" >&2; exit 2; fi
mkdir -p "$out"

gpu=$("${PYTHON:-python3}" -c 'import torch; print(int(torch.cuda.is_available()))')
parallel=${PARALLEL:-$([ "$gpu" = 1 ] && echo 5 || echo 1)}

# Diversity on purpose: two architectures, three widths/depths, two augmentation
# policies, five seeds. Each line: NAME CONFIG OVERRIDES...
recipes=(
  "vgg-s11      vgg-fast   train.seed=11"
  "robust-s12   vgg-robust train.seed=12"
  "deep-s13     vgg-robust train.seed=13 model.depth=3 model.dropout_rate=0.3"
  "wide-s14     vgg-fast   train.seed=14 model.widths=[48,96,192,384] model.dropout_rate=0.3"
  "resnet-s15   vgg-robust train.seed=15 model.name=resnet18_transfer model.mode=fine-tune model.input_size=64"
)
n=${MEMBERS:-${#recipes[@]}}
if ! [[ "$n" =~ ^[0-9]+$ ]] || (( n < 2 || n > ${#recipes[@]} )); then
  echo "error: MEMBERS=$n: give 2 to ${#recipes[@]}" >&2; rm -r "$out"; exit 2
fi
late=(train.late_tta=tencrop train.late_tta_epochs=3)

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
log "ferlab ensemble recipe: $n members x ${member_minutes} min ($parallel at once), students ${distill_minutes} min; gpu=$gpu"

# 1. Members, PARALLEL at a time; a failed member is reported and left out.
for ((i = 0; i < n; i++)); do
  read -r -a r <<<"${recipes[$i]}"
  name=${r[0]} config=${r[1]}
  cmd=("${ferlab[@]}" train --config "$config" --data "$data" --out "$out/$name"
       "train.budget_minutes=$member_minutes" "${late[@]}" "${r[@]:2}" "${extra[@]}")
  log "member $name: ${cmd[*]}"
  while (( $(jobs -rp | wc -l) >= parallel )); do wait -n || true; done
  ( "${cmd[@]}" >"$out/$name.log" 2>&1; echo $? >"$out/$name.rc" ) &
done
wait
members=()
for ((i = 0; i < n; i++)); do
  read -r name _ <<<"${recipes[$i]}"
  if [ "$(cat "$out/$name.rc")" = 0 ] && [ -f "$out/$name/best.pt" ]; then
    members+=("$out/$name")
    log "member $name: $(grep '^best val_accuracy' "$out/$name.log")"
  else
    log "member $name FAILED: $(tail -n 2 "$out/$name.log" | tr '\n' ' ')"
  fi
done
if [ ${#members[@]} -lt 2 ]; then log "fewer than two members trained; stopping"; exit 1; fi

# 2. The ensemble: every member with ten-crop TTA; its accuracy beside each member's.
"${ferlab[@]}" ensemble "${members[@]}" --tta tencrop -o "$out/ens.pt" | tee -a "$out/summary.txt"
"${ferlab[@]}" evaluate "$out/ens.pt" --data "$data" --split PublicTest --out "$out/eval-ens" >"$out/ens-eval.txt"
grep -E '^split|^  member' "$out/ens-eval.txt" | tee -a "$out/summary.txt"

# 3. Students distilled from the ensemble, side by side: one net of the bundled size
# (vgg-robust's augmentation) and the fast net; the last epoch of each is kept as the
# model card says (the best epoch would let PublicTest choose).
student=("${ferlab[@]}" train --config vgg-robust --data "$data" --out "$out/student"
         "train.teacher=$out/ens.pt" "train.budget_minutes=$distill_minutes" "${late[@]}" "${extra[@]}")
fast=("${ferlab[@]}" train --config vgg-small-distill --data "$data" --out "$out/fast"
      "train.teacher=$out/ens.pt" "train.budget_minutes=$distill_minutes" "${extra[@]}")
log "student: ${student[*]}"
log "fast: ${fast[*]}"
"${student[@]}" >"$out/student.log" 2>&1 &
s=$!
ok=1
"${fast[@]}" >"$out/fast.log" 2>&1 || { ok=0; log "fast FAILED: $(tail -n 2 "$out/fast.log" | tr '\n' ' ')"; }
wait $s || { ok=0; log "student FAILED: $(tail -n 2 "$out/student.log" | tr '\n' ' ')"; }
if [ $ok = 0 ]; then exit 1; fi

"${ferlab[@]}" export "$out/student/last.pt" -o "$out/student.pt" --tta tencrop >/dev/null
"${ferlab[@]}" export "$out/fast/last.pt" -o "$out/fast.pt" --tta none >/dev/null
"${ferlab[@]}" export "$out/fast.pt" -o "$out/fast-int8.onnx" --int8 --calibration-data "$data" >/dev/null
for spec in "student.pt tencrop" "student.pt flip" "fast.pt none" "fast-int8.onnx none"; do
  read -r file tta <<<"$spec"
  log "$file ($tta TTA): $("${ferlab[@]}" evaluate "$out/$file" --data "$data" --split PublicTest \
        --tta "$tta" --out "$out/eval-${file%%.*}-$tta" | grep '^split')"
done
log "done: $out/ens.pt, $out/student.pt, $out/fast.pt, $out/fast-int8.onnx"
