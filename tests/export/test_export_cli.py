"""``ssmcompile export`` in-process: sequence and step graphs with --check, checked again here
against the checkpoint's model; failures exit 1 with one stderr line and leave no file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import ssmcompile.export as export_pkg
from ssmcompile.api import reduce
from ssmcompile.cli import export as export_cli
from ssmcompile.cli.main import main as ssmcompile_main
from ssmcompile.export import ParityReport, ParityRow
from ssmcompile.io import load_checkpoint, save_checkpoint
from ssmcompile.layers import ModelSpec, build_model

R = 3


@pytest.fixture(scope="module")
def reduced_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(layer="s5", d_model=4, state_dims=(6,), d_output=3, d_input=2)
    model = build_model(spec).eval()
    reduced, _ = reduce(model, torch.randn(2, 32, 2), rank=R)
    path = tmp_path_factory.mktemp("ckpt") / "reduced.safetensors"
    return save_checkpoint(path, reduced, spec=reduced.spec.to_dict())


def _clean(capsys) -> tuple[str, str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return out, err


def test_export_sequence_with_check_through_main(reduced_ckpt, tmp_path, capsys):
    out_path = tmp_path / "model.onnx"
    code = ssmcompile_main(["export", str(reduced_ckpt), "-o", str(out_path), "--check"])
    out, _ = _clean(capsys)
    assert code == 0
    assert "parity sequence vs torch forward" in out and "FAIL" not in out
    assert "CPUExecutionProvider" in out and "self-contained" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    model, _ = load_checkpoint(reduced_ckpt)
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 29, 2)
    (y,) = session.run(None, {"u": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - model(x).numpy()).max() <= 1e-4


def test_export_step_with_check(reduced_ckpt, tmp_path, capsys):
    out_path = tmp_path / "step.onnx"
    code = export_cli.main([str(reduced_ckpt), "-o", str(out_path), "--step", "--check"])
    out, _ = _clean(capsys)
    assert code == 0 and "parity step vs torch forward" in out and "FAIL" not in out
    graph = onnx.load(str(out_path)).graph
    shapes = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }
    assert shapes["state_0_re"] == shapes["state_0_im"] == ["batch", R]
    assert [o.name for o in graph.output][:3] == ["y_k", "new_state_0_re", "new_state_0_im"]


def test_failed_check_exits_1_and_leaves_previous_file(reduced_ckpt, tmp_path, capsys, monkeypatch):
    real_check = export_pkg.check_sequence_parity

    def broken_check(*args, **kwargs) -> ParityReport:
        report = real_check(*args, **kwargs)  # the real check on the real staged file ...
        bad = ParityRow("sequence", "forward", 1, 7, 0.5)  # ... plus one failing row
        return ParityReport((*report.rows, bad), report.providers, report.tolerance)

    monkeypatch.setattr(export_pkg, "check_sequence_parity", broken_check)
    out_path = tmp_path / "model.onnx"
    out_path.write_bytes(b"previous")
    code = export_cli.main([str(reduced_ckpt), "-o", str(out_path), "--check"])
    out, err = _clean(capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("ssmcompile: error: onnxruntime differs")
    assert "FAIL" in out  # the parity table is still shown
    assert out_path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{missing}", "-o", "{out}"], "no such file"),
        (["{ckpt}", "-o", "{tmp}/nodir/m.onnx"], "does not exist"),
        (["{ckpt}", "-o", "{out}", "--opset", "9"], "opset must be an int"),
    ],
)
def test_bad_invocations_exit_1_without_a_file(argv, message, reduced_ckpt, tmp_path, capsys):
    values = {
        "missing": tmp_path / "missing.safetensors",
        "ckpt": reduced_ckpt,
        "out": tmp_path / "m.onnx",
        "tmp": tmp_path,
    }
    code = export_cli.main([a.format(**values) for a in argv])
    _, err = _clean(capsys)
    assert code == 1 and err.startswith("ssmcompile: error:") and message in err
    assert list(tmp_path.iterdir()) == []


def test_usage_error_exits_2(capsys):
    assert export_cli.main([]) == 2
    assert ssmcompile_main(["export", "x.safetensors"]) == 2  # -o is required
    _clean(capsys)


def test_scan_chunk_flag_reaches_the_graph(reduced_ckpt, tmp_path, capsys):
    out_path = tmp_path / "per_step.onnx"
    code = export_cli.main([str(reduced_ckpt), "-o", str(out_path), "--scan-chunk", "1"])
    _clean(capsys)
    assert code == 0
    meta = {p.key: p.value for p in onnx.load(str(out_path)).metadata_props}
    assert meta["ssmcompile.scan_chunk"] == "1"
    code = export_cli.main([str(reduced_ckpt), "-o", str(tmp_path / "bad.onnx"),
                            "--scan-chunk", "0"])
    _, err = _clean(capsys)
    assert code == 1 and "chunk" in err and not (tmp_path / "bad.onnx").exists()
