"""Models shared by the compiler tests: small deep models of every kind and a user-style model."""

from __future__ import annotations

import math

import torch
from torch import nn

from ssmcompile.layers import ModelSpec, build_model
from ssmcompile.ops import diagonal_scan_real

KINDS = ("lru", "s5", "s4d", "dense")


def small_model(kind: str, dims=(12, 10), seed: int = 0, H: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    spec = ModelSpec(layer=kind, d_model=H, state_dims=tuple(dims), d_output=3, d_input=2,
                     norm="layer")
    return build_model(spec).double().eval()


class UserDiagonalSSM(nn.Module):
    """A layer a user might write: own names, own parameterisation, calls our scan op."""

    def __init__(self, width: int, n: int):
        super().__init__()
        radius = torch.linspace(0.5, 0.97, n)
        self.log_decay = nn.Parameter(torch.log(-torch.log(radius)))
        self.angle = nn.Parameter(torch.linspace(0.1, math.pi - 0.1, n))
        self.w_in_real = nn.Parameter(torch.randn(n, width) / math.sqrt(width))
        self.w_in_imag = nn.Parameter(torch.randn(n, width) / math.sqrt(width))
        self.readout = nn.Linear(2 * n, width, bias=False)
        self.skip = nn.Parameter(torch.randn(width))

    def forward(self, u):
        mag = torch.exp(-torch.exp(self.log_decay))
        lam_re, lam_im = mag * torch.cos(self.angle), mag * torch.sin(self.angle)
        x_re, x_im = diagonal_scan_real(lam_re, lam_im, u @ self.w_in_real.T,
                                        u @ self.w_in_imag.T)
        return self.readout(torch.cat([x_re, x_im], dim=-1)) + self.skip * u


class UserNet(nn.Module):
    def __init__(self, width: int = 5, n: int = 16):
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.mixer = UserDiagonalSSM(width, n)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        return self.out(torch.relu(self.mixer(h)) + h)


def user_net(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return UserNet().double().eval()
