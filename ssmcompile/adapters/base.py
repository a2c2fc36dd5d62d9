"""The one seam between SSM layers and the numerics: ``BlockAdapter`` and its registry.

An adapter reads a layer as the LTI system the paper analyses (float64/complex128 detached
copies, the layer untouched) and writes a — typically reduced — system back into a NEW layer of
the same class in that layer's own parameterisation. Third-party layers join with
``register_block(MyLayer, MyAdapter())``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import MatchError, ShapeError, UnstableSystemError
from ..numerics.system import LTISystem

# Modes this close to 0 are moved out to it: ν_log = log(−log|λ|) is infinite at |λ| = 0, and
# a mode of modulus 1e-30 forgets its input after one step just like |λ| = 0 does.
MIN_MODULUS = 1e-30


@runtime_checkable
class BlockAdapter(Protocol):
    """Maps one layer type to/from ``LTISystem``.

    - ``kind``: a short name (``"lru"``, ``"s5"``, ...).
    - ``read(module)``: the layer's system, detached, float64/complex128.
    - ``state_dim(module)``: the layer's state dimension (what reduction changes).
    - ``rebuild(module, system)``: a NEW module of ``type(module)`` realising ``system`` in the
      layer's parameterisation, with the original's dtype, device and train mode; the original
      is left untouched. Raises ``ShapeError`` for a system the layer cannot hold.
    - optional ``round_rank(rank, n)``: the rank the layer's kernels want instead (rounded up
      to a tile multiple, at most n); the truncation pass applies it to every rank it decides.
    """

    kind: str

    def read(self, module: nn.Module) -> LTISystem: ...

    def state_dim(self, module: nn.Module) -> int: ...

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module: ...


_REGISTRY: dict[type[nn.Module], BlockAdapter] = {}
# Fully-qualified class name → "module:attribute" of the adapter class. Keyed by name so that
# bundling an adapter for a third-party layer never imports that package: the adapter module is
# imported only when a module of that class is looked up (the user has imported it by then).
_LAZY: dict[str, str] = {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_lazy_block(layer_class_path: str, adapter_path: str) -> None:
    """Bundle the adapter ``"pkg.module:AdapterClass"`` (constructed without arguments) for the
    layer class named ``layer_class_path`` (``"LRU_pytorch.LRU.LRU"``), resolved on first use."""
    if ":" not in adapter_path:
        raise MatchError(f"adapter path {adapter_path!r} must be 'module:attribute'")
    _LAZY[layer_class_path] = adapter_path


def _load_lazy(cls: type, adapter_path: str) -> BlockAdapter:
    module_name, _, attr = adapter_path.partition(":")
    try:
        adapter = getattr(importlib.import_module(module_name), attr)()
    except Exception as err:  # noqa: BLE001 - a broken bundle entry must say which one
        raise MatchError(f"the bundled adapter {adapter_path} for {class_path(cls)} failed to "
                         f"load: {type(err).__name__}: {err}") from None
    _REGISTRY[cls] = adapter
    return adapter


def register_block(module_type: type[nn.Module], adapter: BlockAdapter) -> None:
    """Register ``adapter`` for ``module_type`` and its subclasses (a later call replaces it)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise MatchError(f"register_block needs an nn.Module subclass, got {module_type!r}")
    if not isinstance(adapter, BlockAdapter):
        raise MatchError(f"{adapter!r} lacks BlockAdapter's kind/read/state_dim/rebuild")
    _REGISTRY[module_type] = adapter


def adapter_for(module: nn.Module) -> BlockAdapter | None:
    """The adapter registered for ``type(module)`` or its nearest registered base class
    (a bundled third-party adapter is loaded here, the first time its layer is seen)."""
    for cls in type(module).__mro__:
        adapter = _REGISTRY.get(cls)
        if adapter is not None:
            return adapter
        lazy = _LAZY.get(class_path(cls)) if _LAZY else None
        if lazy is not None:
            return _load_lazy(cls, lazy)
    return None


# ---- helpers shared by the built-in adapters -------------------------------------------------


def f64(t: Tensor) -> Tensor:
    """Detached float64 copy."""
    return t.detach().to(torch.float64).clone()


def require_type(module: nn.Module, cls: type, kind: str) -> None:
    if not isinstance(module, cls):
        raise MatchError(f"{kind} adapter got a {type(module).__name__}")


