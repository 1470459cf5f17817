#!/usr/bin/env bash
# Run the studies behind the results pages one run at a time, resumably, in the background:
#   nice -n 10 bash studies/run_queue.sh QUEUE_FILE [WORK_DIR]
# QUEUE_FILE: one "STUDY_FILE VARIANT SEED" per line, in the order to run. Each run writes into WORK_DIR
# (default runs/queue: outside results/, so an unfinished run never enters the pages) with a checkpoint,
# continues there with --resume after an interruption, and is copied into results/ once complete. A run
# whose file is already in results/ is skipped. One thread per run (OMP_NUM_THREADS=1): run two queues
# side by side on a 2-core machine.
set -uo pipefail
cd "$(dirname "$0")/.."
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
