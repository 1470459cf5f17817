"""A user's training loop with gradlab.Tracker, for the watch test: `python writer.py OUT EPOCHS PAUSE_S`.

Deterministic on CPU (fixed seeds), so two runs write the same numbers; it sleeps PAUSE_S after
each committed epoch, as a long epoch would, and prints one line per commit."""
import sys
import time

import torch
from torch import nn

import gradlab

out, epochs, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)


def batches():
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]


model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
data = batches()
with gradlab.Tracker(model, out, {"random": batches(), "mine": batches()}) as t:
    for e in range(epochs):
        t.epoch_start()
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            t.step()
        t.epoch_end(lr=0.1 if e < 2 else 0.01, train_loss=1.0 / (e + 1))
        print("committed", e, flush=True)
        time.sleep(pause)
