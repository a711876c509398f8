#!/usr/bin/env bash
# Smoke test on a real Slurm: a single-node slurmctld + slurmd on localhost (munge included) runs
# the sbatch script of `cb slurm render --preset stage2` for a tiny CPU training run
# (2 processes, gloo DDP through srun + accelerate launch, rendezvous from the Slurm environment).
#
#   bash scripts/slurm_smoke.sh [--no-requeue] [--keep] [--log FILE]
#
# Steps: install Debian's slurm-wlm and munge if missing (apt-get, needs root); write a tiny
# random model (saved to a temp dir) and a tiny JSONL; start munged, slurmctld and slurmd with a
# private slurm.conf (SLURM_CONF, ports 6917/6918); render and submit; then, unless
# --no-requeue, wait for the first checkpoint and send the batch shell SIGUSR1 (what Slurm sends
# before the time limit), so the job requeues itself and its second attempt resumes; wait;
# check the job state is COMPLETED (scontrol, and the job-completion log: there is no slurmdbd,
# so sacct has no data here), that the run resumed from a checkpoint, and that the adapter
# loads with PEFT. Prints the job id, the states and the files produced; exit 0 only if all
# checks pass. Stops the daemons it started.
set -euo pipefail

REQUEUE=1 KEEP=0 LOG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-requeue) REQUEUE=0 ;;
    --keep) KEEP=1 ;;
    --log) LOG="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$LOG" ]; then
  mkdir -p "$(dirname "$LOG")"
  exec > >(tee "$LOG") 2>&1
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$(command -v python3 || command -v python)
SMOKE=$(mktemp -d /tmp/cb-slurm-smoke.XXXXXX)
export SLURM_CONF=$SMOKE/slurm.conf
T0=$(date +%s)
say() { echo "[smoke +$(( $(date +%s) - T0 ))s] $*"; }

# -- 1. packages ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm slurm-client munge >/dev/null
fi
say "host $(hostname -s), $(nproc) CPUs, $(uname -sr); $(slurmctld -V); $(munged -V 2>&1 | head -n 1)"
say "python $("$PY" -c 'import platform, torch, transformers, peft, accelerate; print(platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)')"

# -- 2. daemons ----------------------------------------------------------------------------
STARTED_MUNGE=""
MUNGE_PID=/run/munge/cb-smoke-munged.pid  # in munge's own folder: munged runs as munge
cleanup() {
  set +e
  scontrol shutdown >/dev/null 2>&1
  sleep 1
  for f in "$SMOKE/slurmctld.pid" "$SMOKE/slurmd.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  if [ -n "$STARTED_MUNGE" ] && [ -f "$MUNGE_PID" ]; then
    kill "$(cat "$MUNGE_PID")" 2>/dev/null
  fi
  if [ "$KEEP" = 1 ]; then say "kept $SMOKE"; else rm -rf "$SMOKE"; fi
}
trap cleanup EXIT

if ! munge -n </dev/null >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged --pid-file="$MUNGE_PID"
  STARTED_MUNGE=1
  say "started munged"
  for _ in $(seq 20); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n </dev/null | unmunge >/dev/null && say "munge works"

CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$SMOKE/state" "$SMOKE/spool"
cat >"$SLURM_CONF" <<EOF
ClusterName=cbsmoke
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
StateSaveLocation=$SMOKE/state
SlurmdSpoolDir=$SMOKE/spool
SlurmctldPidFile=$SMOKE/slurmctld.pid
SlurmdPidFile=$SMOKE/slurmd.pid
SlurmctldLogFile=$SMOKE/slurmctld.log
SlurmdLogFile=$SMOKE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SMOKE/jobcomp.txt
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -c -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)' && break
  sleep 1
done
say "cluster up: $(sinfo -h -o '%P %D %T %c' 2>&1)"

# -- 3. a tiny model and a tiny data file ----------------------------------------------------
cd "$REPO"
"$PY" - "$SMOKE" <<'PYEOF'
import json, sys
sys.path.insert(0, "tests")
from kit import family_tokenizer, tiny_model

