# Sourced by the GPU scripts: build_procedural ROOT [build options] builds every procedural training shape on this
# machine's cores into ROOT (at most BUILD_SECONDS, default 200; the pack then holds what was built) and packs it.
# BUILD_SOURCES (default procedural) builds other sources alike, e.g. procedural,zeroad: one pack each.
build_procedural() {
  local root=$1; shift
  timeout ${BUILD_SECONDS:-200} python3 -m pipelines single_view data build --sources ${BUILD_SOURCES:-procedural} --split train \
    --workers $(( $(nproc) - 1 )) --root $root "$@" > $OUT/log_build.txt 2>&1
  # a finished build packs itself; one cut by the timeout is packed here (every source, what was built)
  [ $? -eq 0 ] || python3 -m pipelines single_view data pack --root $root >> $OUT/log_build.txt 2>&1
  tail -2 $OUT/log_build.txt
}
