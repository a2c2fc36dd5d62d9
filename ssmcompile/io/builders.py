"""The allow-list of model builders a checkpoint may name, and history replay.

A checkpoint stores a builder *name*; loading looks it up here and never imports anything the
file names. ``"ssm-model"`` (``SSMModel`` from a ``ModelSpec`` dict) is pre-registered, and so is
``"user-model"``: a model ssmcompile cannot build (the user's own class), whose spec is only
``{"blocks": {block name: state dim}}`` and which loads with ``load_checkpoint(path,
model=...)``. ``io.model_replay.module_builder`` turns a factory of your own architecture into
a builder you can register under a name of yours.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import CheckpointError, safe_text
from ..layers import ModelSpec, build_model
from .limits import check_block_count
from .meta import ReductionEvent
from .tensorfile import one_line

Spec = dict[str, Any]


def _identity(spec: Spec) -> Spec:
    return spec


@dataclass(frozen=True)
class ModelBuilder:
    """How to turn a JSON-able spec into a module and resize one of its SSM blocks.

    - ``build(spec) -> nn.Module``: a freshly initialised model (weights are loaded after);
      None when only the caller can build it (``load_checkpoint(path, model=...)``).
    - ``resize(spec, block, r) -> spec``: the spec with block ``block`` holding ``r`` states.
    - ``state_dims(spec) -> {block name: n}``: each SSM block's state dimension.
    - ``canonical(spec) -> spec``: validated spec with defaults filled in, so two specs
      describing the same architecture compare equal (identity by default).
    - ``set_dims(spec, {block: n}) -> spec`` (optional): every block at once, so replaying a
      long history costs one spec rebuild instead of one per event.
    - ``sizes(spec) -> {name: int}`` (optional): the sizes the spec names that are each a
      dimension of some stored tensor; a file whose tensors are all smaller is refused before
      anything is built.
    - ``meta_safe``: ``build`` works under ``torch.device("meta")`` (no data-dependent init),
      so loading compares the file's header with the architecture before allocating it;
      otherwise the model is built for real first (a builder of your own: your sizes).

    Each may raise any SSMCompileError (or ValueError/TypeError/KeyError) for a bad spec.
    """

    build: Callable[[Spec], nn.Module] | None
    resize: Callable[[Spec, str, int], Spec]
    state_dims: Callable[[Spec], dict[str, int]]
    canonical: Callable[[Spec], Spec] = _identity
    set_dims: Callable[[Spec, dict[str, int]], Spec] | None = None
    sizes: Callable[[Spec], dict[str, int]] | None = None
    meta_safe: bool = False


_BUILDERS: dict[str, ModelBuilder] = {}


def register_builder(name: str, builder: ModelBuilder) -> None:
    """Allow checkpoints to name ``builder`` as ``name`` (a later call replaces it)."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"builder name must be a non-empty string, got {name!r}")
    if not isinstance(builder, ModelBuilder):
        got = type(builder).__name__
        raise CheckpointError(f"register_builder needs a ModelBuilder, got {got}")
    _BUILDERS[name] = builder


# Builders that live in an optional part of this package, registered when it is imported.
# Fixed names to fixed modules of our own: a name read from a file is only ever a dict key.
_BUILTIN_PROVIDERS: dict[str, str] = {"selective-lm": "ssmcompile.selective",
                                      "attention-lm": "ssmcompile.attention"}


def get_builder(name: str) -> ModelBuilder:
    """The registered builder ``name``, else CheckpointError listing the known ones."""
    if isinstance(name, str) and name not in _BUILDERS and name in _BUILTIN_PROVIDERS:
        importlib.import_module(_BUILTIN_PROVIDERS[name])  # registers it
    builder = _BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        known = ", ".join(registered_builders())
        raise CheckpointError(f"unknown model builder {safe_text(repr(name), 80)} "
                              f"(allowed: {known})")
    return builder


def registered_builders() -> tuple[str, ...]:
    return tuple(sorted(set(_BUILDERS) | set(_BUILTIN_PROVIDERS)))


