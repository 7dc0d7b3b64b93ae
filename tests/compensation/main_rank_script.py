"""Run twice by tests/compensation/test_compensation_ranks.py: ``rank store_file out_dir`` (a 2-process gloo group).

Each rank makes *its own* compensation result (two maps, and the two blocks a reconstruction trained, in bf16 with an
integer buffer), then ``on_main_rank`` must give every rank rank 0's. Then rank 0's fit fails: every rank must raise.
Each rank writes what it ended with as JSON."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from optimum_depth.compensation.chains import TrainedCut
from optimum_depth.compensation.compensate import CompensationResult, on_main_rank
from optimum_depth.compensation.cuts import Fold
from optimum_depth.compensation.walk import FittedMap
from optimum_depth.config import CompensationConfig
from optimum_depth.errors import ConfigError


def own_result(rank: int) -> CompensationResult:
    generator = torch.Generator().manual_seed(rank)
    maps = [
        FittedMap(Fold(1, 3, (2, 3)), torch.randn(4, 4, dtype=torch.float64, generator=generator), 0.01, 0.5 + rank),
        FittedMap(Fold(5, 6, (6,)), torch.randn(4, 4, dtype=torch.float64, generator=generator), None, 0.25),
    ]
    states = [
        {"mlp.weight": torch.randn(3, 4, generator=generator).bfloat16(), "steps": torch.tensor([rank, 7])},
        {"norm.weight": torch.full((4,), float(rank))},
    ]
    trained = [TrainedCut(Fold(1, 3, (2, 3)), [0, 1], states, {"steps": 10 + rank, "heldout_loss_after": 0.5})]
    config = CompensationConfig(method="reconstruct", seed=rank)
    return CompensationResult(maps, config, {"source": f"rank {rank}"}, 1.5 + rank, trained)


def describe(result: CompensationResult) -> dict:
    return {
        "record": result.record(),
        "transforms": [m.transform.tolist() for m in result.maps],
        "dtypes": [str(m.transform.dtype) for m in result.maps],
        "states": [
            {key: [str(value.dtype), value.float().tolist()] for key, value in state.items()}
            for cut in result.trained
            for state in cut.states
        ],
        "trained_blocks": [cut.blocks for cut in result.trained],
    }


def fail() -> CompensationResult:
    raise ConfigError("rank 0 cannot fit")


def main(rank: int, store_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store_file, 2), rank=rank, world_size=2)
    report = describe(on_main_rank(lambda: own_result(rank)))
    try:
        on_main_rank(fail if rank == 0 else lambda: own_result(rank))
    except (ConfigError, RuntimeError) as err:
        report["failure"] = f"{type(err).__name__}: {err}"
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
