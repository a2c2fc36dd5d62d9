"""Shrink an SSM inside your own PyTorch training loop with ``ReductionScheduler``.

A plain loop on sequential digits (8×8 images read pixel by pixel, L = 64): one call per step,
``model, optimizer, event = reducer.step(model, optimizer, step)``, keeps training whatever
model it returns. At the scheduled steps (by default 4 events in the first 10 % of training)
the pipeline balanced-truncates each SSM block, the optimizer is moved onto the smaller model
in place (untouched parameters keep their AdamW state, the LR schedule keeps going).

    python examples/own_training_loop.py [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.train import ReductionSchedule, ReductionScheduler
from ssmcompile.train.data import load_digits_task


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_digits_task()  # bundled with scikit-learn: nothing is downloaded
    model = build_model(ModelSpec(layer="lru", d_input=1, d_model=32, state_dims=(64,),
                                  d_output=10, dropout=0.1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3,
                                                      total_steps=args.steps)
    reducer = ReductionScheduler(
        "hankel-analysis,balanced-truncation{tau=0.05},verify",  # the policy, as a pipeline
        ReductionSchedule(),  # 4 events at 2.5 %, 5 %, 7.5 %, 10 % of the steps
        example_inputs=data.train.x[:64],  # what the pipeline analyses and verifies on
        total_steps=args.steps,
    )
    batches = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    print(f"state dims {model.state_dims}, {args.steps} steps, {args.threads} thread(s)")
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(data.train), (64,), generator=batches)
        loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        model, optimizer, event = reducer.step(model, optimizer, step)
        if event is not None:
            print(f"{event.summary()}  (val acc {accuracy(model, data.val.x, data.val.y):.3f})")
    seconds = time.perf_counter() - start
    print(f"final state dims {model.state_dims}; test accuracy "
          f"{accuracy(model, data.test.x, data.test.y):.3f}; {seconds:.1f} s "
          f"({args.steps / seconds:.1f} steps/s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
