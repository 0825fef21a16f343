#!/usr/bin/env python
"""The MNIST ODE-Net of Chen et al. 2018 in PyTorch + torchdiffeq: the peer of `scripts/bench_ode.py`.

Runs in the benchmark venv (`.bench-venv/`: torch, torchdiffeq; never a pde_zoo dependency), as
a child process of bench_ode.py that answers one JSON line per command read from stdin, so the
parent can alternate repeats between this process and its own TensorFlow model.

The network follows torchdiffeq's examples/odenet_mnist.py (downsampling "conv"): stem
Conv2d(1, 64, 3) -> GroupNorm -> ReLU -> Conv2d(64, 64, 4, 2, 1) -> GroupNorm -> ReLU ->
Conv2d(64, 64, 4, 2, 1); one ODE block over [0, 1] whose field is
GroupNorm -> ReLU -> ConcatConv2d -> GroupNorm -> ReLU -> ConcatConv2d -> GroupNorm
(ConcatConv2d: a 3x3 conv of [t, x], the time channel first); head GroupNorm -> ReLU ->
AdaptiveAvgPool2d(1) -> Linear(64, 10). GroupNorm has min(32, C) groups. Loss: cross-entropy;
optimizer: Adam(1e-3), as the zoo's `compile_model`.

Commands (one per line on stdin; one JSON object per line on stdout):
    init <seed>              weights from PyTorch's default initialisation under torch.manual_seed(seed)
    load <npz>               weights of the zoo's `odenet` (Keras layout, names as its layers), converted
    data <npz>               the batch: x (N, 28, 28, 1) float32 in [0, 1], y (N,) integers
    nfe <mode> [<npy>]       one eager forward + backward at the current weights (mode "backprop"
                             or "adjoint"): forward / backward NFE and the loss; the softmax
                             outputs saved to <npy> when given
    time <mode> <steps>      `steps` training steps, each from the current weights (restored
                             after every step, untimed): the wall and the CPU seconds (all the
                             process's threads) of each
    forward <mode> <calls>   `calls` forward passes as in training (autograd on, no backward):
                             the seconds of each
    quit
"""

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torchdiffeq import odeint, odeint_adjoint


def norm(dim):
    return nn.GroupNorm(min(32, dim), dim)


class ConcatConv2d(nn.Module):
    """A conv of [t, x]: a channel filled with t, then x (torchdiffeq's example)."""

    def __init__(self, dim_in, dim_out, ksize=3, stride=1, padding=1):
        super().__init__()
        self._layer = nn.Conv2d(dim_in + 1, dim_out, kernel_size=ksize, stride=stride, padding=padding)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1, :, :]) * t
        return self._layer(torch.cat([tt, x], 1))


