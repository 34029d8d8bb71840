"""Nothing a user can type ends in a traceback, a hang or a silent wrong result (issues 21 and 32).

A matrix of bad inputs and faults, each run through ``jmf-train``'s own entry point in this process
(``jmf.__main__.cli``: Hydra, the run, the error printer), asserting the exit code, that the message
names the culprit, and that no traceback is printed.  The faults that need a second process -- two
runs in one directory, Ctrl-C, SIGTERM, ``kill -9`` -- run ``jmf-train`` as a subprocess; ``jmf-recommend``'s
cases (damaged saved models, explanations a model cannot give) and a full disk run in the driver too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jmf.__main__ as entry
from jmf.errors import INTERRUPTED, USER_ERROR

TINY = ["data.n_users=200", "data.n_items=100", "data.n_categories=4", "data.interactions_per_user=12",
        "trainer.progress=false", "trainer.devices=1"]
COLD = [*TINY, "partition.k=2", "split=cold_start"]


def jmf_train(args: list[str], run_dir: Path) -> tuple[int, str]:
    """``jmf-train hydra.run.dir=<run_dir> *args`` in this process: (exit code, stdout + stderr).

    Used by :func:`drive` in a separate Python process (``python tests/test_faults.py``): the cases run
    one after another in one process, as fast as a library call, while Hydra's logging set-up, which
    re-binds the process's streams, stays away from pytest's output capture."""
    import contextlib
    import io

    entry._started = False
    flags = [a for a in args if a.startswith("-")]          # -m: before the overrides, as a user types it
    argv, sys.argv = sys.argv, ["jmf-train", *flags, f"hydra.run.dir={run_dir}", *(a for a in args if a not in flags)]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            entry.cli()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:   # noqa: BLE001 -- a crash is a result here (code 1, its traceback in the output)
        import traceback

        code, out = 1, io.StringIO(out.getvalue() + traceback.format_exc())
    finally:
        sys.argv = argv
    return code, out.getvalue()


def drive(files: Path, work: Path, out: Path) -> None:
    """Run every case of :data:`CASES` (and the in-process extras) in this process; write their results."""
    results = {}
    for name, args, _, _ in CASES:
        results[name] = jmf_train([a.replace("{files}", str(files)) for a in args], work / re.sub(r"[^\w.-]", "_", name))
    os.environ["JMF_TRACEBACK"] = "1"
    results["traceback on request"] = jmf_train(["partition.k=8", *TINY], work / "traceback")
    del os.environ["JMF_TRACEBACK"]
    ck = ["model=mf", "model.epochs=2", *TINY]
    results["checkpoint: first run"] = jmf_train(ck, work / "ck")
    results["checkpoint: other config"] = jmf_train(["model=mf", "model.epochs=2", "model.dim=16", *TINY], work / "ck")
    for f in (work / "ck" / "checkpoints").rglob("*"):
        if f.is_file() and "state" in f.parts:
            f.write_bytes(b"garbage")
    results["checkpoint: corrupt"] = jmf_train(ck, work / "ck")
    runs = recommend_runs(work, files)
    for name, args, _, _ in RECOMMEND_CASES:
        results[name] = jmf_recommend([a.replace("{files}", str(files)).replace("{runs}", str(runs)) for a in args])
    disk_full_cases(work, results)
    out.write_text(json.dumps(results))


def write_files(d: Path) -> Path:
    """The CSV files the data cases read, in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def table(n=400, users=60, items=40, rating=True, extra=None):
        rows = ["user,item,rating,time,cat"]
        for r in range(n):
            i = int(rng.integers(items))
            value = extra(r) if extra else int(rng.integers(1, 6))
            rows.append(f"u{rng.integers(users)},i{i},{value if rating else 1},{1600000000 + r},c{i % 4}")
        return "\n".join(rows) + "\n"

    (d / "good.csv").write_text(table())
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("user,item,rating,time,cat\n")
    (d / "bad_value.csv").write_text(table(extra=lambda r: "five" if r == 7 else 3))
    (d / "negative.csv").write_text(table(n=600, extra=lambda r: -3 if r == 5 else int(rng.integers(1, 6))))
    (d / "huge.csv").write_text(table(extra=lambda r: "1e30" if r == 9 else 4))
    (d / "empty_user.csv").write_text("user,item,rating,time,cat\nu1,i1,4,1,c0\n,i2,3,2,c1\n")
    (d / "dates.csv").write_text("user,item,rating,time,cat\nu1,i1,4,03/12/2026,c0\nu2,i2,3,04/12/2026,c1\n")
    many = ["user,item,rating,time,cat"] + [f"u{u},i{i},{1 + (u + i) % 5},{1 + (u * 7 + i) % 28:02d}/11/2026,c{i % 3}"
                                          for u in range(40) for i in range(0, 30, 2)]
    (d / "dates_many.csv").write_text("\n".join(many) + "\n")
    (d / "headerless.csv").write_text("\n".join(table().splitlines()[1:]) + "\n")
    (d / "dupes.csv").write_text("user,item,rating,time,cat\nu1,i1,4,1,c0\nu1,i1,5,2,c0\nu2,i2,3,3,c1\n")
    digits = ["user,item,rating,time,cat"] + [f"u{u},i{i},{1 + (u + i) % 5},{u * 100 + i},{10 + i % 4}"
                                            for u in range(60) for i in range(0, 40, 3)]
    (d / "digit_categories.csv").write_text("\n".join(digits) + "\n")
    small = ["user,item,rating,time,cat"] + [f"u{u},i{i},{1 + (u * i) % 5},{u * 1000 + i},{'a' if i < 30 else 'b'}"
                                           for u in range(200) for i in range(120) if (u + i) % 7 == 0]
    (d / "small.csv").write_text("\n".join(small) + "\n")
    (d / "a_folder").mkdir()
    # issue 32's data cases (after the files above, so the rng stream that made them is unchanged)
    padded = ["user,item,rating,time,cat"] + [f"u{r % 60}{' ' * (r // 60 % 2)},i{(r * 7 + r // 60 * 3) % 40},"
                                              f"{1 + r % 5},{1600000000 + r},c{r % 4}" for r in range(400)]
    (d / "padded_ids.csv").write_text("\n".join(padded) + "\n")
    (d / "two_ratings.csv").write_text("user,item,rating,time,rating\nu1,i1,4,1,5\nu2,i2,3,2,1\n")
    latin = table().splitlines()
    latin[5] = latin[5].replace(",i", ",caf\xe9", 1)                # line 6: a Latin-1 byte 0xe9
    (d / "latin1.csv").write_bytes(("\n".join(latin) + "\n").encode("latin-1"))
    (d / "semicolons.csv").write_text(table().replace(",", ";"))
    (d / "tabs.csv").write_text(table().replace(",", "\t"))
    nan_time = table().splitlines()
    fields = nan_time[13].split(",")
    fields[3] = "NaN"                                              # line 14's time
    nan_time[13] = ",".join(fields)
    (d / "nan_time.csv").write_text("\n".join(nan_time) + "\n")
    clash = ["user,item,rating,time,cat"] + [f"u{r % 60},i{r % 40},{1 + r % 5},{r},"
                                             f"{('c0' if (r // 40) % 2 else 'C0') if r % 40 < 20 else 'c1'}"
                                             for r in range(800)]
    (d / "case_clash.csv").write_text("\n".join(clash) + "\n")
    return d


