#!/bin/bash
# Issue 21: the test-time mesh fitting's settings for a candidate model (in assets/single_view/model), chosen on
# training shapes (`score --split train`, 200 shapes x 1 view) and reported on the held-out ones (`robustness`, 83
# shapes x 2 default views, per image for `compare`). Carry .whl and .data/single_view/pack; move assets/priors,
# assets/pointe and bench/results' pictures out for the call. ARMS: "name:steps:recall:reg:lr ...".
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s); mkdir -p $OUT/s
C=assets/single_view/model; P=.data/single_view/pack
COMMON="--device cuda --checkpoint $C --eval-views 2 --mirror-heads points --voxel-threshold 0.7"
for arm in ${ARMS:-s100r3:100:3:0.3:0.002}; do
  IFS=: read name steps recall reg lr <<< "$arm"
  [ $(( $(date +%s) - S )) -gt ${BUDGET:-480} ] && { echo "budget spent before $name"; break; }
  FIT="--mesh-fit-steps $steps --mesh-fit-recall $recall --mesh-fit-reg $reg --mesh-fit-lr $lr"
  python3 bench/single_view_eval.py score $COMMON --data $P --split train --max-shapes 200 --eval-views 1 $FIT \
    --json $OUT/s/train_$name.json > $OUT/s/log_train_$name.txt 2>&1
  python3 bench/single_view_eval.py robustness $COMMON --packs default=$P $FIT \
    --json $OUT/s/heldout_$name.json > $OUT/s/log_heldout_$name.txt 2>&1
  echo "$name done at $(( $(date +%s) - S )) s"
done
(cd $OUT && tar cf results.tar s && rm -r s)
echo "all done at $(( $(date +%s) - S )) s"
