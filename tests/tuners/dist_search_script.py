"""One process of a distributed AMC search (keras-tuner chief/worker mode).

Run by tests/tuners/test_distributed.py, once per role, with
``KERASTUNER_TUNER_ID`` (``chief`` / ``tuner0`` / ``tuner1``),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` set. The chief
serves the AMCOracle (keras-tuner's gRPC server); workers run trials with
fake metrics (no pruning) and log the ids they ran to ``ran_<id>.txt``.

Optional environment: ``TFCOMP_DIST_LEASE`` (the oracle's lease_timeout,
seconds) and ``TFCOMP_DIST_HANG`` (a worker id: that worker writes
``hang_<id>.txt`` with its first trial's id and then sleeps in that trial
until it is killed).

Usage: python dist_search_script.py WORK_DIR MAX_TRIALS
"""

import os
import sys
import time


def _barrier(work_dir, role, roles, timeout=120.0):
    with open(os.path.join(work_dir, f"ready_{role}.txt"), "w") as f:
        f.write("ok\n")
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(os.path.join(work_dir, f"ready_{r}.txt"))
                  for r in roles):
        if time.monotonic() > deadline:
            sys.exit(f"{role}: the other workers did not start in time")
        time.sleep(0.05)


def main(work_dir: str, max_trials: int) -> None:
    import keras
    import numpy as np

    import tfcomp
    from tfcomp.pruning import Plan
    from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

    role = os.environ["KERASTUNER_TUNER_ID"]
    log = os.path.join(work_dir, f"ran_{role}.txt")
    hang = os.environ.get("TFCOMP_DIST_HANG") == role
    lease = os.environ.get("TFCOMP_DIST_LEASE")
    extra = {"lease_timeout": float(lease)} if lease else {}

    class FakeAMC(AMCHyperModel):
        """Reward -sum((ratio - 0.6)^2); nothing is pruned."""

        def evaluate(self, hp, validation_data=None):
            counts = self.keep_counts(hp)
            sizes = {g.id: g.size for g in self.space.steps}
            reward = -sum((c / sizes[g] - 0.6) ** 2
                          for g, c in counts.items())
            time.sleep(0.3)  # long enough for both workers to take trials
            return ({"reward": reward,
                     "cost_ratio": self.predicted_cost(hp) / self.dense_cost},
                    Plan.from_keep(self.space.graph, {}))

    class LoggingTuner(AMCTuner):
        def run_trial(self, trial, *args, **kwargs):
            with open(log, "a") as f:
                f.write(trial.trial_id + "\n")
            if hang:
                with open(os.path.join(work_dir, f"hang_{role}.txt"),
                          "w") as f:
                    f.write(trial.trial_id + "\n")
                time.sleep(3600)  # until the test kills this worker
            return super().run_trial(trial, *args, **kwargs)

    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    hm = FakeAMC(model, x, (x, y), budget=0.5, round_to=1)
    tuner = LoggingTuner(hm, max_trials=max_trials, seed=0, warmup=2,
                         agent_config={"batch_size": 8, "hidden": (32, 32)},
                         directory=os.path.join(work_dir, role),
                         project_name="dist", overwrite=True, **extra)
    if role != "chief":
        # Start both workers' searches together (test coordination only;
        # the trials are handed out by keras-tuner's chief).
        _barrier(work_dir, role, ("tuner0", "tuner1"))
    tuner.search(verbose=0)
    with open(os.path.join(work_dir, f"done_{role}.txt"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    # gRPC's server threads (chief) can keep the interpreter alive.
    os._exit(0)
