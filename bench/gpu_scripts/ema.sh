#!/bin/bash
# Issue 21: does a moving average of the weights (`ema_decay`) help? procedural.sh's plus-procedural arm (the default
# Sweet Home 3D pack and the 900-shape 14-kind procedural pack, carried with .whl; recall weight 3, regularisers
# decayed to 0.1x, 5000 steps) with and without it, the two side by side on the one GPU, scored by `train` on the
# held-out furniture x 2 default views.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
for decay in ${DECAYS:-0 0.999}; do
  OMP_NUM_THREADS=8 python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_procedural/pack \
    --variants plus-procedural --max-seconds ${TRAIN_SECONDS:-330} --out-dir $OUT --tag default_recall3_5000_proc14_ema${decay}_h200 \
    --set steps=5000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 ema_decay=$decay > $OUT/log_ema$decay.txt 2>&1 &
done
wait
for decay in ${DECAYS:-0 0.999}; do grep -E "training shapes|stopped|moving|^plus|Error|error" $OUT/log_ema$decay.txt | tail -4; done
echo "done at $(( $(date +%s) - S )) s"
