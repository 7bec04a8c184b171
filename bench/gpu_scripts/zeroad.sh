#!/bin/bash
# Issue 21: do 0 A.D.'s props (Debian's 0ad-data, CC-BY-SA 3.0; default renders, .data/single_view_zeroad, built on
# the CPU with `python -m pipelines single_view data build --sources zeroad --split train`) help held-out furniture?
# The pybullet.sh recipe (recall weight 3, regularisers decayed to 0.1x, 5000 steps or MAX_SECONDS) with them beside
# the Sweet Home 3D default pack, scored on the held-out furniture only; the furniture-alone rows are pybullet.sh's
# and procedural.sh's (bench/RESULTS.md).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_zeroad/pack \
  --variants ${VARIANTS:-plus-zeroad} --max-seconds ${MAX_SECONDS:-230} --out-dir $OUT --tag default_recall3_5000_zeroad_h200 \
  --set steps=5000 mesh_reg_end=0.1 mesh_recall_weight=3 eval_views=2 > $OUT/log_zeroad.txt 2>&1
grep -E "training shapes|stopped|^full|^plus|Error|error" $OUT/log_zeroad.txt | tail -6; echo "done at $(( $(date +%s) - S )) s"
