#!/bin/bash
# Issue 21: train the candidate's recipe with the mesh Chamfer's recall half weighted (mesh_recall_weight), then
# score it on the held-out shapes rendered three ways with test-time mirroring and mesh fitting.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s); mkdir -p $OUT/r
T=${TAG:-both_recall3_6000_h200}
python3 bench/single_view_eval.py train --data .data/single_view/pack,.data/single_view_augment/pack --variants full \
  --max-seconds 300 --out-dir $OUT/r --tag $T --set steps=6000 mesh_reg_end=0.1 mesh_recall_weight=${RW:-3} eval_views=2 \
  out_dir=runs/$T export=true > $OUT/r/log_train.txt 2>&1
grep -E "stopped|voxels_iou|^full|Error|error|steps" $OUT/r/log_train.txt | tail -5; echo "trained at $(( $(date +%s) - S )) s"
PACKS="default=.data/single_view/pack augment=.data/single_view_augment/pack out-of-range=.data/single_view_robust_out-of-range/pack"
rob() { name=$1; shift; python3 bench/single_view_eval.py robustness --device cuda --checkpoint runs/$T/model --packs $PACKS \
  --eval-views 2 --json $OUT/r/rob_${T}_$name.json "$@" > $OUT/r/log_rob_$name.txt 2>&1; echo "$name $(( $(date +%s) - S )) s"; tail -7 $OUT/r/log_rob_$name.txt; }
rob plain --mirror-heads ''
rob both --mirror-heads voxels,points
rob both_fit100r3 --mirror-heads voxels,points --mesh-fit-steps 100 --mesh-fit-recall 3
(cd $OUT && tar cf results.tar r && rm -r r)
(cd runs/$T && tar cf - model | split -b 15M - $OUT/model_$T.tar.part)
echo "all done at $(( $(date +%s) - S )) s"; ls -la $OUT
