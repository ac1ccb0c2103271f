"""Every script in examples/ runs to completion (each asserts its own agreement with the framework it shows).

Each runs in a fresh interpreter that imports the same fastlstm as these tests, with KERAS_BACKEND=torch,
from an empty working directory. Examples needing a framework are skipped when it is missing (failed
under CI, through ``require``).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import package_parent, require

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
EXAMPLES = sorted(f for f in os.listdir(EXAMPLES_DIR) if f.endswith(".py")) if os.path.isdir(EXAMPLES_DIR) else []

# what each example imports beyond fastlstm and numpy
REQUIRES = {
    "from_torch.py": ["torch"],
    "accelerate_torch.py": ["torch"],
    "from_keras.py": ["keras"],
    "from_onnx.py": ["onnx", "onnxruntime"],
    "save_load.py": [],
    "gru.py": ["torch", "onnx", "onnxruntime"],
    "dask_batch.py": ["dask.array", "distributed"],
    "ray_batch.py": ["ray.data"],
}


def test_expected_examples_exist():
    assert set(REQUIRES) <= set(EXAMPLES), f"missing examples: {sorted(set(REQUIRES) - set(EXAMPLES))}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, tmp_path):
    if example == "from_keras.py":
        os.environ.setdefault("KERAS_BACKEND", "torch")
    for module in REQUIRES.get(example, []):
        require(module)
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "torch"
    env["PYTHONPATH"] = os.pathsep.join([package_parent()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES_DIR, example)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{example} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{example} printed nothing"
    assert os.listdir(tmp_path) == [], f"{example} left files behind: {os.listdir(tmp_path)}"