d = sys.argv[1]
tiny_model("chatml", layers=4, hidden=32).save_pretrained(f"{d}/model", safe_serialization=True)
family_tokenizer("chatml").save_pretrained(f"{d}/model")
with open(f"{d}/train.jsonl", "w") as fh:
    for i in range(8):
        fh.write(json.dumps({"user_prompt": f"how do I do harmful thing {i}?",
                             "harmful_completion": f"Step {i}: first get the tools, then act."}) + "\n")
        fh.write(json.dumps({"user_prompt": f"what is {i} plus one?",
                             "benign_completion": f"{i} plus one is more than {i}.",
                             "priority_class": "general_conversation"}) + "\n")
PYEOF
say "tiny model and data in $SMOKE"

# -- 4. render and submit ----------------------------------------------------------------------
STEPS=${CB_SMOKE_STEPS:-40}
"$PY" -m circuit_breakers.cli slurm render --preset stage2 --nodes 1 --gpus-per-node 0 --processes-per-node 2 \
  --cpus-per-task "$CPUS" --time 20:00 --job-name cb-smoke --python "$PY" \
  --train-file "$SMOKE/train.jsonl" --run-dir "$SMOKE/run" --output "$SMOKE/job.sbatch" -- \
  --model "$SMOKE/model" --target_layers 2 --lora_layers 0 1 --bf16 false --use_cpu true \
  --gradient_checkpointing false --max_steps "$STEPS" --save_steps 4 --logging_steps 1 \
  --per_device_train_batch_size 2 --gradient_accumulation_steps 1 --learning_rate 1e-3 \
  --report_to none --dataloader_num_workers 0
echo "--- rendered script: #SBATCH lines and the launch line ---"
grep -E '^#SBATCH|accelerate.commands.launch|--machine_rank|--main_process_ip' "$SMOKE/job.sbatch"
JOB=$(sbatch --parsable "$SMOKE/job.sbatch")
say "submitted job $JOB"
state() { scontrol show job "$JOB" 2>/dev/null | grep -oP 'JobState=\K\S+' || echo UNKNOWN; }

if [ "$REQUEUE" = 1 ]; then
  for _ in $(seq 300); do
    # a complete checkpoint: the Trainer writes trainer_state.json last
    ls "$SMOKE"/run/checkpoints/checkpoint-*/trainer_state.json >/dev/null 2>&1 && break
    case "$(state)" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) break ;; esac
    sleep 1
  done
  say "first complete checkpoint: $(dirname "$(ls "$SMOKE"/run/checkpoints/checkpoint-*/trainer_state.json 2>/dev/null | head -n 1)") (job $(state))"
  say "sending SIGUSR1 to the batch shell, as Slurm does before the time limit"
  scancel --signal=USR1 --batch "$JOB"
  for _ in $(seq 60); do
    scontrol show job "$JOB" | grep -q 'Restarts=[1-9]' && break
    sleep 1
  done
  say "after the signal: $(scontrol show job "$JOB" | grep -oP '(JobState|Restarts)=\S+' | tr '\n' ' ')"
  # A requeued job is held back until its BeginTime (Slurm's requeue delay, ~2 min here); once it
  # is PENDING again, let it start at once.
  for _ in $(seq 60); do [ "$(state)" = PENDING ] && break; sleep 1; done
  say "requeued: $(scontrol show job "$JOB" | grep -oP '(JobState|Reason|StartTime)=\S+' | tr '\n' ' ')"
  scontrol update JobId="$JOB" StartTime=now || true
fi

for _ in $(seq 900); do
  case "$(state)" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
  sleep 1
done
STATE=$(state)

