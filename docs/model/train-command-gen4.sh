#!/bin/bash
# issue 11, session of 2026-12-06 (evening): the gen4 fine-tune of the shipped weights, gen3's recipe
# on a 6000-step schedule, stopped by hand at step 5000 for the session's time (--stop-after 5000
# does the same: the schedule stays that of 6000 steps), with snapshots for qc-train calibrate.
# Run from anywhere; PHOTOS defaults to the sources it was trained on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PHOTOS=${PHOTOS:-../shared/data/photos}
exec .venv/bin/qc-train fit --sources "$PHOTOS" --out runs/gen4 --encoder mobilenet_v2 \
    --decoder-channels 64,32,24,16,8 --init-from qc_worker/weights/detector.safetensors \
    --config docs/model/train_config-override-gen3.json --lr 3e-4 --stage-steps 100,400,5500 \
    --stage-crop 256,256,256 --batch-size 8 --val-every 500 --val-samples 96 --snapshot-every 500 \
    --workers 1 --seed 0 --amp auto --stop-after 5000
