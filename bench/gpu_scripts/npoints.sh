#!/bin/bash
# Issue 21: does a denser point head (n_points 2048, 4096 once mirrored) raise the points' F1 by recall without
# losing precision? The candidate's recipe (lifted voxel decoder, averaged weights, recall weight 3, regularisers
# decayed to 0.1x) on both Sweet Home 3D render sets (carried), n_points 1024 against 2048, side by side on the one
# GPU, same seed and clock; scored by training itself on both render sets' held-out views (points mirrored). Each
# int8 model comes back as a tar in 15 MiB parts (model_NAME.tar.*: `cat` them and untar).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s)
for n in 1024 2048; do
  OMP_NUM_THREADS=$(( $(nproc) / 2 )) python3 -m pipelines single_view --preset gpu --n-points $n \
    --data .data/single_view/pack,.data/single_view_augment/pack --eval-sources sh3d --voxel-decoder lifted \
    --ema-decay 0.999 --steps ${STEPS:-6000} --max-seconds ${TRAIN_SECONDS:-380} --mesh-reg-end 0.1 \
    --mesh-recall-weight 3 --eval-views 2 --preview-every 1000000000 --out-dir runs/npoints_$n > $OUT/log_$n.txt 2>&1 &
done
wait
for n in 1024 2048; do
  echo "== n_points $n"; grep -E "training shapes|stopped|voxels_iou|points_f1@0.05|mesh_f1@0.05|Error|error" $OUT/log_$n.txt | tail -6
  tar -C runs/npoints_$n -cf - model | split -b 15M - $OUT/model_$n.tar.
done
echo "done at $(( $(date +%s) - S )) s"
