#!/usr/bin/env bash
# The Qwen2.5-Coder-0.5B efficacy benchmark on a lent GPU machine (no network; it keeps /tmp
# only while it stays warm, so the calls go back to back). Each call is one of:
#   bash scripts/device_efficacy.sh chunk N      write .carry/chunk as chunk N of the tar (device_pack.sh)
#   bash scripts/device_efficacy.sh run SHA256   unpack once, then resume the plan below
#   bash scripts/device_efficacy.sh adapter SEED [RUNS]  seed SEED's trained adapter (of RUNS/,
#                                                default runs/) to $OUT in 15 MiB
#                                                pieces (a returned file is <= 16 MiB); join here
#                                                with cat adapter_seedSEED.tar.* | tar -x
# The plan, each step skipped once done, all under /tmp/cbw (resumable across calls):
#   1. cb data build --recipe qwen                          -> data/
#   2. demo_sweep.py: CB_GRID (benchmarks/sweeps/qwen_round1.yaml), training seed CB_SWEEP_SEED (0),
#      three suites, --pick
#      (skipped with CB_NO_SWEEP=1: the preset as it is, plus CB_SETS="key=value ..."; with
#      CB_SWEEP_PAR=1 every grid run in its own process at once, then merged and picked)
#   3. efficacy.py --model qwen2.5-coder-0.5b, seeds CB_SEEDS (0,1,2), CB_JOBS (3) at once, the
#      picked overrides, shared base; with CB_RECIPES="a b" (and CB_NO_SWEEP=1) one such run per
#      name at the same time, each with its own CB_SETS_<name>, in runs_<name>/ ->
#      efficacy_<name>.json (default: one run in runs/ -> efficacy_qwen.json)
#   4. with CB_ATTACKS="ARGS": benchmarks/attacks.py ARGS on harmful_text, base (beside step 3)
#      vs seed CB_ATTACK_SEED (0), each method in its own process
# Results are copied to $OUT after every call, finished or not.
set -uo pipefail
W=/tmp/cbw
mkdir -p "$W"
deadline=$(( $(date +%s) + ${CB_DEVICE_SECONDS:-550} ))
left() { local n=$(( deadline - $(date +%s) )); echo $(( n > 1 ? n : 1 )); }  # timeout 0 = none

collect() {
  [ -n "${OUT:-}" ] || return 0
  cp "$W"/efficacy_*.json "$W"/sweep_qwen1.json "$W"/pick.json "$W"/attacks_qwen.json "$OUT"/ 2>/dev/null
  cp "$W"/data/stats.json "$OUT"/data_stats.json 2>/dev/null
  [ -f "$W/data/stats.json" ] && tar -C "$W" -czf "$OUT/data.tgz" data 2>/dev/null
  (cd "$W" && tar -czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='checkpoints' \
      --exclude='train.jsonl' runs* sweep/*/metrics.jsonl sweep/*/eval/samples.jsonl attacks logs 2>/dev/null)
  true
}

case "${1:-}" in
chunk)  # chunk N: written at its own offset, so a resent or reordered chunk lands right
  dd if=.carry/chunk of="$W/blob.tar" bs=1M seek=$(( 10#${2:?chunk index} * ${CHUNK_MIB:-58} )) \
    conv=notrunc status=none && stat -c '%s bytes so far' "$W/blob.tar"
  exit ;;
adapter)  # adapter SEED [RUNS_DIR]
  a="$W/${3:-runs}/seed${2:?seed}/train/adapter"
  [ -d "$a" ] || { echo "no adapter at $a" >&2; exit 2; }
  tar -C "$W/${3:-runs}/seed$2/train" -cf - adapter | split -b 15m -d -a 1 - "$OUT/adapter_seed$2.tar."
  (cd "$OUT" && sha256sum adapter_seed"$2".tar.* && cat adapter_seed"$2".tar.* | sha256sum)
  exit ;;
run) want=${2:?sha256 of the tar} ;;
*) echo "usage: $0 chunk N | run SHA256 | adapter SEED" >&2; exit 2 ;;
esac

