"""Reduce the state size of a Hugging Face ``transformers.MambaForCausalLM`` (extra ``[hf]``).

Hugging Face's ``MambaMixer`` is a Mamba-1 block (same parameter names as
:class:`~ssmcompile.selective.Mamba1Block`), so reduction is index selection per layer:
columns of ``A_log`` and the B / C rows of ``x_proj`` (rows dt_rank + i and dt_rank + N + i).
The importance comes from calibration token ids: each mixer's input is captured, its Δ_t, B_t,
C_t recomputed, Gramians estimated (``calibration.diagonal_decay_gramians``) and the surrogate
balanced-truncated (``index_importance``).

The config holds one ``state_size`` for all layers, so every layer keeps the same r (the given
``rank``, or the largest per-layer rank the energy rule asks for at ``tau``). The result is a new
``MambaForCausalLM`` whose config says ``state_size = r``: ``save_pretrained`` /
``from_pretrained`` round-trip it with safetensors. ``transformers`` is imported lazily, never
by the rest of ssmcompile; nothing is downloaded.

:class:`HFMambaMixerAdapter` (``register_hf_adapter()``) also lets the compiler core reduce
mixers one by one inside a pipeline; each rebuilt mixer then carries its own config copy, so
use :func:`reduce_hf_mamba` for a model to save.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapters.base import register_block
from ..errors import CheckpointError, MatchError, RankError, ShapeError
from ..numerics import energy_rank, hankel_singular_values, truncate
from ..numerics.system import LTISystem, TruncationResult
from .adapters import CalibrationOptions, keep_indices
from .calibration import diagonal_decay_gramians, surrogate_system

__all__ = ["HFReduction", "HFMambaMixerAdapter", "mixer_signals", "calibrate_hf_mamba",
           "reduce_hf_mamba", "save_hf_mamba", "register_hf_adapter"]


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the extra is installed in dev
        raise MatchError("the Hugging Face adapter needs transformers: pip install "
                         "'ssmcompile[hf]'") from err
    return transformers


def _check_mixer(mixer: nn.Module) -> None:
    needed = ("in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "ssm_state_size",
              "time_step_rank", "act")
    if not all(hasattr(mixer, n) for n in needed):
        raise MatchError(f"{type(mixer).__name__} is not a transformers MambaMixer")


def mixer_signals(mixer: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Δ (batch, L, d_inner), A (d_inner, N), B, C (batch, L, N) of a ``MambaMixer`` for its
    input ``hidden`` (batch, L, hidden_size), recomputed as its torch path does."""
    _check_mixer(mixer)
    L, N, R = hidden.shape[1], mixer.ssm_state_size, mixer.time_step_rank
    with torch.no_grad():
        x, _ = mixer.in_proj(hidden).chunk(2, dim=-1)
        x = mixer.act(mixer.conv1d(x.transpose(1, 2))[..., :L]).transpose(1, 2)
        dt, B, C = torch.split(mixer.x_proj(x), [R, N, N], dim=-1)
        delta = F.softplus(dt @ mixer.dt_proj.weight.T + mixer.dt_proj.bias)
    return delta, -torch.exp(mixer.A_log.float()), B, C


def _layers(model: nn.Module) -> list[nn.Module]:
    backbone = getattr(model, "backbone", model)
    layers = getattr(backbone, "layers", None)
    if layers is None or not all(hasattr(block, "mixer") for block in layers):
        raise MatchError(f"{type(model).__name__} is not a MambaForCausalLM / MambaModel")
    return [block.mixer for block in layers]


def calibrate_hf_mamba(model: nn.Module, input_ids: Tensor,
                       options: CalibrationOptions | None = None) -> list[LTISystem]:
    """One surrogate system per layer (see ``calibration.surrogate_system``) from calibration
    token ids (batch, L). The model is run once in eval mode on a copy; it is not modified."""
    options = options or CalibrationOptions()
    replica = copy.deepcopy(model).eval()
    mixers = _layers(replica)
    seen: dict[int, Tensor] = {}

    def keep(i: int):
        def hook(mod, args) -> None:  # returns None: the mixer's input is left as it is
            seen.setdefault(i, args[0].detach())
        return hook

    hooks = [m.register_forward_pre_hook(keep(i)) for i, m in enumerate(mixers)]
    try:
        with torch.no_grad():
            replica(input_ids=input_ids[: options.max_sequences])
    finally:
        for h in hooks:
            h.remove()
    systems = []
    for i, mixer in enumerate(mixers):
        delta, A, B, C = mixer_signals(mixer, seen[i])
        systems.append(surrogate_system(*diagonal_decay_gramians(delta, A, B, C,
                                                                 options.groups)))
    return systems


@dataclass(frozen=True)
class HFReduction:
    """What :func:`reduce_hf_mamba` did: ``rank`` kept by every layer (of ``state_size``),
    ``hsv`` per layer ((groups, N) float64 each) and ``kept`` state indices per layer."""

    state_size: int
    rank: int
    hsv: tuple[Tensor, ...]
    kept: tuple[Tensor, ...]


