"""Readable sequential reference twins of the scan ops (tests compare the fast paths to these)."""

from __future__ import annotations

import torch


def diagonal_scan_reference(lam: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """x_k = lam ⊙ x_{k-1} + bu_k with x_{-1} = 0, one step at a time.

    Shapes: ``lam`` (n,) complex, ``bu`` (batch, length, n) complex → x (batch, length, n).
    """
    if bu.shape[1] == 0:
        return torch.zeros_like(bu)
    x = torch.zeros_like(bu[:, 0])
    out = []
    for k in range(bu.shape[1]):
        x = lam * x + bu[:, k]
        out.append(x)
    return torch.stack(out, dim=1)


def dense_scan_reference(A: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """x_k = A x_{k-1} + bu_k with x_{-1} = 0, one step at a time.

    Shapes: ``A`` (n, n), ``bu`` (batch, length, n) → x (batch, length, n).
    """
    if bu.shape[1] == 0:
        return torch.zeros_like(bu)
    x = torch.zeros_like(bu[:, 0])
    out = []
    for k in range(bu.shape[1]):
        x = x @ A.transpose(-1, -2) + bu[:, k]
        out.append(x)
    return torch.stack(out, dim=1)


def diagonal_ssm_reference(
    lam: torch.Tensor, B: torch.Tensor, C: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """y_k = Re(C x_k), x_k = lam ⊙ x_{k-1} + B u_k, x_{-1} = 0, one step at a time.

    Shapes: ``lam`` (n,) complex, ``B`` (n, H) complex, ``C`` (P, n) complex, ``u`` (batch,
    length, H) real → y (batch, length, P) real.
    """
    x = torch.zeros(u.shape[0], lam.shape[0], dtype=lam.dtype, device=u.device)
    out = []
    for k in range(u.shape[1]):
        x = lam * x + u[:, k].to(lam.dtype) @ B.T
        out.append((x @ C.T).real)
    return torch.stack(out, dim=1) if out else u.new_zeros(u.shape[0], 0, C.shape[0])
