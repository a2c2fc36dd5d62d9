"""Adapter for Hugging Face ``transformers``' ``FalconMambaMixer`` (kind ``hf-falcon-mamba``).

Found by class name through the bundle table (``ssmcompile.thirdparty``): nothing to register,
and ``transformers`` is never imported here.

FalconMamba's mixer is a Mamba-1 mixer (per-channel diagonal A (I, N), ``x_proj`` emitting a
low-rank Δ logit and one B_t, C_t ∈ R^N shared by all channels) with three extra RMS norms,
applied right after ``x_proj``: ``dt_layernorm`` on the Δ logit, ``b_layernorm`` on B_t and
``c_layernorm`` on C_t, each over its last dimension — for B and C the *state* dimension.
Calibration estimates the Mamba-1 Gramians (``calibration.diagonal_decay_gramians``) from the
normalised B_t, C_t, i.e. from the signals the scan really sees; reduction keeps the ``r`` state
indices with the largest share of the kept balanced energy (columns of ``A_log``, B and C rows
of ``x_proj``), as for Mamba-1.

What the norms do to an index deletion. In transformers' torch path the three norms are
*weightless* (``FalconMambaWeightlessRMSNorm``: x / rms(x); its ``weight`` is a non-persistent
buffer of ones, used only by the fused CUDA kernel); it is sliced with the kept indices anyway,
so the kernel path sees the same norm. The normalisation itself cannot be sliced: the reduced
mixer divides the kept entries by their own RMS over r entries, not by the RMS over all N, so
every kept B_t (and C_t) is rescaled by the token-dependent factor
s_t = rms_N(B_t) / rms_r(B_t[keep]) (≈ sqrt(r / (N·E_t)) with E_t the share of ‖B_t‖² the kept
indices carry; below 1 when the kept indices are the energetic ones). No weight can undo a
data-dependent factor, so **the reduction is approximate twice over**: the deleted states'
contribution is lost (as for Mamba-1) *and* the kept states' input/output gains change by
s_t^B·s_t^C. Both are in the measured error verification reports; nothing is certified.
At full rank nothing is deleted, the RMS is over the same N entries, and the mixer is unchanged
bit for bit.

The rebuilt mixer is a new ``FalconMambaMixer`` with a config copy whose ``state_size = r``,
built on the meta device (no RNG draw), with the original's dtype, device, ``layer_idx`` and
train mode. A model-level ``state_size`` is set by
:func:`ssmcompile.thirdparty.hf_models.reduce_hf`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MatchError, ShapeError
from ..numerics.system import LTISystem, TruncationResult
from ..selective.adapters import CalibrationOptions, _SelectiveAdapter, keep_indices
from ..selective.calibration import diagonal_decay_gramians, surrogate_system
from .hf_mamba2 import rebuild_like

__all__ = ["HFFalconMambaMixerAdapter", "falcon_mamba_signals", "select_falcon_mamba_states"]

_NEEDED = ("in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "D", "out_proj",
           "ssm_state_size", "time_step_rank", "act", "b_layernorm", "c_layernorm",
           "dt_layernorm", "config")


def _check_mixer(mixer: nn.Module) -> None:
    if not all(hasattr(mixer, n) for n in _NEEDED):
        raise MatchError(f"{type(mixer).__name__} is not a transformers FalconMambaMixer")


def falcon_mamba_signals(mixer: nn.Module, hidden: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Δ (batch, L, I), A (I, N), B, C (batch, L, N) — B and C after their RMS norms — of a
    ``FalconMambaMixer`` for its input ``hidden`` (batch, L, hidden_size), as its torch path
    computes them."""
    _check_mixer(mixer)
    if hidden.ndim != 3:
        raise ShapeError(f"calibration input must be (batch, L, hidden), got "
                         f"{tuple(hidden.shape)}")
    L, N, R = hidden.shape[1], mixer.ssm_state_size, mixer.time_step_rank
    with torch.no_grad():
        x, _ = mixer.in_proj(hidden).chunk(2, dim=-1)
        x = mixer.act(mixer.conv1d(x.transpose(1, 2))[..., :L]).transpose(1, 2)
        dt, B, C = torch.split(mixer.x_proj(x), [R, N, N], dim=-1)
        dt, B, C = mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)
        delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias)
    return delta, -torch.exp(mixer.A_log.detach().float()), B, C