if [ ! -f "$W/unpacked" ]; then
  got=$(sha256sum "$W/blob.tar" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then echo "tar sha256 $got, expected $want" >&2; exit 3; fi
  tar -xf "$W/blob.tar" -C "$W" && rm -f "$W/blob.tar" && touch "$W/unpacked"
fi
mark="$W/pylib/.done-$(ls .whl | md5sum | cut -c1-8)"
if [ ! -f "$mark" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$W/pylib" .whl/*.whl && touch "$mark" || exit 4
fi
export PYTHONPATH="$W/pylib:$W/site:$PWD/src" CB_CACHE="$W/cache" PYTHONUNBUFFERED=1 \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$W/logs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

step() {  # step NAME DONE_FILE CMD...: run CMD (with the time left) unless DONE_FILE exists
  local name=$1 done=$2; shift 2
  [ -e "$done" ] && { echo "== $name: done before"; return 0; }
  echo "== $name ($(left) s left)"
  timeout "$(left)" "$@" 2>&1 | tee -a "$W/logs/$name.log" | grep -vE '^\s*$|it/s\]|s/it\]'
  [ -e "$done" ]
}

if [ -n "${CB_DATA:-}" ]; then  # a data build that travelled in the tar (device_pack.sh DATA_DIR=)
  ln -sfn "$W/$CB_DATA" "$W/data"
else
  step data "$W/data/stats.json" \
    python3 -m circuit_breakers.cli data build --recipe qwen --output-dir "$W/data" || { collect; exit 1; }
fi
grid=${CB_GRID:-benchmarks/sweeps/qwen_round1.yaml}
sweep_args="benchmarks/demo_sweep.py --model qwen2.5-coder-0.5b --preset qwen --data-dir $W/data \
  --grid $grid --eval-config qwen --suites harmful_text,benign_text,benign_tools \
  --seed ${CB_SWEEP_SEED:-0} --work-dir $W/sweep --resume"
if [ "${CB_NO_SWEEP:-0}" = 1 ]; then
  sets=$(for kv in ${CB_SETS:-}; do printf -- '--train-set %s ' "$kv"; done)
elif [ "${CB_SWEEP_PAR:-0}" = 1 ]; then  # one demo_sweep process per grid run, then one table
  names=$(python3 -c "import sys, yaml; print(' '.join(yaml.safe_load(open(sys.argv[1]))['runs']))" "$grid")
  spids="" base="" parts=""
  mkdir -p "$W/sweep_parts"
  for n in $names; do  # the first process also evaluates the base model
    step "sweep_$n" "$W/sweep_parts/$n.done" bash -c "python3 $sweep_args --only $n $base \
        --output $W/sweep_parts/$n.json && touch $W/sweep_parts/$n.done" &
    spids="$spids $!" base="--no-base" parts="$parts $W/sweep_parts/$n.json"
  done
  wait $spids
  step sweep "$W/pick.json" python3 benchmarks/demo_sweep.py --data-dir "$W/data" --grid "$grid" \
    --merge $parts --output "$W/sweep_qwen1.json" --pick "$W/pick.json" || { collect; exit 1; }
  sets="--train-set-from $W/pick.json"
else
  step sweep "$W/pick.json" python3 $sweep_args --output "$W/sweep_qwen1.json" \
    --pick "$W/pick.json" || { collect; exit 1; }
  sets="--train-set-from $W/pick.json"
fi
attack() {  # attack METHOD [--adapter PATH]: one attack run of the benchmark, resumable
  python3 benchmarks/attacks.py --model qwen2.5-coder-0.5b --suite-file "$W/data/holdout/harmful_text.jsonl" \
    $CB_ATTACKS --methods "$@" --resume --run-dir "$W/attacks" --output "$W/attacks_$1.json"
}
attacks_bg() {  # attacks_bg VARIANT [--adapter PATH]: each method in its own background process
  local variant=$1 m; shift
  pids=""
  for m in embedding gcg; do
    echo "== attacks, $variant, $m, in the background ($(left) s left)"
    timeout "$(left)" bash -c "$(declare -f attack); W=$W CB_ATTACKS='$CB_ATTACKS' attack $m $*" \
      >> "$W/logs/attacks_${variant}_$m.log" 2>&1 &
    pids="$pids $!"
  done
}
pids=""
[ -n "${CB_ATTACKS:-}" ] && attacks_bg base  # the base model's attacks need no adapter: beside the seeds
efficacy() {  # efficacy RUNS_DIR RESULTS SETS...: one efficacy run of all seeds, resumable
  local runs=$1 results=$2; shift 2
  step "efficacy_$runs" "$W/$runs.done" bash -c "python3 benchmarks/efficacy.py --model qwen2.5-coder-0.5b \
    --seeds ${CB_SEEDS:-0,1,2} --share-base --data-dir $W/data --dtype float32 --no-progress $* ${CB_EFF_ARGS:-} \
    --jobs ${CB_JOBS:-3} --output-dir $W/$runs --results $W/$results && touch $W/$runs.done"
}
if [ -z "${CB_RECIPES:-}" ]; then
  efficacy runs efficacy_qwen.json "$sets"
  rc=$?
else
  rpids=""
  for r in $CB_RECIPES; do
    v="CB_SETS_$r"
    efficacy "runs_$r" "efficacy_$r.json" \
      "$(for kv in ${!v:-}; do printf -- '--train-set %s ' "$kv"; done)" &
    rpids="$rpids $!"
  done
  rc=0
  for p in $rpids; do wait "$p" || rc=1; done
fi
[ -n "$pids" ] && wait $pids
if [ $rc = 0 ] && [ -n "${CB_ATTACKS:-}" ]; then  # 4. the same attacks on seed CB_ATTACK_SEED, then one table
  adapter="$W/${CB_ATTACK_RUNS:-runs}/seed${CB_ATTACK_SEED:-0}/train/adapter"
  attacks_bg trained --adapter "$adapter"
  wait $pids
  step attacks "$W/attacks.done" bash -c "python3 benchmarks/attacks.py --model qwen2.5-coder-0.5b \
      --adapter $adapter --suite-file $W/data/holdout/harmful_text.jsonl \
      $CB_ATTACKS --resume --run-dir $W/attacks --output $W/attacks_qwen.json && touch $W/attacks.done"
  rc=$?
fi
collect
exit $rc
