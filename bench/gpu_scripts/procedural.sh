#!/bin/bash
# Issue 21: procedural furniture beside the Sweet Home 3D default pack (python bench/prepare_data.py
# single-view-default single-view-procedural; 900 generated shapes), the recipe of pybullet.sh (recall weight 3,
# regularisers decayed to 0.1x, 5000 steps), scored on the held-out furniture only; `full` re-run beside it, as
# pybullet.sh's baseline.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_procedural/pack \
  --variants ${VARIANTS:-plus-procedural full} --max-seconds 230 --out-dir $OUT --tag default_recall3_5000_proc_h200 \
  --set steps=5000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 > $OUT/log_procedural.txt 2>&1
grep -E "training shapes|^full|^plus|Error|error" $OUT/log_procedural.txt | tail -6; echo "done at $(( $(date +%s) - S )) s"
