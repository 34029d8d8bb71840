#!/usr/bin/env bash
# The long benchmark rows still to run, in order, in two lanes (one per core):
#
#     bash benchmarks/queue.sh tables     # lane 1: the audited cross-category tables (issue 34)
#     bash benchmarks/queue.sh rows       # lane 2: the model rows of issues 30 and 35
#
# Every command is `benchmarks/cold_start.py --resume`: a finished (task, model, seed) run already in its results
# file is kept, a run whose folder holds checkpoints continues exactly, and each run's row is written as it ends,
# so the same command after a stop (or on a fresh machine, whose git-ignored run folders are gone) goes on from
# the last finished run.  The two lanes write different results files.  Copy the results files and the new
# `benchmarks/results/per_user/` files into the checkout you commit from, then `python benchmarks/render_docs.py`.
# Settings live in experiments/ (the rows) and benchmarks/cold_start.py's TASKS; nothing here but the order.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
run() { "$PY" benchmarks/cold_start.py --resume --seeds 0 1 2 "$@"; }

AUDITED=(pop cooc "mf (target-only)" "mf (tuned)" cmf "cmf (tuned)" emcdr "emcdr (tuned)" ptupcdr "ptupcdr (tuned)"
         lightgcn "lightgcn (tuned)" jmf-nb jmf-items jmf-graph-nb jmf-graph-items jmf-cnn "jmf-cnn (tuned)"
         jmf-transformer jmf-graph "jmf-cnn+nb (tuned)")
# the CDRIB pairs' rows but the graph models (lane 2 runs CDRIB itself); of the CDRIB family's searches only cmf's and
# lightgcn's ran (search_cdrib), so only they have tuned rows
CDRIB=(pop cooc "mf (target-only)" cmf "cmf (tuned)" emcdr ptupcdr lightgcn "lightgcn (tuned)" "lightgcn (merged)"
       jmf-cnn jmf-transformer jmf-graph jmf-cnn+nb jmf-nb jmf-items jmf-graph-nb jmf-graph-items)

case "${1:-}" in
  tables)
    for task in amazon-sport amazon-cloth; do
      run --tasks "$task" --name cold_start_amazon_audited --models "${AUDITED[@]}"
    done
    for task in cdrib-sport cdrib-cloth; do
      run --tasks "$task" --name cold_start_cdrib_audited --models "${CDRIB[@]}"
    done
    ;;
  rows)
    for task in amazon-sport amazon-cloth; do        # the Amazon family's retuned graph-items row (63c47ce)
      run --tasks "$task" --name cold_start_amazon_retuned --models "jmf-graph-items (tuned)"
    done
    for task in amazon-phone amazon-elec amazon-phone-bitgcf amazon-sport amazon-cloth; do
      run --tasks "$task" --name cold_start_bitgcf --models bitgcf
    done
    for task in amazon-phone amazon-sport; do        # one run trains both sides: its mirror task's row too
      run --tasks "$task" --name cold_start_disencdr --models disencdr
    done
    run --tasks cdrib-sport --name cold_start_cdrib_rows --models cdrib
    ;;
  *)
    echo "usage: bash benchmarks/queue.sh tables|rows" >&2
    exit 2
    ;;
esac
