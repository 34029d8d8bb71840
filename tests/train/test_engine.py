"""The engine on a toy least-squares problem over 4 forced CPU devices: traces, steps in flight,
checkpoints, exact resume, NaN stops, and the errors a bad checkpoint gives."""

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmf.train.checkpoint import CheckpointError
from jmf.train.engine import Engine, EpochPlan, NonFiniteLossError, Phase, RunContext, Selection

N, D, B = 256, 8, 32


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    return x, (x @ np.arange(1, D + 1, dtype=np.float32) + 0.1 * rng.normal(size=N)).astype(np.float32)


def _step(state, batch):
    def loss_fn(w):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
    key = jax.random.fold_in(state["rng"], state["step"])       # a device-side RNG draw per step
    loss, g = jax.value_and_grad(loss_fn)(state["w"])
    noise = 1e-4 * jax.random.normal(key, g.shape)
    return {"w": state["w"] - 0.1 * g + noise, "rng": state["rng"], "step": state["step"] + 1}, {"loss": loss}


def _fit(ctx=None, epochs=3, stop_after=None, step=_step, validate=True, patience=0, guard=False, selections=()):
    """Fit the toy; ``stop_after=k`` raises after k steps (an interrupted run)."""
    x, y = _data()
    engine = Engine(ctx, name="toy", seed=0)
    state = {"w": jnp.zeros(D), "rng": jax.random.key(0), "step": jnp.zeros((), jnp.int32)}
    sharding = engine.state_shardings(state)
    state = jax.device_put(state, sharding)
    jitted = engine.jit_step(step, sharding)
    calls = [0]

    def counted(s, b):
        calls[0] += 1
        if stop_after is not None and calls[0] > stop_after:
            raise KeyboardInterrupt("simulated kill")
        return jitted(s, b)

    def plan(epoch):
        perm = engine.epoch_rng(0, epoch).permutation(N)
        return EpochPlan(N // B, lambda i: engine.put_batch({"x": x[perm[i * B:(i + 1) * B]],
                                                             "y": y[perm[i * B:(i + 1) * B]]}), B)

    def val(s):
        return -float(jnp.sum((s["w"] - jnp.arange(1, D + 1)) ** 2))

    with jax.transfer_guard("disallow") if guard else contextlib.nullcontext():
        result = engine.fit([Phase("train", epochs, plan, counted, validate=val if validate else None,
                                   patience=patience, selections=selections)], state)
    return engine, result


def _ctx(tmp_path, **kw):
    return RunContext(out_dir=tmp_path, progress=False, async_checkpoints=False, **kw)


def test_step_traces_once_and_learns():
    engine, result = _fit(epochs=4)
    assert engine.traces["step"] == 1
    assert engine.n_devices == 4
    w = np.asarray(result.state["w"])
    assert np.abs(w - np.arange(1, D + 1)).max() < 0.5
    assert result.best_state is not None and result.phases["train"].epochs == 4


def test_inflight_steps_are_bounded_on_4_devices():
    """Hundreds of sharded steps: without the bound, XLA's CPU all-reduce deadlocked here after 50+."""
    engine, result = _fit(RunContext(max_inflight=3, checkpoint=False, progress=False), epochs=30,
                          validate=False)
    assert result.global_step == 30 * N // B
    assert engine.max_pending == 3


def test_interrupted_run_resumes_exactly(tmp_path):
    _, ref = _fit(_ctx(tmp_path / "ref"), epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _fit(_ctx(tmp_path / "cut", checkpoint_every=5), epochs=3, stop_after=13)
    engine, res = _fit(_ctx(tmp_path / "cut", checkpoint_every=5), epochs=3)
    assert res.resumed_from == 10
    np.testing.assert_array_equal(np.asarray(res.state["w"]), np.asarray(ref.state["w"]))
    np.testing.assert_array_equal(np.asarray(res.best_state["w"]), np.asarray(ref.best_state["w"]))
    assert res.phases["train"].losses == ref.phases["train"].losses
    assert res.phases["train"].history == ref.phases["train"].history
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    ref_lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k and "examples_per_s" not in k}
                          for r in rows]
    assert strip(lines) == strip(ref_lines)   # no point logged twice after the resume
    assert list((tmp_path / "cut" / "tb").iterdir())


