#!/usr/bin/env bash
# Run the studies behind the results pages one run at a time, resumably, in the background:
#   nice -n 10 bash studies/run_queue.sh QUEUE_FILE [WORK_DIR]
# QUEUE_FILE: one "STUDY_FILE VARIANT SEED" per line, in the order to run. Each run writes into WORK_DIR
# (default runs/queue: outside results/, so an unfinished run never enters the pages) with a checkpoint,
# continues there with --resume after an interruption, and is copied into results/ once complete. A run
# whose file is already in results/ is skipped. One thread per run (OMP_NUM_THREADS=1): run two queues
# side by side on a 2-core machine.
# Every run file records the commit of the gradlab it ran (git_commit, "+dirty" with uncommitted changes),
# so run the queue from a clean checkout that nobody edits while it runs, e.g. a worktree of the study
# commit (git worktree add --detach ../study-tree HEAD; ln -s "$PWD/.venv" ../study-tree/.venv), and copy
# the finished files from its results/ into the working tree. The queue imports gradlab from its own
# checkout (PYTHONPATH), and refuses to start in a tree with uncommitted changes to tracked files.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "run_queue.sh: $PWD has uncommitted changes, which every run file would record as +dirty; commit" \
         "them or run the queue from a clean worktree" >&2
    exit 2
fi
QUEUE=$1
WORK=${2:-runs/queue}
mkdir -p "$WORK" results
export OMP_NUM_THREADS=1
while read -r study variant seed; do
    [ -z "${study:-}" ] || [ "${study:0:1}" = "#" ] && continue
    stem=$(basename "$study" .toml)
    done_file="results/${stem}-${variant}-s${seed}.h5"
    [ -f "$done_file" ] && continue
    echo "$(date -u +%FT%TZ) start $stem $variant s$seed (load $(cut -d' ' -f1 /proc/loadavg))"
    if .venv/bin/gradlab run "$study" --variant "$variant" --seeds "$seed" --out "$WORK/${stem}.h5" --resume --quiet; then
        cp "$WORK/${stem}-${variant}-s${seed}.h5" "$done_file"
        echo "$(date -u +%FT%TZ) done $done_file"
    else
        echo "$(date -u +%FT%TZ) FAILED $stem $variant s$seed" >&2
    fi
done < "$QUEUE"
