"""Run a kernel test module's cases under the Triton interpreter in a child process.

Triton chooses interpreter or compiler when it is imported, so interpreted checks run in a
child (`python <test file>`, which prints its results as one JSON line) and never leak
TRITON_INTERPRET into the pytest process.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def run_interpreted(test_file: str) -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", SEFAR_KERNELS="triton", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.abspath(test_file)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