def call_builder(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a builder function, turning any failure into a one-line CheckpointError."""
    try:
        return fn(*args)
    except CheckpointError:
        raise
    except Exception as err:  # third-party builders raise what they like
        raise CheckpointError(f"{what}: {one_line(err)}") from None


def replay(builder: ModelBuilder, initial_spec: Spec, history: Sequence[ReductionEvent]) -> Spec:
    """``initial_spec`` with every event applied in order (canonical form).

    Raises CheckpointError if an event names an unknown block, its ``n`` is not that block's
    state dimension at that point, or steps go backwards. Linear in events + blocks when the
    builder has ``set_dims`` (the events are checked against a dict of dims, the spec rebuilt
    once); otherwise each event costs one ``resize``.
    """
    spec = call_builder("invalid initial_spec", builder.canonical, initial_spec)
    dims = dict(call_builder("invalid spec during replay", builder.state_dims, spec))
    check_block_count(dims, "initial_spec")
    last_step = 0
    for k, event in enumerate(history):
        where = f"history event {k} (step {event.step}, {safe_text(event.block, 80)})"
        if event.step < last_step:
            raise CheckpointError(f"{where}: steps go backwards (previous {last_step})")
        last_step = event.step
        if event.block not in dims:
            raise CheckpointError(f"{where}: no such block (blocks: "
                                  f"{safe_text(', '.join(dims), 200)})")
        if dims[event.block] != event.n:
            raise CheckpointError(
                f"{where}: resizes from n={event.n} but the block has n={dims[event.block]}"
            )
        dims[event.block] = event.r
        if builder.set_dims is None:
            resized = call_builder(f"{where} does not apply", builder.resize, spec, event.block,
                                   event.r)
            spec = call_builder(f"{where} gives an invalid spec", builder.canonical, resized)
            dims = dict(call_builder("invalid spec during replay", builder.state_dims, spec))
    if builder.set_dims is not None and history:
        resized = call_builder("history does not apply", builder.set_dims, spec, dims)
        spec = call_builder("history gives an invalid spec", builder.canonical, resized)
    return spec


# ---- builders for models whose spec lists one state dimension per block ----------------------


def per_block_builder(parse: Callable[[Spec], Any], build: Callable[[Any], nn.Module],
                      block_name: str, canonical: Callable[[Any], Spec] | None = None,
                      sizes: Callable[[Any], dict[str, int]] | None = None,
                      meta_safe: bool = False) -> ModelBuilder:
    """A builder for spec types with ``state_dims``, ``with_state_dims`` and ``to_dict``
    (``ModelSpec``, the selective ``LMConfig``); ``block_name`` is a pattern such as
    ``"blocks.{}.ssm"`` naming block i. ``canonical`` defaults to ``to_dict``; ``sizes``
    (of the parsed spec) and ``meta_safe`` as in ``ModelBuilder``."""
    pattern = re.compile(re.escape(block_name).replace(re.escape("{}"), r"(\d+)"))

    def state_dims(spec: Spec) -> dict[str, int]:
        return {block_name.format(i): n for i, n in enumerate(parse(spec).state_dims)}

    def resize(spec: Spec, block: str, r: int) -> Spec:
        parsed = parse(spec)
        dims = list(parsed.state_dims)
        m = pattern.fullmatch(block)
        if m is None or int(m.group(1)) >= len(dims):
            raise CheckpointError(f"no block {block!r} in a {len(dims)}-block model")
        dims[int(m.group(1))] = r
        return parsed.with_state_dims(tuple(dims)).to_dict()

    def set_dims(spec: Spec, dims: dict[str, int]) -> Spec:
        parsed = parse(spec)
        names = [block_name.format(i) for i in range(len(parsed.state_dims))]
        if set(dims) != set(names):
            raise CheckpointError(f"block names do not match a {len(names)}-block model")
        return parsed.with_state_dims(tuple(dims[name] for name in names)).to_dict()

    return ModelBuilder(
        build=lambda spec: build(parse(spec)),
        resize=resize,
        state_dims=state_dims,
        canonical=lambda spec: (canonical or (lambda p: p.to_dict()))(parse(spec)),
        set_dims=set_dims,
        sizes=None if sizes is None else lambda spec: sizes(parse(spec)),
        meta_safe=meta_safe,
    )


def _model_spec_sizes(spec: ModelSpec) -> dict[str, int]:
    named = {"d_model": spec.d_model, "d_output": spec.d_output, "d_input": spec.d_input,
             "vocab_size": spec.vocab_size}
    named.update({f"state_dims[{i}]": n for i, n in enumerate(spec.state_dims)})
    return {k: v for k, v in named.items() if v is not None}


SSM_MODEL_BUILDER = per_block_builder(ModelSpec.from_dict, build_model, "blocks.{}.ssm",
                                      sizes=_model_spec_sizes, meta_safe=True)
register_builder("ssm-model", SSM_MODEL_BUILDER)


# ---- builders whose spec is only the state dimension of each named block ---------------------

USER_MODEL = "user-model"


def spec_blocks(spec: Spec) -> dict[str, int]:
    """``spec["blocks"]`` checked: block name → state dimension (ints >= 1)."""
    blocks = spec.get("blocks") if isinstance(spec, dict) else None
    if not isinstance(blocks, dict) or set(spec) != {"blocks"} or not all(
        isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in blocks.items()
    ):
        raise CheckpointError("a block-dims spec must be {'blocks': {name: state dim >= 1}}")
    return dict(blocks)


def _resize_blocks(spec: Spec, block: str, r: int) -> Spec:
    dims = spec_blocks(spec)
    if block not in dims:
        raise CheckpointError(f"no block {block!r} (blocks: {', '.join(dims)})")
    return {"blocks": {**dims, block: r}}


def block_dims_spec(build: Callable[[Spec], nn.Module] | None) -> ModelBuilder:
    """A builder over ``{"blocks": {name: n}}`` specs that builds with ``build`` (or cannot)."""
    return ModelBuilder(build=build, resize=_resize_blocks, state_dims=spec_blocks,
                        canonical=lambda spec: {"blocks": spec_blocks(spec)},
                        set_dims=lambda spec, dims: {"blocks": {**spec_blocks(spec), **dims}},
                        sizes=spec_blocks)


register_builder(USER_MODEL, block_dims_spec(None))
