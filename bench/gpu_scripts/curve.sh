#!/bin/bash
# Issue 21: the learning curve of the best recipe (both render sets, regularisers decayed to 0.1x, recall weight 3,
# 6000 steps): the same training on a fraction of the training shapes, ARMS="FRACTION:SEED ...", each scored by
# `train` on both packs' held-out views (as single_view_full_both_recall3{,_seed1}_6000_h200.json, the whole set).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
for A in ${ARMS:-0.25:0 0.5:0}; do
  F=${A%%:*}; SEED=${A##*:}; T=both_recall3_frac${F}_seed${SEED}_6000_h200
  python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_augment/pack --variants full --seed $SEED \
    --max-seconds 280 --out-dir $OUT --tag $T --set steps=6000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 \
    train_fraction=$F out_dir=runs/$T > $OUT/log_$T.txt 2>&1
  grep -E "stopped|voxels_iou|^full|Error|error" $OUT/log_$T.txt | tail -4; echo "$T done at $(( $(date +%s) - S )) s"
done
ls -la $OUT
