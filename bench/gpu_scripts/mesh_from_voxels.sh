#!/bin/bash
# Issue 21: the mesh from the voxels (mesh_from voxels, Mesh R-CNN at test time) against the mesh head's icosphere,
# for the shipped model, each fitted to the point cloud. Settings are read on unseen procedural shapes (the
# builder's test split, which no scoring of the targets uses) and reported on the Sweet Home 3D held-out shapes
# rendered three ways. Carry .whl and the packs (pack folders only) of .data/single_view_proc_test,
# .data/single_view_test, .data/single_view_robust_augment and .data/single_view_robust_out-of-range; move
# assets/priors, assets/pointe and bench/results' pictures out for the call.
# ARMS: "name:mesh_from:steps:recall:reg ..."; FINAL: arm names also scored on the augment and out-of-range renders;
# HELDOUT=0: the procedural shapes only. A cubified mesh is fitted alone: about 0.8 s an image on an H200.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s); mkdir -p $OUT/s
COMMON="--device cuda --checkpoint assets/single_view/model --eval-views 2 --mirror-heads points --voxel-threshold 0.7 --mesh-fit-lr 0.002"
for arm in ${ARMS:-ico:icosphere:100:4:0.3 vox:voxels:100:4:0.3}; do
  IFS=: read name from steps recall reg <<< "$arm"
  [ $(( $(date +%s) - S )) -gt ${BUDGET:-480} ] && { echo "budget spent before $name"; break; }
  FIT="--mesh-from $from --mesh-fit-steps $steps --mesh-fit-recall $recall --mesh-fit-reg $reg"
  python3 bench/single_view_eval.py robustness $COMMON $FIT --packs procedural=.data/single_view_proc_test/pack \
    --max-shapes ${PROC_SHAPES:-100} --json $OUT/s/proc_$name.json > $OUT/s/log_proc_$name.txt 2>&1
  [ "${HELDOUT:-1}" = 0 ] && { echo "$name done at $(( $(date +%s) - S )) s"; grep "^| " $OUT/s/log_proc_$name.txt | tail -1; continue; }
  PACKS="default=.data/single_view_test/pack"
  [[ " $FINAL " == *" $name "* ]] && PACKS="$PACKS augment=.data/single_view_robust_augment/pack out-of-range=.data/single_view_robust_out-of-range/pack"
  python3 bench/single_view_eval.py robustness $COMMON $FIT --packs $PACKS --json $OUT/s/heldout_$name.json \
    > $OUT/s/log_heldout_$name.txt 2>&1
  echo "$name done at $(( $(date +%s) - S )) s"; grep "^| " $OUT/s/log_proc_$name.txt | tail -1; grep "^| " $OUT/s/log_heldout_$name.txt | tail -3
done
(cd $OUT && tar cf results.tar s && rm -r s)
echo "all done at $(( $(date +%s) - S )) s"
