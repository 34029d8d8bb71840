"""``jmf-recommend RUN_DIR --input history.csv --k 10 --out recs.csv [--known] [--explain]``.

* default: ``--input`` is the behaviour of users *not* in training (``user, item[, rating, timestamp]``,
  raw ids); each gets the top ``k`` CF-side items from the saved model without retraining
  (``jmf.load(RUN_DIR).recommend_new``), columns ``user, rank, item, score, fallback``;
* ``--known``: ``--input`` lists users of the run (a column ``user``); columns ``user, rank, item, score``;
* ``--explain``: also writes ``<out>.explain.csv`` (``user, item, kind, source, contribution``: how much each
  DL-side category and the top DL-side items of each user's history contributed to each recommended item),
  for new users only, and only from a model whose new-user scores move with the DL-side history
  (jmf, cooc, cmf, emcdr, ptupcdr, lightgcn_merged); any other is refused before anything is written.

Bad input -- an unknown run directory, a saved model whose files were damaged or changed since it was
saved (checked against the sha256 in model/meta.json), a file that is missing, empty or lacks a column,
ids the model does not know, --explain on a model without explanations -- is reported in one paragraph
on stderr with exit code 2 (users with no usable behaviour are not an error: they get the popularity
ranking, ``fallback = true``, and are counted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jmf-recommend", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run_dir", help="a jmf-train run directory (it holds model/)")
    parser.add_argument("--input", required=True, help="CSV of behaviour (new users) or of users (--known)")
    parser.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--known", action="store_true", help="--input lists users of the run, not new behaviour")
    parser.add_argument("--explain", action="store_true", help="also write <out>.explain.csv")
    parser.add_argument("--no-strict", action="store_true", help="load a model written by other package versions")
    args = parser.parse_args(argv)
    from jmf import compile_cache

    compile_cache.enable()
    try:
        summary = _run(args)
    except Exception as err:     # noqa: BLE001 -- user errors are printed, the rest re-raised
        from jmf.artifact import ArtifactError
        from jmf.recommend import RecommendError

        if isinstance(err, (ArtifactError, RecommendError, _InputError)):
            print(f"jmf-recommend: {err}", file=sys.stderr)
            return USER_ERROR
        raise
    print(summary)
    return 0


class _InputError(ValueError):
    pass


def _read(path: str):
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise _InputError(f"--input {path}: no such file")
    try:
        frame = pd.read_csv(file, dtype=str)
    except pd.errors.EmptyDataError:
        raise _InputError(f"--input {path}: the file is empty (expected a header line user,item[,rating,timestamp])") \
            from None
    except pd.errors.ParserError as err:
        raise _InputError(f"--input {path}: not a readable CSV ({err})") from None
    if frame.empty:
        raise _InputError(f"--input {path}: no rows after the header")
    return frame


def _run(args) -> str:
    import jmf

    frame = _read(args.input)
    if args.explain and args.known:
        raise _InputError("--explain explains recommendations to new users from their history; it cannot be "
                          "combined with --known")
    rec = jmf.load(args.run_dir, strict=not args.no_strict)
    if args.explain:                                  # refused before anything is written
        rec.check_explains(f"--explain ({args.run_dir})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.known:
        if "user" not in frame.columns:
            raise _InputError(f"--input {args.input}: --known needs a column 'user' (has {list(frame.columns)})")
        recs = rec.recommend(list(dict.fromkeys(frame["user"])), k=args.k)
        recs.to_csv(out, index=False)
        return f"wrote {len(recs)} rows for {recs['user'].nunique()} known users to {out}"
    recs = rec.recommend_new(frame, k=args.k)
    recs.to_csv(out, index=False)
    summary = (f"wrote {len(recs)} rows for {recs['user'].nunique()} new users to {out} "
               f"({recs.attrs['fallback_users']} by the popularity fallback, {recs.attrs['unknown_items']} "
               "behaviours with unknown items dropped)")
    if args.explain:
        path = out.with_suffix(".explain.csv")
        why = rec.explain(frame, k=args.k)
        why.to_csv(path, index=False)
        summary += f"; {len(why)} explanation rows for {why['user'].nunique()} users in {path}"
    return summary


if __name__ == "__main__":
    sys.exit(main())
