"""Reduce a Hugging Face Mamba model and keep it a Hugging Face model: :func:`reduce_hf`.

``reduce_hf(model, input_ids, rank=8)`` runs ssmcompile's own pipeline (analysis → balanced
truncation → verify, :func:`ssmcompile.reduce`) on a ``MambaForCausalLM``,
``FalconMambaForCausalLM`` or ``Mamba2ForCausalLM`` (or its backbone ``*Model``), whose mixers
the bundled adapters find by class name (``hf-mamba``, ``hf-falcon-mamba``, ``hf-mamba2``: all
data-driven, calibrated on ``input_ids``, error measured and reported, never certified). It
then makes the result a checkpoint Hugging Face can reload: a config holds one ``state_size``
for every layer, so by default every layer keeps the same r (``RankPolicy(uniform=True)``: the
largest rank any layer asks for), and the reduced model's config says ``state_size = r``.
Nothing else needs changing: every size HF derives from it (Mamba-2's ``conv_dim`` = I + 2·G·r,
its ``in_proj`` width, Mamba-1's ``x_proj`` and ``A_log``) is computed from the config when a
model is built, so ``save_pretrained`` → ``from_pretrained`` rebuilds the reduced shapes and
reloads identical logits; ``generate`` works on the reduced model (HF's cache sizes its states
from the tensors it is given).

``per_layer=True`` lets each layer keep its own rank. An HF config cannot express different
ranks per layer, so such a model still runs (forward, ``generate``) but refuses
``save_pretrained`` / ``push_to_hub`` with a one-line :class:`~ssmcompile.errors.CheckpointError`
(save its ``state_dict`` yourself, or reduce with the uniform default). When the per-layer
ranks happen to coincide the config is updated as in the uniform case.

``transformers`` is imported by nobody here: a model that is not one of these (an
``nn.Linear``, a transformer) gives a one-line :class:`~ssmcompile.errors.MatchError`.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, MatchError, RankError, ShapeError

__all__ = ["HF_MIXERS", "hf_mixers", "reduce_hf"]

# Mixer class name → the adapter kind the bundle table gives it.
HF_MIXERS = {"MambaMixer": "hf-mamba", "FalconMambaMixer": "hf-falcon-mamba",
             "Mamba2Mixer": "hf-mamba2"}
_MODELS = "MambaForCausalLM, FalconMambaForCausalLM or Mamba2ForCausalLM"


def hf_mixers(model: object) -> dict[str, nn.Module]:
    """Qualified name → mixer of a Hugging Face Mamba / FalconMamba / Mamba2 model, in model
    order. Raises a one-line MatchError for anything else."""
    name = type(model).__name__
    if not isinstance(model, nn.Module):
        raise MatchError(f"reduce_hf needs a Hugging Face {_MODELS}, got a {name}")
    mixers = {n: m for n, m in model.named_modules()
              if type(m).__name__ in HF_MIXERS and type(m).__module__.startswith("transformers.")}
    config = getattr(model, "config", None)
    if not mixers:
        raise MatchError(f"reduce_hf needs a Hugging Face {_MODELS} (or its backbone model), "
                         f"got {name}, which holds no {', '.join(HF_MIXERS)}")
    if not hasattr(config, "state_size") or not callable(getattr(model, "save_pretrained",
                                                                 None)):
        raise MatchError(f"reduce_hf needs a Hugging Face {_MODELS} (or its backbone model), "
                         f"got {name}, which has no config.state_size / save_pretrained")
    kinds = {type(m).__name__ for m in mixers.values()}
    if len(kinds) > 1:
        raise MatchError(f"{name} mixes mixer classes {sorted(kinds)}: one config.state_size "
                         "cannot describe them")
    return mixers


def _check_ids(input_ids: object) -> Tensor:
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 \
            or input_ids.dtype.is_floating_point or input_ids.dtype.is_complex:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ShapeError(f"input_ids must be a (batch, L) integer tensor of token ids, got "
                         f"{shape}")
    return input_ids


def _refuse_saving(model: nn.Module, sizes: dict[str, int]) -> None:
    """Shadow ``save_pretrained`` / ``push_to_hub`` on this instance (its copies too)."""
    listed = ", ".join(f"{n}={r}" for n, r in sizes.items())
    message = (f"this model has per-layer state sizes ({listed}), which a Hugging Face config "
               "(one state_size) cannot express: reduce with reduce_hf(..., per_layer=False), "
               "the uniform default, to save it with save_pretrained")

    def refuse(*args, **kwargs):
        raise CheckpointError(message)

    model.save_pretrained = refuse
    model.push_to_hub = refuse


def _check_config_fits(model: nn.Module) -> None:
    """A model built from ``model.config`` (on meta: free, no RNG) must have ``model``'s
    state-dict shapes, else ``from_pretrained`` could not reload it."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        fresh = type(model)(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key in sorted(set(want) | set(have)):
        if want.get(key) != have.get(key):
            raise CheckpointError(f"the reduced model does not match a {type(model).__name__} "
                                  f"built from its config: {key} is {have.get(key)}, the config "
                                  f"gives {want.get(key)}")