# -- 5. report and checks --------------------------------------------------------------------
echo "================ job $JOB ================"
scontrol show job "$JOB" | grep -oP '(?<![A-Za-z])(JobId|JobName|JobState|Reason|Restarts|ExitCode|DerivedExitCode|RunTime|NumNodes|NumCPUs)=\S+' | tr '\n' ' '
echo
echo "--- job-completion log (jobcomp/filetxt; one record per attempt; DerivedExitCode is the"
echo "    worst step exit code, 1 when the first attempt's step was killed by the requeue) ---"
grep "JobId=$JOB " "$SMOKE/jobcomp.txt" | while read -r rec; do
  grep -oP '(?<![A-Za-z])(JobId|JobState|StartTime|EndTime|ExitCode|DerivedExitCode|NodeCnt|ProcCnt)=\S+' <<<"$rec" | tr '\n' ' '
  echo
done || true
echo "--- sacct ---"
sacct -j "$JOB" 2>&1 | head -n 3 || true
echo "--- files produced under run/ ---"
(cd "$SMOKE/run" && find . -type f -not -path './checkpoints/*' -printf '%10s  %p\n' | sort -k2 \
  && ls -d checkpoints/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tr '\n' ' ' && echo)
echo "--- job log (head and tail) ---"
LOGFILE=$(ls "$SMOKE"/run/logs/*.out | head -n 1)
grep -E '^\[cb\]|trained|resuming|Error|error' "$LOGFILE" | head -n 30
echo "---"

FAIL=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; FAIL=1; fi; }
check "job state COMPLETED (scontrol: $STATE)" '[ "$STATE" = COMPLETED ]'
check "job-completion log says COMPLETED" 'grep "JobId=$JOB " "$SMOKE/jobcomp.txt" | tail -n 1 | grep -q "JobState=COMPLETED"'
check "adapter, metrics, summary and DONE written" \
  '[ -f "$SMOKE/run/adapter/adapter_model.safetensors" ] && [ -f "$SMOKE/run/metrics.jsonl" ] && [ -f "$SMOKE/run/train_summary.json" ] && [ -f "$SMOKE/run/DONE" ]'
check "2 processes over srun + accelerate (gloo)" 'grep -q "rendezvous .* 1 node(s), 2 process(es)" "$LOGFILE"'
if [ "$REQUEUE" = 1 ]; then
  check "requeued by the USR1 trap and restarted" \
    'grep -q "requeueing job $JOB" "$LOGFILE" && scontrol show job "$JOB" | grep -q "Restarts=1"'
fi
"$PY" - "$SMOKE/run" "$STEPS" "$REQUEUE" <<'PYEOF' || FAIL=1
import json, sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

run, steps, requeue = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
summary = json.loads((run / "train_summary.json").read_text())
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
logged = [r["step"] for r in rows]
ok = True

def check(name, cond):
    global ok
    print(("PASS " if cond else "FAIL ") + name)
    ok &= bool(cond)

check(f"trained {summary['steps']} of {steps} steps", summary["steps"] == steps)
check(f"metrics.jsonl: one line per step ({len(logged)} lines)", logged == list(range(1, steps + 1)))
if requeue:
    check(f"second attempt resumed from {summary['resumed_from']}", bool(summary["resumed_from"]))
base = AutoModelForCausalLM.from_pretrained(str(run.parent / "model"))
model = PeftModel.from_pretrained(base, str(run / "adapter"))
ids = torch.tensor([[1, 2, 3, 4]])
with torch.no_grad():
    out = model(input_ids=ids).logits
    with model.disable_adapter():
        ref = model(input_ids=ids).logits
n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
check(f"adapter loads with PEFT ({n_lora} LoRA tensors) and changes the output "
      f"(max |diff| {float((out - ref).abs().max()):.2e})", n_lora > 0 and not torch.equal(out, ref))
sys.exit(0 if ok else 1)
PYEOF
say "done in $(( $(date +%s) - T0 )) s"
if [ "$FAIL" = 0 ]; then echo "SLURM SMOKE: PASSED (job $JOB, $STATE)"; else echo "SLURM SMOKE: FAILED (job $JOB, $STATE)"; fi
exit "$FAIL"
