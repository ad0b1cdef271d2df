"""torchrun / DDP on CPU with the gloo backend, and the per-epoch samplers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from kefer.train.distributed import EpochSampler, ShardSampler

ROOT = Path(__file__).resolve().parents[1]


def test_epoch_sampler_is_seeded_per_epoch_and_can_balance_classes():
    targets = [0] * 900 + [1] * 100
    sampler = EpochSampler(targets, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(1000)) and first == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    balanced = EpochSampler(targets, seed=3, balance="oversample")
    rare = sum(targets[i] for i in balanced) / len(balanced)
    assert 0.4 < rare < 0.6


def test_shard_sampler_single_process_visits_everything_once():
    assert list(ShardSampler(5)) == [0, 1, 2, 3, 4]


def test_torchrun_two_processes_gloo(ferplus_root, tmp_path):
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    cmd = [*torchrun.split(), "--nproc_per_node", "2", "train.py", "--dataset", "ferplus",
           "--data-root", str(ferplus_root), "--preset", "cpu", "--device", "cpu", "--max-train-samples", "256",
           "--batch-size", "32", "--epochs", "1", "--no-plots", "--output", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x 2 processes" in r.stdout
    assert r.stdout.count("[kefer] epoch 1/1") == 1, "only the main process prints"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n"] == 3137, "test predictions are gathered from both processes"
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert len(state["history"]) == 1
