#!/bin/bash
# A new single-view model changes the 'sv' grid the embedded Point-E base reads: the shipped base (v5) adapted to the
# new encoder's features (`--init assets/pointe/base`, MINUTES of v5's recipe), then scored as v5 was
# (results/pointe_quality_h200_sv.json) beside the new single-view model's point head; SEEDS='1 2' samples again. The
# base comes back as base.tar. Needs the new model in
# assets/single_view/model and `python bench/prepare_data.py pointe` (carry .data/pointe/pointe_2048_renders.npz and
# .whl; move assets/priors out for the call: the tree then travels at about 55 MB).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit
export PYTHONUNBUFFERED=1
S=$(date +%s)
D=.data/pointe/pointe_2048_renders.npz
python3 -m pipelines pointe train base --data $D --cond grid --grid sv --init assets/pointe/base --out runs/base_sv \
  --minutes ${MINUTES:-3.5} --lr ${LR:-3e-4} --device cuda --export $OUT/base > $OUT/log_pointe_train.txt 2>&1
tail -2 $OUT/log_pointe_train.txt; echo "trained at $(( $(date +%s) - S )) s"
mkdir -p runs/pointe && cp -r $OUT/base assets/pointe/upsample runs/pointe/
python3 bench/pointe_quality.py --precomputed --models runs/pointe --data $D --tag h200_sv_init \
  --out $OUT/pointe_quality_h200_sv_init.json > $OUT/log_pointe_quality.txt 2>&1
tail -12 $OUT/log_pointe_quality.txt; echo "done at $(( $(date +%s) - S )) s"
for seed in ${SEEDS:-}; do  # sampling noise: the same models at other seeds, without P-FID and the single-view rows
  python3 bench/pointe_quality.py --precomputed --models runs/pointe --data $D --tag h200_sv_init_seed$seed --seed $seed \
    --pointnet-steps 0 --single-view '' --out $OUT/pointe_quality_h200_sv_init_seed$seed.json > /tmp/log_seed$seed.txt 2>&1
  grep "embedded" /tmp/log_seed$seed.txt; cat /tmp/log_seed$seed.txt >> $OUT/log_pointe_quality.txt
  echo "seed $seed done at $(( $(date +%s) - S )) s"
done
# one file for the base: the tool returns at most 8 files
tar -C $OUT -cf $OUT/base.tar base && rm -r $OUT/base