def test_sweep_job_folder_with_brackets_checkpoints_and_resumes(tmp_path):
    """A sweep's job folder is named by its overrides (``...,partition.cf_categories=[phone],...``); orbax
    globs over that path, so OCDBT checkpoints there could not be read back (found in an Optuna sweep).
    Such a folder resumes exactly and gives back its best state like any other."""
    _, ref = _fit(_ctx(tmp_path / "ref"), epochs=3)
    job = tmp_path / "experiment=x,partition.cf_categories=[phone],seed=0"
    with pytest.raises(KeyboardInterrupt):
        _fit(_ctx(job, checkpoint_every=5), epochs=3, stop_after=13)
    _, res = _fit(_ctx(job, checkpoint_every=5), epochs=3)
    assert res.resumed_from == 10
    np.testing.assert_array_equal(np.asarray(res.state["w"]), np.asarray(ref.state["w"]))
    np.testing.assert_array_equal(np.asarray(res.best_state["w"]), np.asarray(ref.best_state["w"]))


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    def poisoned(state, batch):
        new, metrics = _step(state, batch)
        bad = jnp.where(state["step"] >= 10, jnp.nan, 0.0)
        return new, {"loss": metrics["loss"] + bad, "cf": metrics["loss"], "transfer": bad}

    with pytest.raises(NonFiniteLossError, match=r"step 11 .*term 'transfer'.*last good checkpoint is step 8"):
        _fit(_ctx(tmp_path, checkpoint_every=4, max_inflight=2), step=poisoned)
    engine = Engine(_ctx(tmp_path), name="toy")
    assert engine.checkpointer.latest_step() == 8


def test_corrupt_or_incompatible_checkpoint_is_a_clear_error(tmp_path):
    _fit(_ctx(tmp_path, compat={"model": {"dim": 8}}), epochs=1)
    with pytest.raises(CheckpointError, match=r"different config \(model.dim: 8 -> 16\)"):
        _fit(_ctx(tmp_path, compat={"model": {"dim": 16}}), epochs=2)
    _, fresh = _fit(_ctx(tmp_path, compat={"model": {"dim": 16}}, resume=False), epochs=1)
    assert fresh.resumed_from is None
    # a setting added since the checkpoint was written reads as off there: off now resumes, on now does not
    _, later = _fit(_ctx(tmp_path, compat={"model": {"dim": 16}, "split": {"dl_folds": False}}), epochs=2)
    assert later.resumed_from is not None
    with pytest.raises(CheckpointError, match=r"different config \(split.dl_folds: False -> True\)"):
        _fit(_ctx(tmp_path, compat={"model": {"dim": 16}, "split": {"dl_folds": True}}), epochs=3)
    # a section this run no longer checks (an older checkpoint's ``optim``) is not compared
    other = tmp_path / "other"
    _fit(_ctx(other, compat={"model": {"dim": 8}, "optim": {"lr": 0.2}}), epochs=1)
    _, without = _fit(_ctx(other, compat={"model": {"dim": 8}}), epochs=2)
    assert without.resumed_from is not None
    for f in (tmp_path / "checkpoints" / "latest").rglob("*"):
        if f.is_file() and "state" in f.parts:
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        _fit(_ctx(tmp_path, compat={"model": {"dim": 16}}), epochs=2)


