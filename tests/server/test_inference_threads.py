"""The inference threads' spin-waiting setting (DUPIFY_INFERENCE__SPIN_WAIT): off by default, so
ONNX Runtime's idle threads leave the cores to the decoder processes and the event loop, carried
from the settings to every session, and without effect on what a model answers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from dupify.config import InferenceSettings
from dupify.inference.session import OrtSession, SessionPolicy


def double_graph() -> bytes:
    """y = x + x on a (N, 3) float tensor."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_spinning_is_off_by_default_and_follows_the_setting() -> None:
    assert InferenceSettings().spin_wait is False
    assert SessionPolicy().spin_wait is False
    assert SessionPolicy.from_settings(InferenceSettings()).spin_wait is False
    assert SessionPolicy.from_settings(InferenceSettings(spin_wait=True)).spin_wait is True


def test_sessions_answer_the_same_either_way() -> None:
    batch = np.arange(12, dtype=np.float32).reshape(4, 3)
    answers = []
    for spin in (False, True):
        session = OrtSession(double_graph(), SessionPolicy(intra_op_threads=2, spin_wait=spin))
        assert session.spin_wait is spin
        (doubled,) = session.run(["y"], {"x": batch})
        answers.append(doubled)
    assert np.array_equal(answers[0], batch * 2)
    assert np.array_equal(answers[0], answers[1])
