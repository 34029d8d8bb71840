"""One process of the 2-process ``jax.distributed`` test (not a test module itself).

Usage: ``python dist_worker.py <process_id> <num_processes> <port> <out.json>``; process id -1
runs single-process (the reference).  Fits a least-squares toy on the engine over every
process's devices, each process placing its own rows of every batch.
"""

import json
import sys

import numpy as np


def fit_toy():
    import jax
    import jax.numpy as jnp

    from jmf.train.engine import Engine, EpochPlan, Phase, RunContext

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 3.0, 0.5], np.float32)).astype(np.float32)
    engine = Engine(RunContext(checkpoint=False, progress=False, max_inflight=4), name="toy", seed=0)

    def step(w, batch):
        loss, g = jax.value_and_grad(lambda w: jnp.mean((batch["x"] @ w - batch["y"]) ** 2))(w)
        return w - 0.1 * g, {"loss": loss}

    sharding = engine.state_shardings(jnp.zeros(4))
    w = engine.put_state(jnp.zeros(4), sharding)
    jitted = engine.jit_step(step, sharding)

    def plan(epoch):
        perm = engine.epoch_rng(0, epoch).permutation(128)
        return EpochPlan(4, lambda i: engine.put_batch({"x": x[perm[i * 32:(i + 1) * 32]],
                                                        "y": y[perm[i * 32:(i + 1) * 32]]}), 32)

    result = engine.fit([Phase("train", 5, plan, jitted)], w)
    return {"w": np.asarray(jax.device_get(result.state)).tolist(), "losses": result.phases["train"].losses,
            "process_index": jax.process_index(), "process_count": jax.process_count(),
            "devices": jax.device_count(), "local_devices": jax.local_device_count(),
            "mesh": engine.n_devices}


if __name__ == "__main__":
    pid, n, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if pid >= 0:
        from jmf.distributed import DistributedConfig, initialize

        assert initialize(DistributedConfig(coordinator_address=f"127.0.0.1:{port}", num_processes=n,
                                            process_id=pid, timeout_s=60))
    with open(out, "w") as f:
        json.dump(fit_toy(), f)