def reduce_hf(model: nn.Module, input_ids: Tensor, *, rank: int | None = None,
              tau: float | None = None, per_layer: bool = False, verify: bool = True):
    """Reduce every mixer's state size; returns ``(reduced_model, report)``.

    ``model``: a Hugging Face ``MambaForCausalLM`` / ``FalconMambaForCausalLM`` /
    ``Mamba2ForCausalLM`` (or backbone), never modified. ``input_ids`` (batch, L): calibration
    token ids (the adapters use the first 8 sequences), also the batch verification measures on.
    Exactly one of ``rank`` (1..state_size) and ``tau`` (the energy rule per layer). By default
    every layer keeps the same r (the largest any layer asks for) and the reduced model's
    ``config.state_size`` is r, so ``save_pretrained`` / ``from_pretrained`` round-trip it;
    ``per_layer=True`` keeps each layer's own rank and, when they differ, refuses
    ``save_pretrained`` (CheckpointError). ``report`` is ssmcompile's :class:`Report` (ranks,
    energy kept, each layer's measured error and the model's output error when verifying), with
    a note on what happened to the config. A policy that keeps every state returns an unchanged
    copy.
    """
    mixers = hf_mixers(model)
    if (rank is None) == (tau is None):
        raise RankError("give exactly one of rank= and tau=")
    ids = _check_ids(input_ids)
    N = int(model.config.state_size)
    n = max(int(m.ssm_state_size) for m in mixers.values())
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)
                             or not 1 <= rank <= n):
        raise RankError(f"rank must be an integer in 1..{n} (the state size), got {rank!r}")
    from ..api import reduce as _reduce
    from ..compiler import RankPolicy

    policy = RankPolicy(rank=rank, tau=tau, uniform=not per_layer)
    reduced, report = _reduce(model, ids, policy, verify=verify)
    kinds = {b.name: b.kind for b in report.blocks}
    missing = [n for n in mixers if n not in kinds]
    if missing:
        raise MatchError(f"ssmcompile did not match mixer {missing[0]} of "
                         f"{type(model).__name__}: {report.explain().splitlines()[0]}")
    if reduced is model or getattr(reduced, "config", None) is model.config:
        reduced = copy.deepcopy(reduced)  # the caller's model and config stay untouched
    sizes = {n: int(reduced.get_submodule(n).ssm_state_size) for n in mixers}
    distinct = sorted(set(sizes.values()))
    if len(distinct) == 1:
        r = distinct[0]
        reduced.config.state_size = r
        for n in mixers:  # rebuilt mixers carry config copies: share the model's again
            mixer = reduced.get_submodule(n)
            if hasattr(mixer, "config"):
                mixer.config = reduced.config
        for method in ("save_pretrained", "push_to_hub"):  # a per-layer input's refusal
            reduced.__dict__.pop(method, None)
        _check_config_fits(reduced)
        note = (f"config.state_size {N} → {r} in every layer: save_pretrained / "
                "from_pretrained round-trip the reduced model")
    elif not per_layer:
        raise RankError(f"the layers kept different ranks {distinct} (a layer's calibration "
                        "Gramians have a lower numerical order): use more calibration data, a "
                        "smaller rank, or per_layer=True")
    else:
        _refuse_saving(reduced, sizes)
        note = (f"per-layer state sizes {distinct}: config.state_size left at {N} and "
                "save_pretrained refused (a Hugging Face config holds one state size)")
    reduced.train(model.training)
    return reduced, dataclasses.replace(report, notes=(*report.notes, note))
