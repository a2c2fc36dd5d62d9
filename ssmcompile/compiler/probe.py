"""Rule (2): read (Λ, B, C, D) out of any user module whose forward calls our scan op.

The module is traced on its own and run under an fx Interpreter that records the scan's
arguments and can replace its output. Because a linear recurrence block is linear in its input
and in the scan state, three kinds of probe runs identify it exactly:

- Λ (or A): the scan's first argument(s); two runs on different inputs must agree (else the
  block is selective, and needs a data-driven adapter instead).
- B: the scan input ``bu`` for unit-impulse inputs u = e_k at time k.
- C and D: the module output with the scan output replaced by unit states (u = 0) and with the
  scan output zeroed (u = unit inputs).

Each assumption (one scan, one input tensor, time-pointwise linear maps) is then checked on a
random probe; a failed check is a :class:`MatchError` whose message says which.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..errors import MatchError
from ..numerics.system import LTISystem
from .canonical import CanonicalSSM
from .capture import SSMTracer, is_scan_node
from .precision import at_precision, describe_exception, native_dtype, primary_output, run_checked

# Relative tolerance of the probe's consistency checks per precision: a float32 module (one
# that casts inside forward cannot run in float64) only agrees to a few ulps of its scale.
_TOLS = {torch.float64: 1e-8, torch.float32: 3e-5}


class _ScanProbe(fx.Interpreter):
    """Runs a traced module, recording the scan's args; optionally replaces its output."""

    def __init__(self, gm: fx.GraphModule, override: tuple[torch.Tensor, ...] | None = None):
        super().__init__(gm)
        self.override = override
        self.scan_args: tuple[torch.Tensor, ...] = ()

    def run_node(self, n: fx.Node):
        if is_scan_node(n):
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.scan_args = tuple(args)
            if self.override is not None:
                return self.override if len(self.override) > 1 else self.override[0]
        return super().run_node(n)


def _trace_alone(module: nn.Module) -> tuple[fx.GraphModule, fx.Node]:
    try:
        tracer = SSMTracer()
        graph = tracer.trace(module)
    except Exception as err:  # noqa: BLE001 - reported as a match failure with the reason
        raise MatchError("could not trace the module on its own "
                         f"({describe_exception(err)})") from None
    gm = fx.GraphModule(tracer.root, graph)
    scans = [n for n in gm.graph.nodes if is_scan_node(n)]
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(scans) != 1:
        raise MatchError(f"calls the scan op {len(scans)} times; one scan per block is supported")
    if len(placeholders) != 1:
        raise MatchError(f"forward takes {len(placeholders)} inputs; one (batch, length, H) "
                         "tensor is supported")
    return gm, scans[0]


def _run(gm, u, override=None):
    probe = _ScanProbe(gm, override)
    with torch.no_grad():
        out = probe.run(u)
    return primary_output(out), probe.scan_args


def probe_system(module: nn.Module, in_features: int) -> LTISystem:
    """The (Λ or A, B, C, D) of a scan-calling module, in float64/complex128, read in float64
    or — when the module's own code cannot run there — in its own dtype.

    ``in_features``: the size H of the module's input (batch, length, H). Raises MatchError,
    with the reason, for a module that is not such a block or that raises while probed.
    """
    return run_checked(lambda dtype: _probe(module, in_features, dtype), module)[0]


def _probe(module: nn.Module, in_features: int, dtype: torch.dtype) -> LTISystem:
    m = at_precision(module, dtype)
    tol = _TOLS.get(dtype, 1e-3)
    gm, scan = _trace_alone(m)
    diagonal = "diagonal" in str(scan.target)
    H = in_features
    gen = torch.Generator().manual_seed(0)
    u_rand = torch.randn(2, 5, H, generator=gen, dtype=torch.float64).to(dtype)

    y_rand, args = _run(gm, u_rand)
    _, args2 = _run(gm, 2.0 * u_rand[:, :3] + 1.0)
    n_sys_args = 2 if diagonal else 1
    for a, b in zip(args[:n_sys_args], args2[:n_sys_args], strict=True):
        if not torch.allclose(a, b, atol=tol * (1 + float(a.detach().abs().max())), rtol=0):
            raise MatchError("the scan's transition depends on the input (a selective SSM); "
                             "register an adapter for it")
    if diagonal:
        lam = torch.complex(args[0].double(), args[1].double())
        n = lam.shape[0]
    else:
        A = args[0].double()
        n = A.shape[0]

    # B: u_k = e_k at time k gives bu_k = B e_k; pointwise-linearity is checked on u_rand.
    eye = torch.eye(H, dtype=dtype)[None]
    _, a_eye = _run(gm, eye)
    bu_eye = (torch.complex(a_eye[2].double(), a_eye[3].double()) if diagonal
              else a_eye[1].double())
    B = bu_eye[0].T.contiguous()  # (n, H)
    bu_rand = (torch.complex(args[2].double(), args[3].double()) if diagonal
               else args[1].double())
    if bu_rand.shape != (*u_rand.shape[:2], n) or not torch.allclose(
        bu_rand, u_rand.double().to(B.dtype) @ B.T,
        atol=tol * (1 + bu_rand.abs().max().item())
    ):
        raise MatchError("the scan's input is not a time-pointwise linear map of the module input")

    # C (and D): replace the scan output by unit states with u = 0, then by zeros with u = e_k.
    zeros_u = torch.zeros(1, n, H, dtype=dtype)
    unit = torch.eye(n, dtype=dtype)[None]
    zero = torch.zeros_like(unit)
    if diagonal:
        y_re, _ = _run(gm, zeros_u, (unit, zero))
        y_im, _ = _run(gm, zeros_u, (zero, unit))
        # y = Re(C x) = Re(C) x_re − Im(C) x_im
        C = torch.complex(y_re[0].T.double(), -y_im[0].T.double())
    else:
        y_x, _ = _run(gm, zeros_u, (unit,))
        C = y_x[0].T.contiguous().double()
    z_state = torch.zeros(1, H, n, dtype=dtype)
    y_d, _ = _run(gm, eye, (z_state, z_state.clone()) if diagonal else (z_state,))
    D = y_d[0].T.contiguous().double()  # (p, H)

    system = LTISystem(lam if diagonal else A, B, C, D)
    replica = CanonicalSSM(system, dtype=torch.float64)
    with torch.no_grad():
        y_check = replica(u_rand.double())
    if y_check.shape != y_rand.shape or not torch.allclose(
        y_check, y_rand.double(), atol=10 * tol * (1 + y_rand.abs().max().item())
    ):
        raise MatchError("the module's output is not a linear map of (input, scan state); "
                         "move nonlinearities out of the block or register an adapter")
    return system


class ProbedScanAdapter:
    """Adapter for a user module matched by rule (2); rebuilds as :class:`CanonicalSSM`."""

    kind = "user-scan"

    def __init__(self, in_features: int):
        self.in_features = in_features

    def read(self, module: nn.Module) -> LTISystem:
        return probe_system(module, self.in_features)

    def state_dim(self, module: nn.Module) -> int:
        return self.read(module).state_dim

    def rebuild(self, module: nn.Module, system: LTISystem) -> nn.Module:
        ref = next(iter(module.parameters()), torch.empty(0))
        new = CanonicalSSM(system, dtype=native_dtype(module))
        return new.to(ref.device).train(module.training)