def require_diagonal(system: LTISystem, batch: tuple[int, ...], width: int, kind: str) -> None:
    """A diagonal system with ``batch`` shape and ``width`` inputs and outputs, else ShapeError."""
    if not system.is_diagonal:
        shape = tuple(system.A.shape)
        raise ShapeError(f"{kind} layer needs a diagonal system, got dense A{shape}")
    if tuple(system.batch_shape) != batch or system.n_inputs != width or system.n_outputs != width:
        raise ShapeError(
            f"{kind} layer needs batch {batch} and {width} inputs/outputs; "
            f"got B{tuple(system.B.shape)}, C{tuple(system.C.shape)}"
        )


def checked_modes(lam: Tensor) -> Tensor:
    """λ as complex128 with |λ| < 1 checked and tiny moduli raised to MIN_MODULUS."""
    lam = lam.detach().to(torch.complex128)
    if not bool(torch.isfinite(lam).all()):
        raise UnstableSystemError("system has non-finite eigenvalues")
    mod = lam.abs()
    worst = float(mod.max()) if mod.numel() else 0.0
    if worst >= 1.0:
        raise UnstableSystemError(f"mode with |λ| = {worst:.6g} >= 1 cannot be represented")
    small = mod < MIN_MODULUS
    if bool(small.any()):
        phase = torch.where(mod > 0, lam / mod.clamp_min(1e-300), torch.ones_like(lam))
        lam = torch.where(small, MIN_MODULUS * phase, lam)
    return lam


def diag_feedthrough(system: LTISystem, fallback: Tensor) -> Tensor:
    """The diagonal of ``system.D`` ((..., H, H) → (..., H)); ``fallback`` when D is None."""
    if system.D is None:
        return f64(fallback)
    D = system.D.detach()
    d = torch.diagonal(D, dim1=-2, dim2=-1)
    off = (D - torch.diag_embed(d)).abs().max() if D.numel() else torch.tensor(0.0)
    if float(off) > 1e-8 * (1.0 + float(D.abs().max())):
        raise ShapeError("the layer only holds a diagonal feedthrough D")
    if d.is_complex():
        d = d.real
    return d.to(torch.float64)


def fresh_like(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    """An uninitialised ``type(module)(*args, **kwargs)`` on the original's device and dtype.

    Built on the meta device so it costs nothing and draws nothing from the global RNG (a
    rebuild mid-training must not shift the data/dropout random stream).
    """
    p = next(module.parameters())
    new = type(module)(*args, device="meta", dtype=p.dtype, **kwargs)
    new = new.to_empty(device=p.device)
    return new.train(module.training)


def assign(new: nn.Module, values: dict[str, Tensor], like: nn.Module) -> nn.Module:
    """Copy ``values`` into every parameter of ``new`` (casting), with ``like``'s requires_grad."""
    names = {n for n, _ in new.named_parameters()}
    if names != set(values):
        cls = type(new).__name__
        raise MatchError(f"rebuild of {cls} sets {sorted(values)}, needs {sorted(names)}")
    old = dict(like.named_parameters())
    with torch.no_grad():
        for name, param in new.named_parameters():
            v = values[name]
            if tuple(v.shape) != tuple(param.shape):
                got, want = tuple(v.shape), tuple(param.shape)
                raise ShapeError(f"{name}: value {got} vs parameter {want}")
            param.copy_(v.to(param.dtype))
            if name in old:
                param.requires_grad_(old[name].requires_grad)
    return new


def install_parameters(new: nn.Module, values: dict[str, Tensor], like: nn.Module) -> nn.Module:
    """Replace every parameter of ``new`` by ``values[name]`` as a fresh ``nn.Parameter`` with
    the dtype, device and ``requires_grad`` of ``like``'s parameter of the same name.

    Unlike :func:`assign` this keeps each parameter's own dtype (third-party layers mix float32
    and complex64 parameters, and ``Module.double()`` leaves complex ones complex64)."""
    names = [n for n, _ in new.named_parameters()]
    if set(names) != set(values):
        raise MatchError(f"rebuild of {type(new).__name__} sets {sorted(values)}, "
                         f"needs {sorted(names)}")
    old = dict(like.named_parameters())
    for name in names:
        ref = old[name]
        v = values[name].detach()
        if ref.is_complex() and not v.is_complex():
            v = v.to(torch.complex128)
        if not ref.is_complex() and v.is_complex():
            raise ShapeError(f"{name}: a complex value for the real parameter")
        v = v.to(device=ref.device, dtype=ref.dtype).clone().contiguous()
        owner_name, _, leaf = name.rpartition(".")
        owner = new.get_submodule(owner_name) if owner_name else new
        setattr(owner, leaf, nn.Parameter(v, requires_grad=ref.requires_grad))
    return new
