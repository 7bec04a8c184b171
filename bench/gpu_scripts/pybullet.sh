#!/bin/bash
# Issue 21: do other openly licensed shapes help held-out furniture? pybullet_data's objects and procedural
# random_urdfs (default renders, .data/single_view_pybullet) beside the Sweet Home 3D default pack, against the same
# recipe on the furniture alone (recall weight 3, regularisers decayed to 0.1x, 5000 steps); both scored on the
# held-out furniture only (eval_sources=sh3d).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_pybullet/pack \
  --variants full plus-pybullet --max-seconds 230 --out-dir $OUT --tag default_recall3_5000_h200 \
  --set steps=5000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 > $OUT/log_pybullet.txt 2>&1
grep -E "training shapes|^full|^plus|Error|error" $OUT/log_pybullet.txt | tail -6; echo "done at $(( $(date +%s) - S )) s"
