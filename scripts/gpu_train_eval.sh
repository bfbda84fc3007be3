#!/usr/bin/env bash
# Trains every task adapter and generates the evaluation's replies on a CUDA machine, in one go.
# Adapters train in parallel processes (each is launch-bound, so the GPU overlaps them), then
# three evaluation processes generate replies; scoring runs afterwards on any machine:
#   python -m dlp eval --phase score --replies replies.jsonl
# Env: OUT (results folder), DLP_DATA (the datasets), STEPS (override every task's steps, for a dry run),
# N / N2 (eval items), BATCH (rows per generate call), TASKS (default: all seven).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu}"; WORK="${WORK:-$OUT/work}"  # OUT: what to keep; WORK: logs and partial files
mkdir -p "$OUT" "$WORK/logs"
PY="${PY:-python3}"
TASKS="${TASKS:-math code translate_fr sentiment science_qa summarize reading_qa}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s); stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stamp "convert the base once (the processes below reuse the cache)"
$PY -c "from dlp.base_model import load_base; from dlp.manifest import load_manifest; load_base(load_manifest().base_sources)" || exit 1

stamp "train: $TASKS"
for t in $TASKS; do
  $PY -m dlp train-adapter --task "$t" ${STEPS:+--steps $STEPS} --max-seconds "${TRAIN_SECONDS:-270}" --json > "$WORK/logs/train_$t.log" 2>&1 &
done
wait
for t in $TASKS; do tail -n 1 "$WORK/logs/train_$t.log"; done
# In 15 MB parts (a results folder may cap file sizes); rejoin with: cat adapters.tgz.part-* | tar xz -C assets
tar czf - -C assets adapters | split -b 15M - "$OUT/adapters.tgz.part-"
stamp "adapters saved"

stamp "generate eval replies"
export DLP_DTYPE=float32  # the CPU demo's precision
N="${N:-100}"; N2="${N2:-50}"; BATCH="${BATCH:-256}"
timeout "${EVAL_SECONDS:-150}" $PY -m dlp eval --phase generate --tasks math,code --n "$N" --n-two-skill 0 --batch "$BATCH" --replies "$WORK/r1.jsonl" > "$WORK/logs/eval1.log" 2>&1 &
timeout "${EVAL_SECONDS:-150}" $PY -m dlp eval --phase generate --tasks summarize,translate_fr,sentiment --n "$N" --n-two-skill "$N2" --batch "$BATCH" --replies "$WORK/r2.jsonl" > "$WORK/logs/eval2.log" 2>&1 &
timeout "${EVAL_SECONDS:-150}" $PY -m dlp eval --phase generate --tasks science_qa,reading_qa --n "$N" --n-two-skill 0 --batch "$BATCH" --replies "$WORK/r3.jsonl" > "$WORK/logs/eval3.log" 2>&1 &
wait
{ head -n 1 "$WORK/r1.jsonl"; for f in "$WORK"/r[123].jsonl; do tail -n +2 "$f"; done; } | gzip > "$OUT/replies.jsonl.gz"
stamp "replies: $(zcat "$OUT/replies.jsonl.gz" | wc -l) lines"
tail -n 3 "$WORK"/logs/eval*.log
tar czf "$OUT/logs.tgz" -C "$WORK" logs
