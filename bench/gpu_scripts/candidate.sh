#!/bin/bash
# Issue 21: the candidate model. Sweet Home 3D furniture in both render sets (carried: the default and augmented
# packs) beside every procedural training shape (1776 in the 10-kind catalog of its run on 2026-12-03, 2501 in the
# 14-kind one since; built here on the machine's cores with the augmented renders: the three packs do not fit in one
# carry), the recall-weighted recipe (weight 3, regularisers decayed to 0.1x), STEPS steps (several values train side
# by side on the one GPU); scored by training itself on the furniture's held-out views of both render sets; each int8
# model comes back as a tar in 15 MiB parts (model_STEPS.tar.*: `cat` them and untar).
# ARMS: one arm a line, "NAME STEPS [more single_view flags]", side by side (model_NAME.tar.*); STEPS alone is
# the same with each step count its own arm.
# Carried .data/zeroad_props.zip and .data/sh3d_default.jar (bench/prepare_data.py) add 0 A.D.'s props and Sweet
# Home 3D's own catalog, built here beside the procedural shapes.
# PROC=.data/... builds into a git-ignored folder of the tree, which the machine keeps while it stays warm: then
# BUILD_ONLY=1 in one call and the training in the next gives the build its own 600 s (it is rebuilt if gone).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"; nproc
S=$(date +%s)
P=${PROC:-/tmp/single_view_procedural_augment}
# carried archives (bench/prepare_data.py zeroad-props, sh3d-default-jar): their shapes built here too; without the
# archive, a pack the last call built is still trained on
BUILD=procedural; SOURCES=sh3d,procedural
carried() {  # SOURCE ARCHIVE DEBIAN_PATH
  if [ -s "$2" ]; then mkdir -p "$(dirname "$3")" && ln -sf "$PWD/$2" "$3"; BUILD=$BUILD,$1; SOURCES=$SOURCES,$1
  elif [ -f "$P/pack/$1.npz" ]; then SOURCES=$SOURCES,$1; fi
}
carried zeroad .data/zeroad_props.zip /usr/share/games/0ad/mods/public/public.zip  # 0 A.D.'s props
carried sh3d-default .data/sh3d_default.jar /usr/share/sweethome3d/sweethome3d.jar  # Sweet Home 3D's own catalog
export BUILD_SOURCES=$BUILD; echo "sources $SOURCES (built here: $BUILD)"
if [ -z "$(for s in ${BUILD//,/ }; do [ -f $P/pack/$s.npz ] || echo missing; done)" ]; then echo "packs kept from the last call: $(du -sh $P/pack)"
else source bench/gpu_scripts/build_procedural.sh; build_procedural $P --render augment --render-seed 0; fi
echo "built at $(( $(date +%s) - S )) s"; [ -n "$BUILD_ONLY" ] && exit
[ -n "$ARMS" ] || ARMS=$(for s in ${STEPS:-6000}; do echo "$s $s"; done)
N=$(echo "$ARMS" | grep -c .)
while read -r name steps flags; do
  [ -n "$name" ] || continue  # a blank line of ARMS
  OMP_NUM_THREADS=$(( $(nproc) / N )) python3 -m pipelines single_view --preset gpu \
    --data .data/single_view/pack,.data/single_view_augment/pack,$P/pack --sources $SOURCES --eval-sources sh3d \
    --steps $steps --max-seconds ${TRAIN_SECONDS:-230} --mesh-reg-end 0.1 --mesh-recall-weight 3 --eval-views 2 \
    --preview-every 1000000000 $flags --out-dir runs/candidate_$name > $OUT/log_train_$name.txt 2>&1 &
done <<< "$ARMS"
wait
for name in $(echo "$ARMS" | awk 'NF {print $1}'); do
  echo "== $name"; grep -E "training shapes|stopped|voxels_iou|points_f1@0.05|mesh_f1@0.05|Error|error" $OUT/log_train_$name.txt | tail -6
  tar -C runs/candidate_$name -cf - model | split -b 15M - $OUT/model_$name.tar.
done
ls -la $OUT; echo "done at $(( $(date +%s) - S )) s"
