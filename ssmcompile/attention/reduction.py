"""Writing a reduced key axis into a linear-attention layer: key maps, rank rounding, rebuild.

A reduction of d_k → r per head is a pair of maps (M_k, M_q), each (heads, r, d_k): the new
layer's keys are M_k k and queries M_q q, so q'ᵀk' = qᵀ M_qᵀ M_k k ≈ qᵀk. Three ways, by what
the layer lets through exactly at full rank (``LinearAttentionConfig.reduction_method``):

- ``"fold"`` (scalar decay, no conv, no q/k norm): the balancing maps themselves,
  M_k = Tinv, M_q = Tᵀ (Tinv T = I_r; at r = d_k, T Tinv = I so qᵀk is preserved). The state
  transforms as S' = Tinv S, which commutes with the scalar decay.
- ``"orthogonal"`` (q/k L2 norm and/or the delta rule, no conv): M_k = M_q = Uᵀ with U
  (d_k, r) orthonormal columns. Uᵀ preserves norms (normalisation commutes with it at full rank)
  and Uᵀ(I − β k kᵀ)U = I − β (Uᵀk)(Uᵀk)ᵀ on span(U). U is the dominant subspace of both balanced
  factors (in the spirit of Penzl's dominant-subspace projection): the leading r left singular
  vectors of [L_P V_r / ‖·‖_F, L_Q U_r / ‖·‖_F] = [T Σ^½, Tinvᵀ Σ^½] normalised.
- ``"select"`` (a depthwise conv acts per key channel): keep r channels per head, ranked by
  their share of the kept balanced energy (``selective.adapters.index_importance``, per head);
  M is rows of the identity and the conv's weights of the kept channels are kept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import RankError, ShapeError
from ..numerics.system import TruncationResult
from ..selective.adapters import index_importance
from .layer import LinearAttention

__all__ = ["KeyMaps", "METHODS", "apply_key_maps", "key_maps", "round_rank"]

METHODS = ("fold", "orthogonal", "select")
# Which methods are exact at full rank for a layer whose own best method is the key.
_ALLOWED = {"fold": METHODS, "orthogonal": ("orthogonal", "select"), "select": ("select",)}


def round_rank(rank: int, n: int, multiple: int = 1) -> int:
    """``rank`` rounded up to a multiple of ``multiple`` (kernel tile sizes), at most ``n``."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise RankError(f"multiple must be an int >= 1, got {multiple!r}")
    if not 1 <= rank <= n:
        raise RankError(f"rank must be in 1..{n}, got {rank}")
    return min(n, math.ceil(rank / multiple) * multiple)


@dataclass(frozen=True)
class KeyMaps:
    """``M_k``, ``M_q`` (heads, r, d_k) float64; ``channels`` (heads, r) int64 ascending for
    ``"select"``, else None; ``method`` one of :data:`METHODS`."""

    method: str
    M_k: Tensor
    M_q: Tensor
    channels: Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.M_k.shape[-2])


def _unit(X: Tensor) -> Tensor:
    # Frobenius-normalised, so that the scale of q against k (arbitrary) does not decide
    # which side's subspace dominates.
    return X / torch.linalg.matrix_norm(X).clamp_min(1e-300)[..., None, None]


def _orthogonal_basis(result: TruncationResult) -> Tensor:
    """U (heads, d_k, r), orthonormal columns (see the module docstring)."""
    r = result.rank
    root = result.hsv[..., :r].clamp_min(0).sqrt().unsqueeze(-2)
    both = torch.cat([_unit(result.T * root), _unit(result.Tinv.mT * root)], dim=-1)
    return torch.linalg.svd(both, full_matrices=False)[0][..., :r]


def _channels(result: TruncationResult) -> Tensor:
    """(heads, r) kept channels per head, ascending."""
    keep = []
    for h in range(result.T.shape[0]):
        head = dataclasses.replace(result, hsv=result.hsv[h], T=result.T[h],
                                   Tinv=result.Tinv[h])
        keep.append(torch.topk(index_importance(head), result.rank).indices.sort().values)
    return torch.stack(keep)


def key_maps(result: TruncationResult, method: str) -> KeyMaps:
    """The maps for ``result`` (of per-head key Gramians: T (heads, d_k, r), Tinv (heads, r,
    d_k), real) written the ``method`` way."""
    if result.T.ndim != 3 or result.T.is_complex() or result.Tinv.is_complex():
        raise ShapeError("key maps need real per-head T (heads, d_k, r) / Tinv (heads, r, d_k)")
    T, Tinv = result.T.to(torch.float64), result.Tinv.to(torch.float64)
    if method == "fold":
        return KeyMaps(method, Tinv, T.mT)
    if method == "orthogonal":
        U = _orthogonal_basis(dataclasses.replace(result, T=T, Tinv=Tinv))
        return KeyMaps(method, U.mT, U.mT)
    if method == "select":
        idx = _channels(result)
        eye = torch.eye(T.shape[-2], dtype=torch.float64)
        M = eye[idx]  # (heads, r, d_k)
        return KeyMaps(method, M, M, idx)
    raise ShapeError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _mapped(weight: Tensor, M: Tensor) -> Tensor:
    """Per-head M (heads, r, d_k) applied to a projection weight (heads·d_k, d) → (heads·r, d)."""
    H, r, dk = M.shape
    W = weight.detach().to(torch.float64).reshape(H, dk, -1)
    return (M @ W).reshape(H * r, -1)


def apply_key_maps(layer: LinearAttention, maps: KeyMaps) -> LinearAttention:
    """A NEW layer with key dimension ``maps.rank`` (the original untouched; no RNG draw)."""
    c = layer.config
    H, dk = c.heads, layer.state_dim
    if maps.M_k.shape[0] != H or maps.M_k.shape[-1] != dk:
        raise ShapeError(f"key maps {tuple(maps.M_k.shape)} do not fit {H} heads of d_k = {dk}")
    if maps.method not in _ALLOWED[c.reduction_method]:
        raise ShapeError(f"a {maps.method!r} reduction is not exact for this layer "
                         f"({c.reduction_method!r} or a stricter one is needed)")
    values = dict(layer.state_dict())
    values["q_proj.weight"] = _mapped(layer.q_proj.weight, maps.M_q)
    values["k_proj.weight"] = _mapped(layer.k_proj.weight, maps.M_k)
    if c.conv_size:
        heads = torch.arange(H).unsqueeze(-1) * dk
        idx = (heads + maps.channels).flatten()
        rest = torch.arange(2 * H * dk, layer.conv.weight.shape[0])
        values["conv.weight"] = layer.conv.weight.detach()[torch.cat([idx, H * dk + idx, rest])]
    p = layer.q_proj.weight
    config = dataclasses.replace(c, key_dim=maps.rank)  # keeps the resolved scale
    new = type(layer)(config, device="meta", dtype=p.dtype).to_empty(device=p.device)
    with torch.no_grad():
        for name, t in new.state_dict().items():
            if tuple(values[name].shape) != tuple(t.shape):
                raise ShapeError(f"{name}: value {tuple(values[name].shape)} vs {tuple(t.shape)}")
            t.copy_(values[name].to(t.dtype))
    grads = {n: q.requires_grad for n, q in layer.named_parameters()}
    for name, param in new.named_parameters():
        param.requires_grad_(grads[name])
    return new.train(layer.training)
