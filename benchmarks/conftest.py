"""pytest-benchmark comparisons: ``pytest benchmarks/ --benchmark-only`` (add --benchmark-compare to diff runs).

One benchmark group per section and shape of ``python -m fastlstm bench``; in each group fastlstm and the peers
run on the same weights and input (float32 LSTM: the reference on small shapes, torch, onnxruntime, OpenVINO f32;
bf16 and int8: OpenVINO's default precision, onnxruntime int8; GRU: torch, onnxruntime, OpenVINO f32; PyTorch
models: torch and accelerated). A peer that is not installed is skipped, or fails the benchmark when the
environment variable CI is set (tests/conftest.py's rule). In CI the suite runs with --benchmark-disable as a
smoke test (each benchmark once), so it cannot rot.
"""
import importlib.util
import os

# the test suite's helpers (missing_peer: skip, or fail under CI), loaded by path: both directories' helper
# modules are named conftest
_spec = importlib.util.spec_from_file_location(
    "fastlstm_test_helpers", os.path.join(os.path.dirname(__file__), "..", "tests", "conftest.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
missing_peer = _helpers.missing_peer
