"""Model checkpoints: safetensors weights + JSON metadata, rebuilt only by allow-listed builders.

Loading never trusts the file: the builder is looked up by name, the architecture is rebuilt
from ``initial_spec`` by replaying the reduction history and must equal ``spec``, the weights
must match it key for key and shape for shape, be finite, and every SSM layer must be stable.
Before any tensor data is read or any model allocated, the header alone is checked against
``limits`` (sizes no larger than the file's tensors, one floating dtype: float32 or float64)
and against the spec's architecture built on the meta device (``preflight``), so a small file
cannot make loading cost more than the file's own size.
With ``model=`` (an instance or a factory of the user's own architecture) the history is
replayed onto a fresh copy of it through the blocks' adapters instead of a builder
(``io.model_replay``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors
import torch
from torch import Tensor, nn

from ..adapters import adapter_for
from ..errors import CheckpointError, SSMCompileError, safe_text
from ..numerics.stability import check_stable
from .builders import call_builder, get_builder, replay
from .limits import FileBudget, TensorEntry, check_block_count, check_dtypes
from .meta import (
    FORMAT_VERSION,
    CheckpointMeta,
    ReductionEvent,
    check_meta_sizes,
    decode_meta,
    encode_meta,
)
from .model_replay import ModelSource, block_dims, replay_onto
from .preflight import check_entries, check_weights, entries_of, meta_state
from .tensorfile import load_tensors, one_line, read_header, save_tensors_atomic

WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DDP / DataParallel


def library_versions() -> dict[str, str]:
    # imported here: the package __init__ may import this module before defining __version__
    from .. import __version__

    return {"ssmcompile": __version__, "torch": torch.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def unwrap_module(model: nn.Module) -> nn.Module:
    """The raw module under ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = model.module
            continue
        return model


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` of the unwrapped model; a wrapper prefix (``_orig_mod.``, ``module.``)
    that every key still carries is stripped (only when all carry it: a model may legitimately
    own a submodule called ``module``)."""
    state = dict(unwrap_module(model).state_dict())
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: t for key, t in state.items()}
                stripped = True
    return state


def validate_meta(meta: CheckpointMeta, budget: FileBudget | None = None) -> CheckpointMeta:
    """``meta`` with canonical specs, after checking the builder, the size caps, that the
    spec's sizes and blocks fit the file's tensors (``budget``) and that history replays."""
    check_meta_sizes(meta)
    builder = get_builder(meta.builder)
    spec = call_builder("invalid spec", builder.canonical, meta.spec)
    dims = call_builder("invalid spec", builder.state_dims, spec)
    check_block_count(dims, "spec")
    if budget is not None:
        if builder.sizes is not None:
            budget.check_sizes(call_builder("invalid spec", builder.sizes, spec), "spec")
        budget.check_blocks(dims, "spec")
    replayed = replay(builder, meta.initial_spec, meta.history)
    if replayed != spec:
        diff = sorted(k for k in set(spec) | set(replayed) if spec.get(k) != replayed.get(k))
        detail = "; ".join(f"{k}: replay gives {safe_text(replayed.get(k), 80)}, spec has "
                           f"{safe_text(spec.get(k), 80)}" for k in diff)
        raise CheckpointError(f"history does not replay to spec ({safe_text(detail, 300)})")
    initial = call_builder("invalid initial_spec", builder.canonical, meta.initial_spec)
    return CheckpointMeta(meta.format_version, meta.builder, spec, initial, tuple(meta.history),
                          dict(meta.versions), dict(meta.extra))


def _check_dims(model: nn.Module, dims: dict[str, int]) -> None:
    have = block_dims(model, list(dims))
    for name, n in dims.items():
        if have[name] != n:
            raise CheckpointError(f"block {name!r} has n={have[name]}, the spec says n={n}")


def check_model_stable(model: nn.Module) -> None:
    """Every layer with a registered adapter has all poles strictly inside the unit circle."""
    for name, module in model.named_modules():
        adapter = adapter_for(module)
        # calibrated (selective) blocks have no fixed A to read; they are stable by design
        if adapter is None or hasattr(adapter, "calibrate"):
            continue
        try:
            system = adapter.read(module)
            check_stable(system.A, system.is_diagonal, what=f"block {name}")
        except SSMCompileError as err:
            raise CheckpointError(one_line(err)) from None


def _build(meta: CheckpointMeta, source: ModelSource | None = None) -> nn.Module:
    builder = get_builder(meta.builder)
    # the fresh init is overwritten; fork_rng keeps loading from shifting the caller's RNG
    with torch.random.fork_rng(devices=[]):
        if source is not None:
            initial = call_builder("invalid initial_spec", builder.state_dims, meta.initial_spec)
            model = replay_onto(source, initial, meta.history)
            _check_dims(model, call_builder("invalid spec", builder.state_dims, meta.spec))
        elif builder.build is None:
            raise CheckpointError(f"this checkpoint holds a user model (builder "
                                  f"{meta.builder!r}): load it with load_checkpoint(path, "
                                  "model=YourModel(...))")
        else:
            model = call_builder("cannot build model", builder.build, meta.spec)
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"builder {meta.builder!r} did not return an nn.Module")
    return model


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    builder: str = "ssm-model",
    spec: dict[str, Any],
    initial_spec: dict[str, Any] | None = None,
    history: Sequence[ReductionEvent | dict[str, Any]] = (),
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (safetensors, atomically).

    ``spec``: the model's current architecture (``model.spec.to_dict()``, or any object with a
    ``to_dict()``); ``initial_spec`` (default ``spec``) plus ``history`` must replay to it.
    Everything ``load_checkpoint`` checks is checked here first, so nothing unloadable is
    written. Returns the path written.
    """
    events = tuple(e if isinstance(e, ReductionEvent) else ReductionEvent.from_dict(e)
                   for e in history)
    spec, initial_spec = _as_dict(spec), _as_dict(initial_spec)
    if extra is not None and not (isinstance(extra, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    )):
        raise CheckpointError("extra must map str to str")
    raw = unwrap_module(model)
    tensors = model_tensors(raw)
    entries = entries_of(tensors)
    meta = CheckpointMeta(
        format_version=FORMAT_VERSION, builder=builder, spec=spec,
        initial_spec=spec if initial_spec is None else initial_spec, history=events,
        versions=library_versions(), extra=dict(extra or {}),
    )
    get_builder(meta.builder)  # an unknown builder is the first thing to say
    check_dtypes(entries)
    meta = validate_meta(meta, FileBudget.from_entries(entries))
    builder = get_builder(meta.builder)
    if builder.build is None:  # nothing to rebuild from: the live blocks must match the spec
        _check_dims(raw, call_builder("invalid spec", builder.state_dims, meta.spec))
    else:
        expected = meta_state(builder, meta.spec)
        check_weights(tensors, _build(meta).state_dict() if expected is None else expected)
    check_model_stable(raw)
    return save_tensors_atomic(path, tensors, encode_meta(meta))


def _as_dict(spec: Any) -> Any:
    """Accept a spec object (e.g. ``ModelSpec``) where its JSON-able dict is meant."""
    to_dict = getattr(spec, "to_dict", None)
    return to_dict() if callable(to_dict) else spec


def _in_file(path: str | os.PathLike[str], err: CheckpointError) -> CheckpointError:
    text, where = str(err), safe_text(path, 200)
    return err if text.startswith(where) else CheckpointError(f"{where}: {text}")


def _checked_header(entries: dict[str, TensorEntry], metadata: dict[str, str]
                    ) -> CheckpointMeta:
    """Validated metadata, from the header alone (no tensor data)."""
    check_dtypes(entries)
    return validate_meta(decode_meta(metadata), FileBudget.from_entries(entries))


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The checkpoint's validated metadata (builder known, sizes fit the file's tensors,
    history replays); no weights read."""
    entries, metadata = read_header(path)
    try:
        return _checked_header(entries, metadata)
    except CheckpointError as err:
        raise _in_file(path, err) from None


def load_checkpoint(path: str | os.PathLike[str], *, model: ModelSource | None = None
                    ) -> tuple[nn.Module, CheckpointMeta]:
    """``(model, meta)``: the rebuilt architecture with the file's weights, in eval mode.

    ``model``: your architecture at its initial size, as an instance (deep-copied, never
    changed) or a zero-argument factory; the checkpoint's reduction history is replayed onto it
    through the blocks' adapters, then the weights load strictly. Without it the file's
    allow-listed builder rebuilds the model. Tensors keep the file's dtypes. Raises
    CheckpointError (message prefixed with the path) for any file, metadata, architecture
    (a history that does not fit ``model`` names the block), weight or stability problem.
    """
    entries, metadata = read_header(path)
    try:
        meta = _checked_header(entries, metadata)
        builder = get_builder(meta.builder)
        expected = meta_state(builder, meta.spec) if model is None else None
        if expected is not None:
            check_entries(entries, expected)
        model = _build(meta, model)
        check_entries(entries, model.state_dict())  # the user's model: before reading data
        tensors, _ = load_tensors(path)
        check_weights(tensors, model.state_dict())
        tied = _tied_parameters(model)
        model.load_state_dict(tensors, strict=True, assign=True)
        _retie(model, tied)
        check_model_stable(model)
    except CheckpointError as err:
        raise _in_file(path, err) from None
    return model.eval(), meta


def _tied_parameters(model: nn.Module) -> list[list[str]]:
    """Names that share one Parameter (tied embeddings): ``assign=True`` loading gives each
    name its own tensor, which would silently untie them."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def _retie(model: nn.Module, tied: list[list[str]]) -> None:
    for first, *others in tied:
        shared = model.get_parameter(first)
        for name in others:
            if not torch.equal(model.get_parameter(name), shared):
                raise CheckpointError(f"{name} is tied to {first} in the model, but the file "
                                      "holds different values for them")
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)
