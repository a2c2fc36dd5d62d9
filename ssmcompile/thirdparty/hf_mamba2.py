"""Adapter for Hugging Face ``transformers``' ``Mamba2Mixer`` (kind ``hf-mamba2``; data-driven).

Found by class name through the bundle table (``ssmcompile.thirdparty``): nothing to register,
and ``transformers`` is never imported here — the mixer is read through its attributes.

Structure (the torch path of transformers 5.x): ``in_proj`` emits [gate (I) | xBC | Δ logits
(H)] with xBC = [x (I) | B (G·N) | C (G·N)]; xBC goes through a depthwise causal ``conv1d``
over all I + 2·G·N channels and then SiLU; Δ = softplus(Δ logits + dt_bias) clamped to
``time_step_limit``; the decay is one scalar per head, A_t = exp(Δ_t[h]·A_h)·I; heads
h·G/H … read group h // (H/G); a gated RMSNorm over the channels precedes ``out_proj``.

Calibration: the Mamba-2 (scalar decay) Gramian estimate of ``calibration`` per group,
(G, N, N), from the B_t, C_t the mixer computes on its captured input.

Rewrite: **index selection per group**, folded into the B / C rows of ``in_proj`` (its bias
too) and the matching ``conv1d`` channels (weight and bias). Group g keeps the r state indices
with the largest share of its kept balanced energy (``index_importance`` restricted to g), so
groups may keep different indices. The exact dense fold of our own ``Mamba2Block``
(B ← T⁻¹·B, C ← Tᵀ·C) is *not* available here: B and C pass through a per-channel convolution
with a different kernel per state coordinate and then through SiLU, and neither commutes with
a change of state basis, so T can only enter as a selection (a permutation-and-deletion
matrix), which does commute with both. Deleting coordinate n of a scalar-decay SSM drops
exactly that coordinate's contribution C_n·h_n (the kept coordinates evolve as before), so the
error is that contribution: measured by verification, never certified. At full rank nothing is
deleted and the mixer computes the same function bit for bit.

The rebuilt mixer is a new ``Mamba2Mixer`` with ``ssm_state_size = r`` (and the conv /
projection sizes that follow from it), built on the meta device from the original's attributes
(no RNG draw, no initialisation), with the original's dtype, device, ``layer_idx`` and train
mode; it runs in the HF model's forward, chunked and cached (generation) paths. A config-level
``state_size`` is the model's business: see :func:`ssmcompile.thirdparty.hf_models.reduce_hf`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MatchError, ShapeError
from ..numerics.system import LTISystem, TruncationResult
from ..selective.adapters import CalibrationOptions, _SelectiveAdapter, index_importance
from ..selective.calibration import scalar_decay_gramians, surrogate_system

__all__ = ["HFMamba2MixerAdapter", "mamba2_signals", "select_mamba2_states", "group_keep",
           "rebuild_like"]

_NEEDED = ("in_proj", "conv1d", "A_log", "dt_bias", "D", "norm", "out_proj", "ssm_state_size",
           "n_groups", "num_heads", "head_dim", "intermediate_size", "conv_dim", "act")


def _check_mixer(mixer: nn.Module) -> None:
    if not all(hasattr(mixer, n) for n in _NEEDED):
        raise MatchError(f"{type(mixer).__name__} is not a transformers Mamba2Mixer")


def rebuild_like(module: nn.Module, build: Callable[[], nn.Module],
                 values: dict[str, Tensor]) -> nn.Module:
    """A new module from ``build()`` holding ``values`` (name → tensor) and, for every other
    parameter or buffer, ``module``'s tensor of the same name.

    ``build`` runs under ``torch.device("meta")``: no memory, no initialisation and no draw
    from the global RNG (a rebuild mid-training must not shift the data stream). Each tensor
    takes the dtype of ``module``'s tensor of that name, the module's device, and parameters
    keep ``requires_grad`` and their Python attributes (``_no_weight_decay`` …); the train
    mode is copied. Shared by the bundled selective adapters."""
    with torch.device("meta"):
        new = build()
    old_p, old_b = dict(module.named_parameters()), dict(module.named_buffers())
    device = next(module.parameters()).device

    def value(name: str, old: dict[str, Tensor], want: torch.Size) -> Tensor:
        src = values.get(name, old.get(name))
        if src is None or tuple(src.shape) != tuple(want):
            got = None if src is None else tuple(src.shape)
            raise ShapeError(f"rebuild of {type(module).__name__}: {name} needs shape "
                             f"{tuple(want)}, has {got}")
        dtype = old[name].dtype if name in old else src.dtype
        return src.detach().to(device=device, dtype=dtype).clone()

    with torch.no_grad():
        for name, param in list(new.named_parameters()):
            owner_name, _, leaf = name.rpartition(".")
            owner = new.get_submodule(owner_name)
            fresh = nn.Parameter(value(name, old_p, param.shape))
            like = old_p.get(name)
            if like is not None:
                fresh.requires_grad_(like.requires_grad)
                for key, attr in vars(like).items():
                    setattr(fresh, key, attr)
            owner._parameters[leaf] = fresh
        for name, buf in list(new.named_buffers()):
            owner_name, _, leaf = name.rpartition(".")
            new.get_submodule(owner_name)._buffers[leaf] = value(name, old_b, buf.shape)
    return new.train(module.training)


def mamba2_signals(mixer: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Δ per head (batch, L, H), A (H,), B, C (batch, L, G, N) of a ``Mamba2Mixer`` for its
    input ``hidden`` (batch, L, hidden_size), recomputed as its torch path does (no padding
    mask, no cache)."""
    _check_mixer(mixer)
    if hidden.ndim != 3:
        raise ShapeError(f"calibration input must be (batch, L, hidden), got "
                         f"{tuple(hidden.shape)}")
    batch, L, _ = hidden.shape
    I, G, N, H = (mixer.intermediate_size, mixer.n_groups, mixer.ssm_state_size,
                  mixer.num_heads)
    with torch.no_grad():
        _, xBC, dt = mixer.in_proj(hidden).split([I, mixer.conv_dim, H], dim=-1)
        xBC = mixer.act(mixer.conv1d(xBC.transpose(1, 2))[..., :L]).transpose(1, 2)
        _, B, C = torch.split(xBC, [I, G * N, G * N], dim=-1)
        delta = F.softplus(dt + mixer.dt_bias)
        lo, hi = getattr(mixer, "time_step_limit", (0.0, float("inf")))
        delta = delta.clamp(min=lo, max=hi)
    return (delta, -torch.exp(mixer.A_log.detach().float()), B.reshape(batch, L, G, N),
            C.reshape(batch, L, G, N))