CSV = ["data=csv", "data.value_col=rating", "data.time_col=time", "data.category_col=cat", "trainer.progress=false",
       "trainer.devices=1"]
POP = ["model=pop", "eval.ks=[5]"]

# (case id, args (``{files}`` is the files fixture), exit code, regex the output must match)
CASES = [
    # ---- the config, composed by Hydra
    ("unknown model", ["model=nonexistent"], USER_ERROR, r"Could not find 'model/nonexistent'"),
    ("unknown dataset", ["data=nonexistent"], USER_ERROR, r"Could not find 'data/nonexistent'"),
    ("unknown experiment", ["experiment=nonexistent"], USER_ERROR, r"experiment/nonexistent"),
    ("unknown search space", ["hparams_search=nonexistent"], USER_ERROR, r"hparams_search/nonexistent"),
    ("typo in a trainer key", ["trainer.optimized_metrc=x"], USER_ERROR, r"optimized_metrc"),
    ("typo in a model key", ["model.dimm=3"], USER_ERROR, r"dimm"),
    ("added unknown model key", ["+model.dimm=3", *TINY], USER_ERROR, r"model\.dimm.*unknown key"),
    ("wrong type", ["model.dim=abc", *TINY], USER_ERROR, r"model\.dim.*not of type"),
    ("split fraction not a number", ["split.test_ratio=abc"], USER_ERROR, r"test_ratio"),
    ("preprocess typo", ["data.preprocess.kcor=3", *TINY], USER_ERROR, r"kcor"),
    # ---- values the run checks before any training
    ("partition.k too large", ["partition.k=8", *TINY], USER_ERROR, r"partition\.k: 8 must be in 1\.\.3"),
    ("k and cf_categories both", ["partition.k=2", "partition.cf_categories=[cat00]", *TINY], USER_ERROR,
     r"either partition\.k or partition\.cf_categories"),
    ("category id out of range", ["partition.cf_categories=[99]", *TINY], USER_ERROR, r"id 99 not in 0\.\.3"),
    ("category name unknown", ["partition.cf_categories=[nope]", *TINY], USER_ERROR, r"no category named 'nope'"),
    ("beta out of range", ["split.beta=1.5", *COLD], USER_ERROR, r"split\.beta: 1\.5"),
    ("split.by unknown", ["split.by=bogus", *TINY], USER_ERROR, r"split\.by: 'bogus'"),
    ("split.order unknown", ["split.order=bogus", *TINY], USER_ERROR, r"split\.order: 'bogus'"),
    ("predefined split without folds", ["split=predefined", *TINY], USER_ERROR, r"ships no folds"),
    ("eval protocol unknown", ["eval.protocol=bogus", *TINY], USER_ERROR, r"eval\.protocol: 'bogus'"),
    ("valid protocol unknown", ["eval.valid_protocol=sampled", *TINY], USER_ERROR, r"eval\.valid_protocol"),
    ("cut-off above the catalogue", ["eval.ks=[10,1000]", *TINY], USER_ERROR, r"eval\.ks: cut-off\(s\) \[1000\]"),
    ("more negatives than items", ["eval=sampled", "eval.negatives=5000", *TINY], USER_ERROR, r"eval\.negatives: 5000"),
    ("missing candidate file", ["eval=sampled", "eval.candidates=/nonexistent/neg.txt", *TINY], USER_ERROR,
     r"eval\.candidates: /nonexistent/neg\.txt is not a file"),
    ("dim zero", ["model=mf", "model.dim=0", *TINY], USER_ERROR, r"model\.dim: 0 must be >= 1"),
    ("negative epochs", ["model=mf", "model.epochs=-1", *TINY], USER_ERROR, r"model\.epochs: -1 must be >= 0"),
    ("negative learning rate", ["model=mf", "model.lr=-0.1", *TINY], USER_ERROR, r"model\.lr: -0\.1 must be > 0"),
    ("batch not divisible by devices", ["model=jmf", "model.batch_size=3", "model.epochs=1", "trainer.devices=2",
                                        *TINY[:-1], "partition.k=2", "split=cold_start"],
     USER_ERROR, r"model\.batch_size"),
    ("more devices than exist", ["trainer.devices=64", "model=mf", *TINY[:-1]], USER_ERROR, r"trainer\.devices"),
    ("jmf loss unknown", ["model=jmf", "model.loss=bogus", *COLD], USER_ERROR, r"model\.loss: 'bogus'"),
    ("jmf weight unknown", ["model=jmf", "+model.weights.alpha=1", *COLD], USER_ERROR, r"model\.weights: unknown"),
    ("jmf rank monitor not a ranking", ["model=jmf", "model.rank_monitor=rmse", *COLD], USER_ERROR,
     r"model\.rank_monitor"),
    ("negative term weight", ["model=jmf", "model/terms=[neighbour]", "model.terms.neighbour.weight=-1", *COLD],
     USER_ERROR, r"model\.terms\.neighbour\.weight"),
    ("term kernel unknown", ["model=jmf", "model/terms=[neighbour]", "model.terms.neighbour.kernel=cosine", *COLD],
     USER_ERROR, r"model\.terms\.neighbour\.kernel"),
    ("jmf without a DL side", ["model=jmf", *TINY], USER_ERROR, r"needs a DL side"),
    ("cmf without a DL side", ["model=cmf", *TINY], USER_ERROR, r"needs a DL side"),
    ("mf loss unknown", ["model=mf", "model.loss=bogus", *TINY], USER_ERROR, r"model\.loss: 'bogus'"),
    ("cmf negative source weight", ["model=cmf", "model.source_weight=-1", *COLD], USER_ERROR, r"source_weight"),
    ("emcdr hidden size zero", ["model=emcdr", "model.map_hidden=[0]", *COLD], USER_ERROR, r"map_hidden\[0\]"),
    ("ptupcdr bridge unknown", ["model=ptupcdr", "model.bridge_init=bogus", *COLD], USER_ERROR, r"bridge_init"),
    ("lightgcn graph unknown", ["model=lightgcn", "model.graph=bogus", *COLD], USER_ERROR, r"model\.graph: 'bogus'"),
    ("bitgcf lambda above 1", ["model=bitgcf", "model.lambda_s=2", *COLD], USER_ERROR, r"model\.lambda_s"),
    ("graph monitor not a ranking", ["model=lightgcn", "model.monitor=rmse", *COLD], USER_ERROR, r"model\.monitor"),
    ("ials devices negative", ["model=ials", "model.devices=-1", *TINY], USER_ERROR, r"model\.devices: -1"),
    ("oracle on real data", ["model=oracle", "data=ml100k", "trainer.progress=false"], USER_ERROR,
     r"data\.n_users"),
    ("interest from a model without one", ["model=pop", "trainer.interest=true", *COLD], USER_ERROR,
     r"trainer\.interest: Popularity has no interest vector"),
    ("empty validation for a selecting model", ["model=jmf", "split.cold_valid_fraction=0.0001", *COLD[:-1],
                                               "split=cold_start", "split.beta=0.999"],
     USER_ERROR, r"split\.beta|validation fold is empty"),
    ("nan loss", ["model=mf", "model.lr=1e30", "model.epochs=2", *TINY], USER_ERROR, r"non-finite loss at step"),
    # ---- data files
    ("missing csv", ["data=csv", "data.path=/nonexistent/x.csv"], USER_ERROR, r"data file not found: /nonexistent/x\.csv"),
    ("csv is a directory", [*CSV, "data.path={files}/a_folder"], USER_ERROR, r"a_folder is a directory"),
    ("empty csv", [*CSV, "data.path={files}/empty.csv"], USER_ERROR, r"empty\.csv: the file is empty"),
    ("repeated rows kept across folds", [*CSV, "data.path={files}/good.csv", "data.preprocess.duplicates=keep",
                                         "split.order=random", *POP], USER_ERROR,
     r"the split leaks held-out rows.*also\s+in\s+training"),
    ("header-only csv", [*CSV, "data.path={files}/header_only.csv"], USER_ERROR, r"no data rows after the header"),
    ("missing column", [*CSV, "data.path={files}/good.csv", "data.value_col=score"], USER_ERROR,
     r"column 'score' \(data\.value_col\) not found"),
    ("rating not a number", [*CSV, "data.path={files}/bad_value.csv"], USER_ERROR,
     r"field 'value' \(column 'rating'\) is not a finite number at line 9: 'five'"),
    ("negative rating", [*CSV, "data.path={files}/negative.csv"], USER_ERROR, r"outside \[1, 5\].*-3 at row"),
    ("rating overflows float32", [*CSV, "data.path={files}/huge.csv"], USER_ERROR, r"1e\+30 at row 9 overflows float32"),
    ("rating outside the given range", [*CSV, "data.path={files}/good.csv", "+data.rating_range=[1,4]"], USER_ERROR,
     r"outside \[1, 4\] \(data\.rating_range\)"),
    ("rating range reversed", [*CSV, "data.path={files}/good.csv", "+data.rating_range=[5,1]"], USER_ERROR,
     r"data\.rating_range: \[5, 1\]"),
    ("empty user id", [*CSV, "data.path={files}/empty_user.csv"], USER_ERROR, r"field 'user' is empty at line 3"),
    ("date strings without a format", [*CSV, "data.path={files}/dates.csv"], USER_ERROR,
     r"line 2: '03/12/2026' is neither a number nor an ISO 8601 date; set data\.time_format"),
    ("date format that does not match", [*CSV, "data.path={files}/dates.csv", "data.time_format=%Y-%m-%d"],
     USER_ERROR, r"does not match data\.time_format='%Y-%m-%d'"),
    ("headerless without columns", [*CSV, "data.path={files}/headerless.csv", "data.header=false"], USER_ERROR,
     r"data\.header=false needs data\.columns"),
    ("columns of the wrong length", [*CSV, "data.path={files}/headerless.csv", "data.header=false",
                                    "data.columns=[user,item]"], USER_ERROR, r"data\.columns names 2 fields"),
    ("duplicates as an error", [*CSV, "data.path={files}/dupes.csv", "data.preprocess.duplicates=error"], USER_ERROR,
     r"occur more than once"),
    ("k-core removes everything", [*CSV, "data.path={files}/good.csv", "data.preprocess.kcore=500"], USER_ERROR,
     r"no interactions left after data\.preprocess\.kcore=500"),
    ("threshold removes everything", [*CSV, "data.path={files}/good.csv", "data.preprocess.implicit_threshold=9"],
     USER_ERROR, r"no interactions left after data\.preprocess\.implicit_threshold=9"),
    ("digit category names are names", [*CSV, "data.path={files}/digit_categories.csv",
                                       "partition.cf_categories=['16','13']"], USER_ERROR,
     r"no category named '16'.*selects a category by id"),
    ("dataset folder missing", ["data=ciao", "data.root=/nonexistent/ciao"], USER_ERROR,
     r"data file not found: /nonexistent/ciao"),
    # ---- issue 32: ids, columns, encodings, separators, times
    ("ids with surrounding whitespace are stripped", [*CSV, "data.path={files}/padded_ids.csv", *POP], 0,
     r"stripped surrounding whitespace from 180 user ids \(first 'u0 ' at line 62\): 60 distinct users, not 120"),
    ("ids kept verbatim with strip_ids=false", [*CSV, "data.path={files}/padded_ids.csv", "data.strip_ids=false", *POP],
     0, r"60 user ids differ from another only by surrounding whitespace .* stay distinct \(data\.strip_ids=false\)"),
    ("repeated column name", [*CSV, "data.path={files}/two_ratings.csv"], USER_ERROR,
     r"two_ratings\.csv: the header line names column 'rating' more than once \(fields \[3, 5\]\)"),
    ("file not in utf-8", [*CSV, "data.path={files}/latin1.csv"], USER_ERROR,
     r"latin1\.csv: not valid utf-8 text: byte\(s\) e9 at byte \d+ \(line 6\) .*data\.encoding=latin-1"),
    ("latin-1 file with data.encoding", [*CSV, "data.path={files}/latin1.csv", "data.encoding=latin-1", *POP], 0,
     r"rows train"),
    ("unknown encoding", [*CSV, "data.path={files}/good.csv", "data.encoding=klingon"], USER_ERROR,
     r"data\.encoding: unknown encoding 'klingon'"),
    ("semicolon-separated .csv is sniffed", [*CSV, "data.path={files}/semicolons.csv", *POP], 0,
     r"first line has no comma but ';': reading this \.csv file as ';'-separated"),
    ("tab-separated .csv with data.sep=','", [*CSV, "data.path={files}/tabs.csv", "data.sep=','"], USER_ERROR,
     r"column 'user' \(data\.user_col\) not found.*looks '\\t'-separated: set \"data\.sep='\\t'\""),
    ("tab-separated .csv with data.sep='\\t'", [*CSV, "data.path={files}/tabs.csv", "data.sep='\\t'", *POP], 0,
     r"rows train"),
    ("NaN in the time column", [*CSV, "data.path={files}/nan_time.csv"], USER_ERROR,
     r"field 'time' \(column 'time'\) is not a finite number at line 14: 'NaN'"),
    ("threshold names the largest rating", [*CSV, "data.path={files}/good.csv",
                                            "data.preprocess.implicit_threshold=9"], USER_ERROR,
     r"implicit_threshold=9\.0; every value is below it \(the largest is 5\): lower it"),
    # ---- issue 32: run directories, seeds, spelling, partitions
    ("run directory is a file", ["hydra.run.dir={files}/good.csv", *TINY], USER_ERROR,
     r"hydra\.run\.dir: \S*good\.csv exists and is a file, not a directory"),
    ("run directory inside a file", ["hydra.run.dir={files}/good.csv/run", *TINY], USER_ERROR,
     r"hydra\.run\.dir: \S*good\.csv \(in \S*good\.csv/run\) exists and is a file"),
    ("run directory in proc", ["hydra.run.dir=/proc/x", *TINY], USER_ERROR,
     r"hydra\.run\.dir: the run directory /proc/x cannot be created or written"),
    ("seed not an integer", ["seed=abc", "model=pop", *TINY], USER_ERROR, r"seed: 'abc' is not an integer"),
    ("misspelled group", ["modle=jmf", *TINY], USER_ERROR, r"Could not override 'modle'.*did you mean model=jmf\?"),
    ("misspelled part group", ["model=jmf", "model/encodr=cnn", *COLD], USER_ERROR, r"did you mean model/encoder=cnn\?"),
    ("jmf on a single category", ["model=jmf", *TINY, "data.n_categories=1"], USER_ERROR,
     r"model=jmf needs a DL side: .*synthetic has a single category \('cat00'\)"),
    ("every category on the CF side", ["model=jmf", "partition.cf_categories=[0,1,2,3]", *TINY], USER_ERROR,
     r"partition\.cf_categories lists all 4 categories of synthetic; leave at least one out"),
    ("cold start without a DL side", ["split=cold_start", "model=pop", *TINY], USER_ERROR,
     r"split=cold_start needs a DL side: .*neither partition\.k nor partition\.cf_categories is set"),
    ("categories differing only in case", [*CSV, "data.path={files}/case_clash.csv", "partition.cf_categories=[c0]",
                                           "split=cold_start", "model=pop"], USER_ERROR,
     r"category 'c0' of csv holds no rows .*'c0' and 'C0' differ only in case"),
    ("partition.k names the CF side", ["partition.k=2", "model=pop", *TINY], 0,
     r"partition\.k=2: CF side \(O1\) cat\d\d \([\d,]+ rows\), cat\d\d \([\d,]+ rows\); DL side \(O2\) cat\d\d, cat\d\d"),
    ("sweep whose jobs all fail", ["-m", "hydra.sweep.dir={files}/sweep_fail", "model=svd", "model.dim=0", *TINY],
     USER_ERROR, r'1 of 1 jobs failed \(listed under "Failed jobs" in .*report\.md\); exit code 2'),
    # ---- sensible outcomes (exit 0), said in the log
    ("headerless with columns", [*CSV, "data.path={files}/headerless.csv", "data.header=false",
                                "data.columns=[user,item,rating,time,cat]", "model=pop"], 0, r"rows train"),
    ("dates with a format", [*CSV, "data.path={files}/dates_many.csv", "data.time_format=%d/%m/%Y", "model=pop",
                            "eval.ks=[5]"], 0, r"rows train"),
    ("digit category names selected by name", [*CSV, "data.path={files}/digit_categories.csv", "model=pop",
                                              "partition.cf_categories=['10','11']", "eval.ks=[5]"], 0, r"rows train"),
    ("dim above the catalogue is clamped", [*CSV, "data.path={files}/small.csv", "model=jmf", "model.dim=64",
                                            "partition.k=1", "model.epochs=1", "model.batch_size=256",
                                            "model/encoder=bag", "model.max_len=8", "model.pretrain_epochs=0"], 0,
     r"model\.dim=64 exceeds .* clamped to"),
    ("empty validation for popularity", ["model=pop", "split.valid_ratio=0", *TINY], 0,
     r"validation fold is empty"),
]


