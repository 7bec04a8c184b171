#!/bin/bash
# Issue 21: the shipped single-view model and the one before it (carried as .data/v6model) on the held-out shapes
# rendered three ways (default, augment, out-of-range; 83 shapes x 2 views each), each model with its own test-time
# settings (--as-predicted), on the GPU. Carry .whl, .data/v6model and the three held-out packs built by
# `python -m pipelines single_view data build --sources sh3d --split test --views 2 --render MODE --root ROOT`
# (.data/single_view_test, .data/single_view_robust_augment, .data/single_view_robust_out-of-range); move
# assets/priors, assets/pointe and bench/results' pictures out for the call.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
PACKS="default=.data/single_view_test/pack augment=.data/single_view_robust_augment/pack out-of-range=.data/single_view_robust_out-of-range/pack"
for m in shipped:assets/single_view/model before:.data/v6model; do
  python3 bench/single_view_eval.py robustness --device cuda --checkpoint ${m#*:} --packs $PACKS --eval-views 2 --as-predicted \
    --json $OUT/robust3_${m%%:*}.json > $OUT/log_${m%%:*}.txt 2>&1
  echo "${m%%:*} done at $(( $(date +%s) - S )) s"; tail -8 $OUT/log_${m%%:*}.txt
done