def group_keep(result: TruncationResult, groups: int) -> Tensor:
    """(G, r) ascending state indices per group: the r largest shares of each group's kept
    balanced energy. A result with one system (no batch) serves every group."""
    r, N = result.rank, result.T.shape[-2]
    T = result.T.reshape(-1, N, result.T.shape[-1])
    Tinv = result.Tinv.reshape(-1, result.Tinv.shape[-2], N)
    hsv = result.hsv.reshape(-1, result.hsv.shape[-1])
    if T.shape[0] not in (1, groups):
        raise ShapeError(f"hf-mamba2: truncation result has {T.shape[0]} systems for "
                         f"{groups} groups")
    keeps = []
    for g in range(T.shape[0]):
        one = TruncationResult(result.system, hsv[g], r, result.tail, result.bound, T[g],
                               Tinv[g])
        keeps.append(torch.topk(index_importance(one), r).indices.sort().values)
    return torch.stack(keeps).expand(groups, r)


def _namespace(mixer: nn.Module, state_size: int) -> types.SimpleNamespace:
    """What ``Mamba2Mixer.__init__`` reads from its config, from the mixer's own attributes."""
    idx, kind = mixer.layer_idx, getattr(mixer, "layer_type", None)
    # config.layer_types[layer_idx] must give the mixer's own layer type back.
    layer_types = [kind] * (idx + 1) if isinstance(idx, int) and idx >= 0 else _Always(kind)
    return types.SimpleNamespace(
        num_heads=mixer.num_heads, hidden_size=mixer.hidden_size, state_size=state_size,
        conv_kernel=mixer.conv_kernel_size,
        # int(expand · hidden) must give intermediate_size back exactly: a Fraction does.
        expand=Fraction(mixer.intermediate_size, mixer.hidden_size),
        time_step_rank=mixer.time_step_rank, use_conv_bias=mixer.use_conv_bias,
        hidden_act=mixer.activation, layer_norm_epsilon=mixer.layer_norm_epsilon,
        n_groups=mixer.n_groups, head_dim=mixer.head_dim, chunk_size=mixer.chunk_size,
        time_step_limit=mixer.time_step_limit, time_step_min=mixer.time_step_min,
        time_step_max=mixer.time_step_max, time_step_floor=mixer.time_step_floor,
        use_bias=mixer.use_bias, layer_types=layer_types)