def _sliced_state_dict(model: nn.Module, kept: list[Tensor]) -> dict[str, Tensor]:
    state = dict(model.state_dict())
    for i, (mixer, keep) in enumerate(zip(_layers(model), kept, strict=True)):
        N, R = mixer.ssm_state_size, mixer.time_step_rank
        rows = torch.cat([torch.arange(R), R + keep, R + N + keep])
        prefix = f"backbone.layers.{i}.mixer."
        state[prefix + "A_log"] = mixer.A_log.detach()[:, keep].clone()
        state[prefix + "x_proj.weight"] = mixer.x_proj.weight.detach()[rows].clone()
    return state


def reduce_hf_mamba(model: nn.Module, input_ids: Tensor, *, rank: int | None = None,
                    tau: float | None = None, options: CalibrationOptions | None = None
                    ) -> tuple[nn.Module, HFReduction]:
    """A new ``MambaForCausalLM`` with ``state_size = r`` (the original is untouched).

    Exactly one of ``rank`` (1..state_size) and ``tau`` (energy rule, the max over layers) must
    be given. ``input_ids`` (batch, L): calibration token ids. Returns (model in eval mode,
    :class:`HFReduction`). At r = state_size the new model computes the same logits.
    """
    if (rank is None) == (tau is None):
        raise RankError("give exactly one of rank= and tau=")
    transformers = _transformers()
    if not isinstance(model, transformers.MambaForCausalLM):
        raise MatchError(f"reduce_hf_mamba needs a transformers MambaForCausalLM, got "
                         f"{type(model).__name__}")
    N = int(model.config.state_size)
    systems = calibrate_hf_mamba(model, input_ids, options)
    hsvs = [hankel_singular_values(s.A, s.B, s.C) for s in systems]
    r = rank if rank is not None else max(energy_rank(h, tau) for h in hsvs)
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= N:
        raise RankError(f"rank must be an integer in 1..{N}, got {r!r}")
    kept = [torch.arange(N) if r == N else keep_indices(truncate(s, r, clip=True))
            for s in systems]
    if any(k.numel() != r for k in kept):
        raise RankError(f"a layer's calibration Gramians have numerical order < {r}: use more "
                        "calibration data or a smaller rank")
    config = copy.deepcopy(model.config)
    config.state_size = r
    new = transformers.MambaForCausalLM(config).to(next(model.parameters()).dtype)
    new.load_state_dict(_sliced_state_dict(model, kept))
    return new.eval(), HFReduction(N, r, tuple(hsvs), tuple(kept))


def save_hf_mamba(model: nn.Module, directory: str | os.PathLike) -> Path:
    """``save_pretrained`` (safetensors) into ``directory`` atomically: written to a sibling temp
    directory first, then renamed. Refuses an existing non-empty directory (CheckpointError)."""
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise CheckpointError(f"{target} exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class HFMambaMixerAdapter:
    """Core adapter for a single ``MambaMixer`` (kind ``hf-mamba``; Mamba-1 index selection)."""

    kind = "hf-mamba"
    certified = False

    def __init__(self, options: CalibrationOptions | None = None) -> None:
        self.options = options or CalibrationOptions()

    def state_dim(self, module: nn.Module) -> int:
        _check_mixer(module)
        return int(module.ssm_state_size)

    def read(self, module: nn.Module) -> LTISystem:
        raise MatchError("hf-mamba mixer is time-varying and needs calibration data: use "
                         "calibrate(module, u)")

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        raise MatchError("hf-mamba mixer is rebuilt with rebuild_from_truncation")

    def calibrate(self, module: nn.Module, u: Tensor) -> LTISystem:
        if u.ndim != 3:
            raise ShapeError(f"calibration input must be (batch, L, hidden), got {tuple(u.shape)}")
        delta, A, B, C = mixer_signals(module, u[: self.options.max_sequences])
        return surrogate_system(*diagonal_decay_gramians(delta, A, B, C, self.options.groups))

    def rebuild_from_truncation(self, module: nn.Module, result: TruncationResult) -> nn.Module:
        _check_mixer(module)
        N, R = module.ssm_state_size, module.time_step_rank
        keep = keep_indices(result)
        config = copy.deepcopy(module.config)
        config.state_size = int(keep.numel())
        new = type(module)(config, layer_idx=module.layer_idx, initialize_mixer_weights=False)
        p = next(module.parameters())
        new = new.to(device=p.device, dtype=p.dtype).train(module.training)
        state = dict(module.state_dict())
        state["A_log"] = module.A_log.detach()[:, keep]
        state["x_proj.weight"] = module.x_proj.weight.detach()[
            torch.cat([torch.arange(R), R + keep, R + N + keep])]
        new.load_state_dict(state)
        return new

    def lower(self, module: nn.Module) -> nn.Module:
        """Our Mamba-1 block with this mixer's weights (for export; same map)."""
        from ..thirdparty.lowered import mamba1_from

        _check_mixer(module)
        return mamba1_from(module, d_model=module.in_proj.in_features,
                           d_state=module.ssm_state_size, d_conv=module.conv_kernel_size,
                           d_inner=module.intermediate_size, dt_rank=module.time_step_rank)


def register_hf_adapter(options: CalibrationOptions | None = None) -> None:
    """Register :class:`HFMambaMixerAdapter` for ``transformers``' ``MambaMixer``."""
    from transformers.models.mamba.modeling_mamba import MambaMixer

    register_block(MambaMixer, HFMambaMixerAdapter(options))