# ---- jmf-recommend on saved models (issue 32): {runs} is the folder of :func:`recommend_runs`
RECOMMEND_CASES = [
    ("recommend: damaged tensor data", ["{runs}/svd_damaged", "--input", "{files}/new_users.csv",
                                        "--out", "{runs}/out/damaged.csv"], USER_ERROR,
     r"svd_damaged/model/state\.safetensors: damaged or changed since the model was saved.*jmf-train"),
    ("recommend: damaged data.npz", ["{runs}/svd_npz", "--input", "{files}/new_users.csv",
                                     "--out", "{runs}/out/npz.csv"], USER_ERROR,
     r"svd_npz/model/data\.npz: damaged or changed since the model was saved"),
    ("recommend: model saved before checksums", ["{runs}/svd_legacy", "--input", "{files}/new_users.csv",
                                                 "--out", "{runs}/out/legacy.csv"], 0, r"wrote \d+ rows for \d+ new users"),
    ("recommend: --explain on a CF-only model", ["{runs}/svd", "--input", "{files}/new_users.csv", "--explain",
                                                 "--out", "{runs}/out/svd.csv"], USER_ERROR,
     r"TruncatedSVD \(jmf\.models\.cf\.svd\.TruncatedSVD\) has no explanations.*model=jmf"),
    ("recommend: --explain on popularity", ["{runs}/pop", "--input", "{files}/new_users.csv", "--explain",
                                            "--out", "{runs}/out/pop.csv"], USER_ERROR,
     r"Popularity \(jmf\.models\.cf\.popularity\.Popularity\) has no explanations"),
    ("recommend: --explain with --known", ["{runs}/svd", "--input", "{files}/known_users.csv", "--known",
                                           "--explain", "--out", "{runs}/out/known.csv"], USER_ERROR,
     r"--explain .* cannot be combined with --known"),
]


