"""OrtSession and provider selection, on a tiny in-memory graph."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from dupify.config import available_cores
from dupify.inference.session import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OrtSession,
    SessionPolicy,
    providers_for,
)

HAS_CUDA = CUDA_PROVIDER in ort.get_available_providers()


def _double_graph() -> bytes:
    """y = x + x on a (N, 3) float tensor."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime this project allows
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_cpu_is_cpu_only() -> None:
    assert providers_for("cpu") == [CPU_PROVIDER]


def test_cuda_asks_for_cuda_then_cpu() -> None:
    assert providers_for("cuda") == [CUDA_PROVIDER, CPU_PROVIDER]


def test_auto_follows_what_onnxruntime_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU_PROVIDER])
    assert providers_for("auto") == [CPU_PROVIDER]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    assert providers_for("auto") == [CUDA_PROVIDER, CPU_PROVIDER]


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_auto_on_this_machine_is_cpu() -> None:
    assert providers_for("auto") == [CPU_PROVIDER]
    assert OrtSession(_double_graph(), SessionPolicy(device="auto")).providers == [CPU_PROVIDER]


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        providers_for("tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        SessionPolicy(device="tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_cuda_fails_at_load_with_a_clear_message() -> None:
    with pytest.raises(RuntimeError, match=r"CUDAExecutionProvider.*onnxruntime-gpu"):
        OrtSession(_double_graph(), SessionPolicy(device="cuda"))


def test_runs_a_graph_on_cpu_with_explicit_options() -> None:
    session = OrtSession(_double_graph(), SessionPolicy(device="cpu", intra_op_threads=1))
    assert session.providers == [CPU_PROVIDER]
    assert session.device == "cpu"
    assert (session.input_names, session.output_names) == (["x"], ["y"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = session.run(["y"], {"x": x})
    np.testing.assert_array_equal(y, 2 * x)
    (y_all,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y_all, 2 * x)

    options = session._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_zero_threads_share_the_available_cores_among_the_concurrent_batches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "double.onnx"
    path.write_bytes(_double_graph())
    cores = available_cores()
    # The CPU default: one batch per core, each single-threaded.
    policy = SessionPolicy(device="cpu", intra_op_threads=0)
    assert policy.batches == cores and policy.threads == 1
    assert policy.exclusive_threads == cores  # OCR and faces: one call at a time, every core
    session = OrtSession(str(path), policy)
    assert session._session.get_session_options().intra_op_num_threads == 1
    # One batch at a time (the GPU's way, or chosen): every core within it.
    one_at_a_time = SessionPolicy(device="cpu", concurrent_batches=1)
    assert one_at_a_time.threads == cores
    session = OrtSession(str(path), one_at_a_time)
    assert session._session.get_session_options().intra_op_num_threads == cores
    explicit = SessionPolicy(device="cpu", intra_op_threads=3, concurrent_batches=2)
    assert (explicit.batches, explicit.threads, explicit.exclusive_threads) == (2, 3, 3)


def test_negative_threads_are_rejected() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        SessionPolicy(intra_op_threads=-1)
    with pytest.raises(ValueError, match="concurrent_batches"):
        SessionPolicy(concurrent_batches=-1)


# Builds a session of each kind, as a server does: one under the policy, and RapidOCR's own.
_SESSIONS_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
from dupify.inference.models.text import TextReader
from dupify.inference.session import OrtSession, SessionPolicy
policy = SessionPolicy(device="cpu", intra_op_threads=1)
(y,) = OrtSession(bytes.fromhex(sys.argv[1]), policy).run(None, {"x": np.ones((1, 3), np.float32)})
assert y.tolist() == [[2.0, 2.0, 2.0]]
assert TextReader(policy).read(np.full((64, 64, 3), 255, np.uint8)) == []
"""


def test_sessions_leave_nothing_under_home(tmp_path: Path) -> None:
    """ONNX Runtime's telemetry writes a device id and an event database under
    ~/.cache/Microsoft when it is imported, unless told not to before that import."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")  # set by this process's import
    }
    env["HOME"] = str(home)
    subprocess.run(
        [sys.executable, "-c", _SESSIONS_IN_A_FRESH_PROCESS, _double_graph().hex()],
        env=env,
        check=True,
        timeout=120,
    )
    assert sorted(path.relative_to(home).as_posix() for path in home.rglob("*")) == []
