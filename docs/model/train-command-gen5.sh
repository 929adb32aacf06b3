#!/bin/bash
# issue 11, session of 2026-12-06 (night): the gen5 fine-tune of the shipped gen4 weights, gen3's
# recipe at a lower peak rate (2e-4) on a 4000-step cosine schedule sized to the session, on a new
# training stream (--data-seed 5) so it draws samples gen2..gen4 never saw; --seed 0 keeps the
# split and so the held-out photos. Snapshots every 500 steps are the candidates for qc-train calibrate.
# The run was stopped by hand just after step 3500's snapshot, for the session's time (its log
# runs on to step 3550); --stop-after 3500 does the same and keeps the 4000-step schedule.
# --init-from was gen4 (checksum 4f07a9757906, the weights of commit ef160bd:
# `git show ef160bd:qc_worker/weights/detector.safetensors > gen4.safetensors` to start from it
# once the shipped file has moved on). fp32: this session's CPU has no bf16 instructions, so
# --amp auto chose off (about 1.1 s per step when nothing else ran).
# Run from anywhere; PHOTOS defaults to the sources it was trained on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PHOTOS=${PHOTOS:-../shared/data/photos}
exec .venv/bin/qc-train fit --sources "$PHOTOS" --out runs/gen5 --encoder mobilenet_v2 \
    --decoder-channels 64,32,24,16,8 --init-from qc_worker/weights/detector.safetensors \
    --config docs/model/train_config-override-gen3.json --lr 2e-4 --stage-steps 100,400,3500 \
    --stage-crop 256,256,256 --batch-size 8 --val-every 500 --val-samples 96 --snapshot-every 500 \
    --workers 1 --seed 0 --data-seed 5 --amp auto --stop-after 3500
