#!/bin/bash
# Issue 21: the candidate model. Sweet Home 3D furniture in both render sets (carried: the default and augmented
# packs) beside every procedural training shape (1776 in the 10-kind catalog of its run on 2026-12-03, 2501 in the
# 14-kind one since; built here on the machine's cores with the augmented renders: the three packs do not fit in one
# carry), the recall-weighted recipe (weight 3, regularisers decayed to 0.1x), 6000 steps; scored by training itself
# on the furniture's held-out views of both render sets; the int8 model comes back.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"; nproc
S=$(date +%s)
P=/tmp/single_view_procedural_augment
source bench/gpu_scripts/build_procedural.sh; build_procedural $P --render augment --render-seed 0
echo "built at $(( $(date +%s) - S )) s"
python3 -m pipelines single_view --preset gpu --data .data/single_view/pack,.data/single_view_augment/pack,$P/pack \
  --sources sh3d,procedural --eval-sources sh3d --steps ${STEPS:-6000} --max-seconds ${TRAIN_SECONDS:-230} \
  --mesh-reg-end 0.1 --mesh-recall-weight 3 --eval-views 2 --preview-every 1000000000 --out-dir runs/candidate \
  > $OUT/log_train.txt 2>&1
grep -E "training shapes|stopped|voxels_iou|Error|error" $OUT/log_train.txt | tail -4
mkdir -p $OUT/model && cp runs/candidate/model/* $OUT/model/; ls -la $OUT/model; echo "done at $(( $(date +%s) - S )) s"