def jmf_recommend(args: list[str]) -> tuple[int, str]:
    """``jmf-recommend *args`` in this process (``jmf.recommend_cli.main``): (exit code, stdout + stderr)."""
    import contextlib
    import io
    import traceback

    from jmf.recommend_cli import main
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:   # noqa: BLE001 -- a crash is a result here
        code, out = 1, io.StringIO(out.getvalue() + traceback.format_exc())
    return code or 0, out.getvalue()


def _invert(path: Path, offset: int, size: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset:offset + size] = bytes(b ^ 0xFF for b in blob[offset:offset + size])
    path.write_bytes(bytes(blob))


def recommend_runs(work: Path, files: Path) -> Path:
    """Two tiny saved models (svd, pop), damaged and pre-checksum copies, and the input CSVs."""
    import shutil

    root = work / "recommend"
    for model in ("svd", "pop"):
        code, out = jmf_train([f"model={model}", *COLD], root / model)
        assert code == 0, out[-3000:]
    for name in ("svd_damaged", "svd_npz", "svd_legacy"):
        shutil.copytree(root / "svd", root / name)
    state = root / "svd_damaged" / "model" / "state.safetensors"       # 4 KiB inside the tensor data
    start = 8 + int.from_bytes(state.read_bytes()[:8], "little")
    _invert(state, start + (state.stat().st_size - start) // 4, 4096)
    npz = root / "svd_npz" / "model" / "data.npz"
    _invert(npz, npz.stat().st_size // 2, 16)
    meta_path = root / "svd_legacy" / "model" / "meta.json"              # as saved before the checksums
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    with np.load(root / "svd" / "model" / "data.npz") as z:
        users, items = z["user_ids"][:3], z["item_ids"][:20]
    (files / "new_users.csv").write_text("user,item\n" + "".join(f"new{i % 3},{it}\n" for i, it in enumerate(items)))
    (files / "known_users.csv").write_text("user\n" + "".join(f"{u}\n" for u in users))
    return root


def disk_full_cases(work: Path, results: dict) -> None:
    """A disk that fills at the second checkpoint (orbax's own error), the rerun after it, and a model save
    that finds no room."""
    import errno

    import orbax.checkpoint as ocp

    import jmf.outputs
    real, latest = ocp.CheckpointManager.save, []

    def full_at_second(self, step, *a, **k):
        if Path(self.directory).name == "latest":
            latest.append(step)
            if len(latest) == 2:
                raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "params.P/0.0" in OCDBT database at local file '
                                 f'"{self.directory}/{step}.orbax-checkpoint-tmp/state/": No space left on device '
                                 "[os_error_code='28']")
        return real(self, step, *a, **k)

    full = ["model=mf", "model.epochs=4", *TINY]
    ocp.CheckpointManager.save = full_at_second
    try:
        results["disk full: checkpoint"] = jmf_train(full, work / "full")
    finally:
        ocp.CheckpointManager.save = real
    results["disk full: resumed"] = jmf_train(full, work / "full")
    save_model = jmf.outputs.save_model

    def no_room(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    jmf.outputs.save_model = no_room
    try:
        results["disk full: model"] = jmf_train(["model=pop", *TINY], work / "full_model")
    finally:
        jmf.outputs.save_model = save_model
    import tempfile
    real_file, read_only = tempfile.TemporaryFile, work / "read_only"

    def probe(*a, dir=None, **k):        # the run directory's write probe, on a read-only file system
        if dir is not None and Path(dir).is_relative_to(read_only):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_file(*a, dir=dir, **k)
    tempfile.TemporaryFile = probe
    try:
        results["read-only run directory"] = jmf_train(["model=pop", *TINY], read_only / "run")
    finally:
        tempfile.TemporaryFile = real_file


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Every in-process case's (exit code, output), from one ``python tests/test_faults.py`` process."""
    root = tmp_path_factory.mktemp("faults")
    files = write_files(root / "files")
    out = root / "results.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    res = subprocess.run([sys.executable, __file__, str(files), str(root / "runs"), str(out)], capture_output=True,
                         text=True, timeout=1800, env=env)
    assert res.returncode == 0 and out.exists(), res.stderr[-3000:]
    return {k: tuple(v) for k, v in json.loads(out.read_text()).items()}


@pytest.mark.parametrize("name, args, code, pattern", CASES + RECOMMEND_CASES,
                         ids=[c[0] for c in CASES + RECOMMEND_CASES])
def test_bad_input_is_one_paragraph_with_the_culprit(name, args, code, pattern, results):
    got, out = results[name]
    assert got == code, (name, got, out[-3000:])
    assert re.search(pattern, out, re.S), (name, out[-3000:])
    assert "Traceback" not in out, (name, out[-3000:])


def test_traceback_on_request(results):
    code, out = results["traceback on request"]
    assert code == 1 and "Traceback" in out and "partition.k: 8" in out


def test_a_full_disk_is_one_paragraph_and_the_last_checkpoint_resumes(results):
    code, out = results["disk full: checkpoint"]
    assert code == USER_ERROR and "Traceback" not in out, out[-3000:]
    assert re.search(r"no space left on device writing \S+/checkpoints/latest/\d+: .* free of .*hydra\.run\.dir.*"
                     r"resumes from the last checkpoint, step \d+", out, re.S), out[-3000:]
    code, out = results["disk full: resumed"]
    assert code == 0 and re.search(r"resumed from step \d+", out), out[-3000:]
    code, out = results["disk full: model"]
    assert code == USER_ERROR and re.search(r"no space left on device writing \S+/full_model/model: ", out), out[-3000:]


def test_a_read_only_run_directory_is_one_paragraph(results):
    code, out = results["read-only run directory"]
    assert code == USER_ERROR and "Traceback" not in out, out[-3000:]
    assert re.search(r"hydra\.run\.dir: the run directory \S+/read_only/run cannot be created or written "
                     r"\(Read-only file system\)", out), out[-3000:]


def test_an_unusable_checkpoint_is_one_paragraph(results):
    assert results["checkpoint: first run"][0] == 0
    code, out = results["checkpoint: other config"]
    assert code == USER_ERROR and re.search(r"different config \(model\.dim: \d+ -> 16\)", out) and "Traceback" not in out
    code, out = results["checkpoint: corrupt"]
    assert code == USER_ERROR and "no intact checkpoint" in out and "Traceback" not in out


# ---------------------------------------------------------------- faults across processes
def _popen(run_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": ""}
    # A shell without job control starts background commands (``pytest &``) with SIGINT ignored, and a
    # child inherits that: Ctrl-C would then be lost before it reaches jmf.  The child gets the default.
    return subprocess.Popen([sys.executable, "-m", "jmf", f"hydra.run.dir={run_dir}", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


SLOW_RUN = ["model=mf", "model.epochs=400", "data.n_users=400", "data.n_items=200", "trainer.progress=false",
            "trainer.checkpoint_every=0"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - start < timeout, "the first run never started training"
        time.sleep(0.2)


def test_a_second_process_on_the_same_run_directory_refuses_at_once(tmp_path):
    first = _popen(tmp_path / "run", *SLOW_RUN)
    try:
        _wait_for(tmp_path / "run" / ".lock", first)
        time.sleep(1.0)
        start = time.time()
        second = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path / 'run'}", *SLOW_RUN],
                                capture_output=True, text=True, timeout=120, env={**os.environ, "XLA_FLAGS": ""})
        took = time.time() - start
    finally:
        first.kill()
        first.wait()
    assert second.returncode == USER_ERROR, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"in use by another jmf run (pid {first.pid})" in second.stderr and "Traceback" not in second.stderr
    assert took < 5        # refused before JAX and Hydra load (jmf/runlock.py): ~0.05 s here
    # the killed holder's lock died with it: a rerun proceeds (and resumes)
    rerun = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path / 'run'}", *SLOW_RUN[:1],
                            "model.epochs=3", *SLOW_RUN[2:], "trainer.resume=false"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "XLA_FLAGS": ""})
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    proc = _popen(tmp_path / "run", *SLOW_RUN)
    _wait_for(tmp_path / "run" / "checkpoints" / "latest" / "1", proc)   # MF: step 1 = epoch 0, complete on disk
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, out[-3000:]
    assert re.search(r"interrupted at step \d+; rerun the same command to resume", out) and "Traceback" not in out


