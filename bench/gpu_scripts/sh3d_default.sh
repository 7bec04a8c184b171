#!/bin/bash
# Issue 21: does Sweet Home 3D's own default catalog (61 training models by eTeks inside the program's jar, source
# sh3d-default; default renders, .data/single_view_sh3d_default, `python bench/prepare_data.py single-view-sh3d-default`)
# help held-out furniture? The pybullet.sh recipe (recall weight 3, regularisers decayed to 0.1x, 5000 steps) on the
# furniture libraries alone (full) and with the default catalog (plus-sh3d-default), side by side on the one GPU,
# both scored on the held-out shapes of the furniture libraries only (the benchmark's, unchanged).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
for v in full plus-sh3d-default; do
  OMP_NUM_THREADS=$(( $(nproc) / 2 )) python3 bench/single_view_eval.py train --seed ${SEED:-0} \
    --data .data/single_view/pack,.data/single_view_sh3d_default/pack --variants $v --max-seconds ${MAX_SECONDS:-300} \
    --out-dir $OUT --tag default_recall3_5000_sh3d_default_h200 \
    --set steps=5000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 > $OUT/log_$v.txt 2>&1 &
done
wait
for v in full plus-sh3d-default; do grep -E "training shapes|stopped|^full|^plus|Error|error" $OUT/log_$v.txt | tail -4; done
echo "done at $(( $(date +%s) - S )) s"
