"""Time of one EMA update of the baseline CNN's averaged weights: the fused update the train rule
uses (skinlesion.train.callbacks.ema_update) against the same average updated tensor by tensor.

    python benchmarks/ema_update.py [--updates 50]
"""

import argparse
import time

import torch
from torch.optim.swa_utils import AveragedModel

from skinlesion.train.callbacks import ema_decay, ema_update
from skinlesion.train.models import BaselineCNN


def per_tensor(decay: float):
    def ema(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return averaged + (current - averaged) * (1 - ema_decay(decay, float(n)))

    return ema


def median_ms(average: AveragedModel, model: torch.nn.Module, updates: int) -> float:
    for _ in range(5):
        average.update_parameters(model)
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        average.update_parameters(model)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--decay", type=float, default=0.998)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = BaselineCNN(7)
    fused = AveragedModel(model, use_buffers=True, multi_avg_fn=ema_update(args.decay))
    slow = AveragedModel(model, use_buffers=True, avg_fn=per_tensor(args.decay))
    print(f"fused _foreach_lerp_: {median_ms(fused, model, args.updates):.2f} ms per update")
    print(f"tensor by tensor:     {median_ms(slow, model, args.updates):.2f} ms per update")


if __name__ == "__main__":
    main()