def test_sigterm_stops_like_ctrl_c_with_143_and_names_the_resume_step(tmp_path):
    proc = _popen(tmp_path / "run", *SLOW_RUN)
    _wait_for(tmp_path / "run" / "checkpoints" / "latest" / "1", proc)   # MF: step 1 = epoch 0
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert re.search(r"stopped by SIGTERM at step \d+; rerun the same command to resume from step \d+", out)
    assert "Traceback" not in out


def test_a_rerun_right_after_kill_9_of_the_process_group_is_not_refused(tmp_path):
    env = {**os.environ, "XLA_FLAGS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path / 'run'}", *SLOW_RUN], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for(tmp_path / "run" / "checkpoints" / "latest", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    rerun = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path / 'run'}", *SLOW_RUN[:1],
                            "model.epochs=3", *SLOW_RUN[2:], "trainer.resume=false"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert rerun.returncode == 0 and "in use by another" not in rerun.stderr, rerun.stderr[-2000:]


def test_a_ctrl_c_inside_orbax_wait_is_not_a_traceback(tmp_path, caplog):
    """The Ctrl-C can land while orbax waits for the previous save; orbax then logs the interrupt as a
    failed save with its traceback (absl ``logging.exception``).  The run reports it in one line instead;
    a real failure still logs its traceback."""
    from absl import logging as absl_logging

    from jmf.train.checkpoint import Checkpointer

    Checkpointer(tmp_path / "checkpoints")
    for err in (KeyboardInterrupt(), ValueError("disk full")):
        try:
            raise err
        except BaseException:     # noqa: BLE001 -- as orbax's wait_until_finished does
            absl_logging.exception("[wait_until_finished] Save Finalize thread (%s) failed.", "t")
    failed = [r for r in caplog.records if "Finalize thread" in r.getMessage()]
    assert [type(r.exc_info[1]) for r in failed] == [ValueError]


def test_kill_9_at_five_points_resumes_to_identical_metrics(tmp_path):
    """One run killed (SIGKILL) at five random points, each time restarted by the same command, which
    resumes from its last checkpoint; the sixth start finishes.  Its metrics equal an uninterrupted run's."""
    args = ["model=mf", "model.epochs=150", "data.n_users=300", "data.n_items=150", "trainer.progress=false"]
    env = {**os.environ, "XLA_FLAGS": ""}
    reference = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path / 'ref'}", *args],
                               capture_output=True, text=True, timeout=600, env=env)
    assert reference.returncode == 0, reference.stderr[-2000:]
    want = {k: v for k, v in json.loads((tmp_path / "ref" / "metrics.json").read_text()).items() if "seconds" not in k}
    run_dir = tmp_path / "run"
    for delay in np.random.default_rng(0).uniform(0.0, 1.5, 5):
        proc = _popen(run_dir, *args)
        _wait_for(run_dir / "checkpoints" / "latest", proc)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={run_dir}", *args], capture_output=True,
                           text=True, timeout=600, env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    got = {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if "seconds" not in k}
    assert got == want


if __name__ == "__main__":       # the driver process of the ``results`` fixture
    drive(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
