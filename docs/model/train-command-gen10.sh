#!/bin/bash
# issue 11, session of 2026-12-07 (sixth): the gen10 fine-tune of the shipped gen7 weights
# (step 4000, checksum 72946896d28f), on gen7's own recipe (384 px crops in batches of 4,
# camera-motion probability 0.45 from train_config-override-gen3.json) with two new parts of
# the synthesis that realdev's missed blur_only frames pointed at:
#  - a "sweep" camera kind: the whole frame smeared along one nearly straight line, mostly
#    horizontal (a vehicle, a walking camera, a pan with nothing tracked); until now straight
#    whole-frame travel came only from the fifth of shakes that are calm;
#  - a scene look (haze towards an airlight, exposure, colour cast) on a quarter of all
#    samples, sharp and blurred alike, before the blur and before observability is read:
#    washed-out and tinted pictures had been only hard negatives (soft light).
# Peak rate 1e-4 (a fine-tune), a new stream (--data-seed 10); --seed 0 keeps the split and
# so the 44 held-out photos. bf16 (--amp auto) on this session's CPU; no GPU was lent.
# The schedule is 4400 steps (100 + 400 + 3900), sized to anneal inside the session.
# Start from gen7: `git show ea536cd:qc_worker/weights/detector.safetensors > gen7.safetensors`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PHOTOS=${PHOTOS:-../shared/data/photos}
INIT=${INIT:?give INIT=gen7.safetensors (see above)}
exec .venv/bin/qc-train fit --sources "$PHOTOS" --out runs/gen10 --encoder mobilenet_v2 \
    --decoder-channels 64,32,24,16,8 --init-from "$INIT" \
    --config docs/model/train_config-override-gen3.json --lr 1e-4 --stage-steps 100,400,3900 \
    --stage-crop 384,384,384 --batch-size 4 --val-every 400 --val-samples 96 --snapshot-every 400 \
    --workers 1 --seed 0 --data-seed 10 --ema-decay 0.998 --amp auto --stop-after "${STOP_AFTER:-4400}"
