"""jmf against its PyTorch peers, in one process: the JMF-CNN step and the LM encoder (each timed interleaved with
its peer; ratios > 1 mean jmf is faster).

    python benchmarks/peers.py --quick     # JMF-CNN at 10^5 users (3 rounds of 4 steps) and 64 ML-100k texts (~5 min idle)
    python benchmarks/peers.py             # JMF-CNN and JMF-Transformer at 10^5 users, all ML-100k and 1,000 Ciao texts

The parts are ``benchmarks/jmf_peer.py`` (the JMF steps written in PyTorch, same shapes, losses, optimisers,
batches and initial parameters) and ``benchmarks/lm_peer.py`` (the LM encoder, length-bucketed, against
``transformers.AutoModel`` called as a user would: batches in the data's order, padded to their longest); their
own commands write the full tables.  The last two lines printed are the interface::

    jmf_step_vs_torch=<examples/s ratio, JMF-CNN at 10^5 users>
    lm_vs_torch=<texts/s ratio on ML-100k's behaviour texts>

Writes ``benchmarks/results/peers[_quick].{md,csv,json}``.
"""

from __future__ import annotations

import argparse

from common import data_dir, markdown_table, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short settings of both parts")
    parser.add_argument("--cache", default="/tmp/jmf_bench", help="engine_speed's split cache")
    args = parser.parse_args()
    data_dir()
    import jmf_peer
    import lm_peer

    models = ("jmf-cnn",) if args.quick else jmf_peer.MODELS
    step_rows = jmf_peer.measure(100_000, args.quick, models, args.cache)
    cnn = next(r for r in step_rows if r["model"] == "jmf-cnn")
    lm_rows, lm_ratio = lm_peer.measure(args.quick)
    rows = [{"part": f"{r['model']} step, {r['users']} users", "jmf": r["jmf examples/s"],
             "torch": r["torch examples/s"], "unit": "examples/s", "ratio": r["ratio"]} for r in step_rows]
    rows += [{"part": "LM encoder, ML-100k texts (peer in data order, padded to the batch's longest)",
              "unit": "texts/s", "ratio": round(lm_ratio, 2)}]
    write_results("peers_quick" if args.quick else "peers", markdown_table(rows, ["part", "jmf", "torch", "unit",
                                                                               "ratio"], digits=2), rows,
                  {"jmf_peer": step_rows, "lm_peer": lm_rows})
    print(f"jmf_step_vs_torch={cnn['ratio']:.2f}")
    print(f"lm_vs_torch={lm_ratio:.2f}")


if __name__ == "__main__":
    main()