class ODEfunc(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = norm(dim), norm(dim), norm(dim)
        self.conv1, self.conv2 = ConcatConv2d(dim, dim), ConcatConv2d(dim, dim)
        self.relu = nn.ReLU(inplace=True)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        out = self.conv1(t, self.relu(self.norm1(x)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    def __init__(self, odefunc, rtol, atol, adjoint):
        super().__init__()
        self.odefunc = odefunc
        self.integration_time = torch.tensor([0.0, 1.0])
        self.rtol, self.atol, self.adjoint = rtol, atol, adjoint

    def forward(self, x):
        solve = odeint_adjoint if self.adjoint else odeint
        return solve(self.odefunc, x, self.integration_time.type_as(x), rtol=self.rtol, atol=self.atol, method="dopri5")[1]


class ODENet(nn.Module):
    def __init__(self, dim=64, rtol=1e-3, atol=1e-3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, dim, 3, 1), norm(dim), nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 4, 2, 1), norm(dim), nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 4, 2, 1),
        )
        self.block = ODEBlock(ODEfunc(dim), rtol, atol, adjoint=False)
        self.head = nn.Sequential(norm(dim), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, 10))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def load_keras_weights(model, path):
    """Copy the zoo's `odenet` weights (NHWC Keras layout, time channel last) into `model`."""
    w = np.load(path)

    def conv(module, name, time_first=False):
        kernel = w[f"{name}/kernel"]  # (kh, kw, in, out)
        if time_first:  # Keras appends t as the last input channel; ConcatConv2d puts it first
            kernel = np.concatenate([kernel[:, :, -1:], kernel[:, :, :-1]], axis=2)
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        module.bias.copy_(torch.from_numpy(w[f"{name}/bias"]))

    def gn(module, name):
        module.weight.copy_(torch.from_numpy(w[f"{name}/gamma"]))
        module.bias.copy_(torch.from_numpy(w[f"{name}/beta"]))

    with torch.no_grad():
        conv(model.stem[0], "stem_conv_1")
        gn(model.stem[1], "stem_norm_1")
        conv(model.stem[3], "stem_conv_2")
        gn(model.stem[4], "stem_norm_2")
        conv(model.stem[6], "stem_conv_3")
        f = model.block.odefunc
        gn(f.norm1, "field_1/norm_1")
        conv(f.conv1._layer, "field_1/conv_1", time_first=True)
        gn(f.norm2, "field_1/norm_2")
        conv(f.conv2._layer, "field_1/conv_2", time_first=True)
        gn(f.norm3, "field_1/norm_3")
        gn(model.head[0], "head_norm")
        model.head[4].weight.copy_(torch.from_numpy(np.ascontiguousarray(w["predictions/kernel"].T)))
        model.head[4].bias.copy_(torch.from_numpy(w["predictions/bias"]))


class Peer:
    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.model = ODENet(rtol=rtol, atol=atol)
        self.initial = None
        self.x = self.y = None

    def _reset(self):
        self.model.load_state_dict(self.initial)

    def init(self, seed):
        torch.manual_seed(int(seed))
        self.model = ODENet(rtol=self.rtol, atol=self.atol)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.initial = copy.deepcopy(self.model.state_dict())
        return {"params": sum(p.numel() for p in self.model.parameters())}

    def load(self, path):
        load_keras_weights(self.model, path)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.initial = copy.deepcopy(self.model.state_dict())
        return {"params": sum(p.numel() for p in self.model.parameters())}

    def data(self, path):
        d = np.load(path)
        self.x = torch.from_numpy(np.ascontiguousarray(d["x"].transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(d["y"].astype(np.int64))
        return {"batch": int(self.x.shape[0])}

    def _step(self, mode):
        self.model.block.adjoint = mode == "adjoint"
        self.optimizer.zero_grad()
        logits = self.model(self.x)
        loss = nn.functional.cross_entropy(logits, self.y)
        loss.backward()
        self.optimizer.step()
        return logits, loss

    def nfe(self, mode, probs_path=None):
        self._reset()
        f = self.model.block.odefunc
        self.model.block.adjoint = mode == "adjoint"
        self.optimizer.zero_grad()
        f.nfe = 0
        logits = self.model(self.x)
        forward = f.nfe
        loss = nn.functional.cross_entropy(logits, self.y)
        f.nfe = 0
        loss.backward()
        backward = f.nfe
        self._reset()
        if probs_path:
            np.save(probs_path, torch.softmax(logits, dim=1).detach().numpy())
        return {"nfe_forward": forward, "nfe_backward": backward, "loss": float(loss.detach())}

    def time(self, mode, steps):
        times, cpu = [], []
        for _ in range(int(steps)):
            self._reset()
            start, start_cpu = time.perf_counter(), time.process_time()
            self._step(mode)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        self._reset()
        return {"seconds": times, "cpu_seconds": cpu}

    def forward(self, mode, calls):
        self.model.block.adjoint = mode == "adjoint"
        times = []
        for _ in range(int(calls)):
            start = time.perf_counter()
            self.model(self.x)
            times.append(time.perf_counter() - start)
        return {"seconds": times}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (intra-op threads)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peer = Peer(args.rtol, args.atol)
    peer.init(0)
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            out = getattr(peer, words[0])(*words[1:])
        except Exception as e:  # noqa: BLE001  reported to the parent, which fails loudly
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
