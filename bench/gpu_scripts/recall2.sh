#!/bin/bash
# Issue 21: the recall-weighted recipe again with another seed (run-to-run noise), and with recall weight 6.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s); mkdir -p $OUT/r
PACKS="default=.data/single_view/pack augment=.data/single_view_augment/pack out-of-range=.data/single_view_robust_out-of-range/pack"
train() { T=$1; shift; python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_augment/pack \
  --variants full --max-seconds 230 --seed ${SEED:-0} --out-dir $OUT/r --tag $T --set steps=6000 mesh_reg_end=0.1 eval_views=1 out_dir=runs/$T \
  export=true "$@" > $OUT/r/log_train_$T.txt 2>&1; grep -E "stopped|^full|Error|error" $OUT/r/log_train_$T.txt | tail -3
  echo "trained $T at $(( $(date +%s) - S )) s"; }
rob() { T=$1; name=$2; shift 2; python3 bench/single_view_eval.py robustness --device cuda --checkpoint runs/$T/model --packs $PACKS \
  --eval-views 2 --json $OUT/r/rob_${T}_$name.json "$@" > $OUT/r/log_rob_${T}_$name.txt 2>&1; echo "$T $name $(( $(date +%s) - S )) s"; tail -6 $OUT/r/log_rob_${T}_$name.txt; }
SEED=1 train both_recall3_seed1_6000_h200 mesh_recall_weight=3
train both_recall6_6000_h200 mesh_recall_weight=6
rob both_recall3_seed1_6000_h200 both --mirror-heads voxels,points
rob both_recall6_6000_h200 both --mirror-heads voxels,points
[ $(( $(date +%s) - S )) -lt 470 ] && rob both_recall3_seed1_6000_h200 both_fit100r3 --mirror-heads voxels,points --mesh-fit-steps 100
[ $(( $(date +%s) - S )) -lt 530 ] && rob both_recall6_6000_h200 both_fit100r3 --mirror-heads voxels,points --mesh-fit-steps 100
(cd $OUT && tar cf results.tar r && rm -r r)
for T in both_recall3_seed1_6000_h200 both_recall6_6000_h200; do (cd runs/$T && tar cf - model | split -b 15M - $OUT/model_$T.tar.part); done
echo "all done at $(( $(date +%s) - S )) s"; ls -la $OUT