class _Always:
    def __init__(self, value) -> None:
        self.value = value

    def __getitem__(self, _index):
        return self.value


def select_mamba2_states(mixer: nn.Module, keep: Tensor) -> nn.Module:
    """A new ``Mamba2Mixer`` that keeps, in group g, the state indices ``keep[g]``
    (``keep``: (G, r) int64, ascending per row; the same r for every group)."""
    _check_mixer(mixer)
    I, G, N, H = (mixer.intermediate_size, mixer.n_groups, mixer.ssm_state_size,
                  mixer.num_heads)
    keep = keep.to(torch.int64).cpu()
    if keep.ndim != 2 or keep.shape[0] != G or not 1 <= keep.shape[1] <= N:
        raise ShapeError(f"hf-mamba2: keep must be (groups={G}, r ≤ {N}), got "
                         f"{tuple(keep.shape)}")
    if bool((keep < 0).any()) or bool((keep >= N).any()):
        raise ShapeError(f"hf-mamba2: state indices must lie in 0..{N - 1}")
    r = int(keep.shape[1])
    flat = (torch.arange(G).unsqueeze(1) * N + keep).reshape(-1)  # within a B (or C) block
    channels = torch.cat([torch.arange(I), I + flat, I + G * N + flat])  # conv channels
    rows = torch.cat([torch.arange(I), I + channels,
                      torch.arange(2 * I + 2 * G * N, 2 * I + 2 * G * N + H)])  # in_proj
    dev = mixer.in_proj.weight.device
    rows, channels = rows.to(dev), channels.to(dev)
    values = {"in_proj.weight": mixer.in_proj.weight.detach()[rows],
              "conv1d.weight": mixer.conv1d.weight.detach()[channels]}
    if mixer.in_proj.bias is not None:
        values["in_proj.bias"] = mixer.in_proj.bias.detach()[rows]
    if mixer.conv1d.bias is not None:
        values["conv1d.bias"] = mixer.conv1d.bias.detach()[channels]
    config = _namespace(mixer, r)
    return rebuild_like(mixer, lambda: type(mixer)(config, layer_idx=mixer.layer_idx,
                                                   initialize_mixer_weights=False), values)


class HFMamba2MixerAdapter(_SelectiveAdapter):
    """Core adapter for one ``transformers`` ``Mamba2Mixer``: calibrated Gramians per group,
    index selection per group (see the module docstring)."""

    kind = "hf-mamba2"

    def __init__(self, options: CalibrationOptions | None = None) -> None:
        super().__init__(options)

    def state_dim(self, module: nn.Module) -> int:
        _check_mixer(module)
        return int(module.ssm_state_size)

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        """Surrogate (A = 0, B = L_P, C = L_Qᵀ), batch (n_groups,), N × N, float64."""
        if u.ndim != 3:
            raise ShapeError(f"calibration input must be (batch, L, hidden), got "
                             f"{tuple(u.shape)}")
        delta, A, B, C = mamba2_signals(module, u[: self.options.max_sequences])
        return surrogate_system(*scalar_decay_gramians(delta, A, B, C))

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        _check_mixer(module)
        N = int(module.ssm_state_size)
        if not isinstance(result, TruncationResult) or result.T.shape[-2] != N:
            raise ShapeError(f"{self.kind}: truncation result does not belong to a mixer with "
                             f"N = {N}")
        return select_mamba2_states(module, group_keep(result, int(module.n_groups)))

    def lower(self, module: nn.Module) -> nn.Module:
        """The mixer's sequence path on our selective-scan op (for export; the same map)."""
        from .lowered import LoweredMixer, Mamba2Like

        _check_mixer(module)
        return LoweredMixer(Mamba2Like(module).train(module.training))