def test_truncated_newest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path, caplog):
    """The newest periodic checkpoint truncated (a crash mid-write the temp-folder rename did not catch):
    the run resumes from the one before, says so, and ends as a run that was never interrupted."""
    _, reference = _fit(_ctx(tmp_path / "ref", keep_checkpoints=3), epochs=3)
    _fit(_ctx(tmp_path / "run", keep_checkpoints=3), epochs=2)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    newest = max((p for p in latest.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="jmf"):
        _, resumed = _fit(_ctx(tmp_path / "run", keep_checkpoints=3), epochs=3)
    assert f"step {newest.name}" in caplog.text and "newest intact" in caplog.text
    assert resumed.resumed_from is not None and resumed.resumed_from < int(newest.name)
    np.testing.assert_array_equal(np.asarray(resumed.state["w"]), np.asarray(reference.state["w"]))


def test_sampling_is_keyed_by_seed_phase_epoch():
    a, b = Engine(None, seed=3), Engine(RunContext(devices=1, checkpoint=False), seed=3)
    assert (a.epoch_rng(1, 5).permutation(10) == b.epoch_rng(1, 5).permutation(10)).all()
    assert not (a.epoch_rng(1, 5).permutation(50) == a.epoch_rng(1, 6).permutation(50)).all()


def test_row_sharded_table_pads_and_trains():
    """A [U, d] table sharded by rows over 4 devices (trainer.shard_tables), gathered and scattered in a step."""
    from jax.sharding import PartitionSpec as P

    from jmf.train import parallel

    engine = Engine(RunContext(shard_tables=True, checkpoint=False, progress=False))
    rows = parallel.padded_rows(10, engine.mesh)
    assert rows == 12
    state = {"table": jnp.zeros((rows, 3)), "bias": jnp.zeros(3)}
    sharding = engine.state_shardings(state, lambda path, leaf: path[0].key == "table")
    assert sharding["table"].spec == P("data", None) and sharding["bias"].spec == P()
    state = jax.device_put(state, sharding)

    def step(s, batch):
        rows = s["table"][batch["ids"]]                                   # gather from the sharded table
        loss = jnp.mean((rows.sum(-1) - batch["y"]) ** 2)
        return {"table": s["table"].at[batch["ids"]].add(0.1), "bias": s["bias"]}, {"loss": loss}

    jitted = engine.jit_step(step, sharding)
    for _ in range(3):
        state, _ = jitted(state, engine.put_batch({"ids": jnp.array([0, 9, 9, 5], jnp.int32), "y": jnp.ones(4)}))
    assert state["table"].sharding.spec == P("data", None) and engine.traces["step"] == 1
    np.testing.assert_allclose(np.asarray(state["table"])[[0, 5, 9, 1], 0], [0.3, 0.3, 0.6, 0.0], atol=1e-6)


def test_loop_makes_no_implicit_transfers():
    """Batches are placed with explicit device_put and metrics read with device_get (design.md#conventions)."""
    _, result = _fit(epochs=2, validate=False, guard=True)
    assert result.global_step == 2 * N // B


def test_1_and_4_devices_agree():
    """The same fit on a 1-device and a 4-device mesh: equal to float tolerance (all-reduce order differs)."""
    _, one = _fit(RunContext(devices=1, checkpoint=False, progress=False), epochs=2)
    _, four = _fit(RunContext(devices=4, checkpoint=False, progress=False), epochs=2)
    np.testing.assert_allclose(np.asarray(four.state["w"]), np.asarray(one.state["w"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(four.phases["train"].losses, one.phases["train"].losses, rtol=1e-5)


def test_same_seed_same_result():
    _, a = _fit(epochs=2)
    _, b = _fit(epochs=2)
    np.testing.assert_array_equal(np.asarray(a.state["w"]), np.asarray(b.state["w"]))
    assert a.phases["train"].losses == b.phases["train"].losses


def _mid(s):
    """A second selection whose best is the end of epoch 1 (step 2 * N // B), whatever the main one picks."""
    return -abs(int(s["step"]) - 2 * (N // B))


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_further_selection_keeps_its_own_best_state(tmp_path, checkpointed):
    ctx = _ctx(tmp_path) if checkpointed else RunContext(checkpoint=False, progress=False)
    _, result = _fit(ctx, epochs=4, selections=(Selection("mid", _mid),))
    assert int(result.best_state["step"]) == 4 * (N // B)          # the main validation: the last epoch
    assert int(result.selected["mid"]["step"]) == 2 * (N // B)
    book = result.phases["train"].selected["mid"]
    assert book["best_epoch"] == 1 and book["history"] == [-(N // B), 0, -(N // B), -2 * (N // B)]
    if checkpointed:
        assert (tmp_path / "checkpoints" / "best_mid").is_dir()


def test_a_further_selection_resumes_exactly(tmp_path):
    """Killed in epoch 3 (after the selection's best at epoch 1): the resumed run restores that best state."""
    _, full = _fit(RunContext(checkpoint=False, progress=False), epochs=4, selections=(Selection("mid", _mid),))
    with pytest.raises(KeyboardInterrupt):
        _fit(_ctx(tmp_path), epochs=4, stop_after=2 * (N // B) + 3, selections=(Selection("mid", _mid),))
    _, resumed = _fit(_ctx(tmp_path), epochs=4, selections=(Selection("mid", _mid),))
    assert resumed.resumed_from is not None
    np.testing.assert_array_equal(np.asarray(resumed.selected["mid"]["w"]), np.asarray(full.selected["mid"]["w"]))
    assert resumed.phases["train"].selected["mid"]["best_epoch"] == 1


def test_selection_names_and_modes_are_checked():
    with pytest.raises(ValueError, match="identifier"):
        Selection("dl/ndcg", _mid)
    with pytest.raises(ValueError, match="max|min"):
        Selection("dl", _mid, mode="up")


def test_a_selection_without_state_keeps_the_figures_of_its_best_epoch(tmp_path):
    def figures(s):
        return _mid(s), {"step": float(s["step"])}
    _, result = _fit(_ctx(tmp_path), epochs=4, selections=(Selection("figs", figures, keep_state=False),))
    book = result.phases["train"].selected["figs"]
    assert book["best_epoch"] == 1 and book["best_metrics"] == {"step": 2.0 * (N // B)}
    assert "figs" not in result.selected and not (tmp_path / "checkpoints" / "best_figs").exists()
