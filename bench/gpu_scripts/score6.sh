#!/bin/bash
# Issue 21: the shipped model and the candidate (both render sets, decayed regularisers, 6000 steps) on the held-out
# shapes rendered three ways, with and without test-time mirroring and mesh fitting.
# Run on the GPU machine from the repository root with the packs carried (.data/single_view{,_augment,_robust_out-of-range}/pack;
# score6.sh: .data/single_view_test/pack, .data/gpu_eval/augment (the augmented pack's held-out entries) and the candidate).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"
S=$(date +%s); mkdir -p $OUT/s
C=.data/sv_candidates/both_regend01_6000_h200/model
PACKS="default=.data/single_view_test/pack augment=.data/gpu_eval/augment out-of-range=.data/single_view_robust_out-of-range/pack"
rob() { name=$1; ck=$2; shift 2; python3 bench/single_view_eval.py robustness --device cuda --checkpoint $ck --packs $PACKS \
  --eval-views 2 --json $OUT/s/rob_$name.json "$@" > $OUT/s/log_rob_$name.txt 2>&1; echo "$name $(( $(date +%s) - S )) s"; tail -6 $OUT/s/log_rob_$name.txt; }
rob shipped_plain assets/single_view/model --mirror-heads ''
rob shipped_points assets/single_view/model
rob shipped_both assets/single_view/model --mirror-heads voxels,points
rob cand_plain $C --mirror-heads ''
rob cand_both $C --mirror-heads voxels,points
rob cand_both_fit100r3 $C --mirror-heads voxels,points --mesh-fit-steps 100 --mesh-fit-recall 3
rob cand_both_fit100r6 $C --mirror-heads voxels,points --mesh-fit-steps 100 --mesh-fit-recall 6
rob cand_both_fit200r3 $C --mirror-heads voxels,points --mesh-fit-steps 200 --mesh-fit-recall 3
(cd $OUT && tar cf results.tar s && rm -r s)
echo "all done at $(( $(date +%s) - S )) s"; ls -la $OUT