def select_falcon_mamba_states(mixer: nn.Module, keep: Tensor) -> nn.Module:
    """A new ``FalconMambaMixer`` keeping the state indices ``keep`` ((r,) int64, ascending)."""
    _check_mixer(mixer)
    N, R = int(mixer.ssm_state_size), int(mixer.time_step_rank)
    keep = keep.to(torch.int64).cpu()
    if keep.ndim != 1 or not 1 <= keep.numel() <= N or bool((keep < 0).any()) \
            or bool((keep >= N).any()):
        raise ShapeError(f"hf-falcon-mamba: keep must be 1..{N} indices in 0..{N - 1}")
    rows = torch.cat([torch.arange(R), R + keep, R + N + keep])
    dev = mixer.A_log.device
    values = {"A_log": mixer.A_log.detach()[:, keep.to(dev)],
              "x_proj.weight": mixer.x_proj.weight.detach()[rows.to(dev)]}
    for norm in ("b_layernorm", "c_layernorm"):  # the kernel path's (unit) norm weights
        weight = getattr(getattr(mixer, norm), "weight", None)
        if isinstance(weight, Tensor) and weight.shape == (N,):
            values[f"{norm}.weight"] = weight.detach()[keep.to(weight.device)]
    config = copy.deepcopy(mixer.config)
    config.state_size = int(keep.numel())
    return rebuild_like(mixer, lambda: type(mixer)(config, layer_idx=mixer.layer_idx,
                                                   initialize_mixer_weights=False), values)


class HFFalconMambaMixerAdapter(_SelectiveAdapter):
    """Core adapter for one ``FalconMambaMixer``: Mamba-1 calibration on the normalised B, C;
    index selection (approximate beyond the deletion: see the module docstring)."""

    kind = "hf-falcon-mamba"

    def __init__(self, options: CalibrationOptions | None = None) -> None:
        super().__init__(options)

    def state_dim(self, module: nn.Module) -> int:
        _check_mixer(module)
        return int(module.ssm_state_size)

    def caveat(self, module: nn.Module) -> str:
        return ("FalconMamba's RMS norms on B and C renormalise over the kept states, so a "
                "reduced mixer also rescales them (error measured, not bounded)")

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (groups,), N × N, float64."""
        if u.ndim != 3:
            raise ShapeError(f"calibration input must be (batch, L, hidden), got "
                             f"{tuple(u.shape)}")
        delta, A, B, C = falcon_mamba_signals(module, u[: self.options.max_sequences])
        return surrogate_system(*diagonal_decay_gramians(delta, A, B, C, self.options.groups))

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        _check_mixer(module)
        N = int(module.ssm_state_size)
        if not isinstance(result, TruncationResult) or result.T.shape[-2] != N:
            raise ShapeError(f"{self.kind}: truncation result does not belong to a mixer with "
                             f"N = {N}")
        return select_falcon_mamba_states(module, keep_indices(result))

    def lower(self, module: nn.Module) -> nn.Module:
        """Our Mamba-1 block with this mixer's weights and its weightless RMS norms on Δ, B and
        C (for export; the same map)."""
        from .lowered import mamba1_from

        return mamba1_from(module, d_model=module.in_proj.in_features,
                           d_state=module.ssm_state_size, d_conv=module.conv_kernel_size,
                           d_inner=module.intermediate_size, dt_rank=module.time_step_rank,
                           rms_eps=float(module.rms_eps))
