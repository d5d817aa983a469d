"""The compiled training step: inductor's setting, and the eager fallback when the compiler fails."""

from __future__ import annotations

import pytest
import torch
from cli_runner import run_cli
from test_nan import TINY
from torch import nn

from sefar_fast.checkpoint import load_weights
from sefar_fast.train.compiling import CompiledForward, configure_inductor


def _compiler_that_fails(calls: list):
    """A torch.compile whose module fails the way inductor does on its first call."""
    def fake_compile(module, *args, **kwargs):
        def compiled(*a, **k):
            calls.append(1)
            raise torch._dynamo.exc.BackendCompilerFailed(None, AssertionError("tiling analysis"), None)
        return compiled
    return fake_compile


def test_inductor_coalescing_analysis_is_switched_off():
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config.triton, "coalesce_tiling_analysis"):
        pytest.skip("this torch has no coalescing analysis")
    inductor_config.triton.coalesce_tiling_analysis = True
    configure_inductor()
    assert inductor_config.triton.coalesce_tiling_analysis is False


def test_a_compiler_failure_falls_back_to_eager_once_and_says_why(monkeypatch):
    calls, said = [], []
    monkeypatch.setattr(torch, "compile", _compiler_that_fails(calls))
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    fwd = CompiledForward(net, on_fallback=said.append)
    x = torch.randn(2, 4)
    assert torch.equal(fwd(x), net(x)) and torch.equal(fwd(2 * x), net(2 * x))
    assert len(calls) == 1, "the compiled module is not tried again after it failed"
    assert len(said) == 1 and "BackendCompilerFailed" in said[0] and "--no-compile" in said[0]
    assert fwd.error is not None


def test_a_torch_compile_that_refuses_at_once_also_falls_back(monkeypatch):
    def refusing_compile(module, *args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refusing_compile)
    said = []
    net = nn.Linear(4, 3)
    fwd = CompiledForward(net, on_fallback=said.append)
    x = torch.randn(2, 4)
    assert torch.equal(fwd(x), net(x))
    assert len(said) == 1 and "Dynamo is not supported" in said[0]
    with pytest.raises(RuntimeError, match="not supported"):
        CompiledForward(net)  # without a fallback: raised


def test_without_a_fallback_the_compiler_failure_is_raised(monkeypatch):
    monkeypatch.setattr(torch, "compile", _compiler_that_fails([]))
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):
        CompiledForward(nn.Linear(4, 3))(torch.randn(2, 4))


def test_an_error_of_the_model_itself_is_not_swallowed(monkeypatch):
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("shape mismatch in the model")

    monkeypatch.setattr(torch, "compile", lambda module, *a, **k: module)  # "compiled" = the module itself
    said = []
    fwd = CompiledForward(Broken(), on_fallback=said.append)
    with pytest.raises(ValueError, match="shape mismatch"):
        fwd(torch.randn(1))
    assert said == [] and fwd.error is None


def test_a_run_whose_compiler_fails_trains_eagerly_to_the_same_weights(tmp_path, monkeypatch, capsys):
    code, _ = run_cli(["train", *TINY, "--out", tmp_path / "eager", "--no-compile"], monkeypatch, capsys)
    assert code == 0
    calls = []
    monkeypatch.setattr(torch, "compile", _compiler_that_fails(calls))
    code, err = run_cli(["train", *TINY, "--out", tmp_path / "fallback", "--compile"], monkeypatch, capsys)
    assert code == 0, err
    assert calls == [1] and "torch.compile could not build the training step" in err
    eager = load_weights(tmp_path / "eager" / "last.safetensors").student
    fallback = load_weights(tmp_path / "fallback" / "last.safetensors").student
    assert eager.keys() == fallback.keys()
    assert all(torch.equal(eager[k], fallback[k]) for k in eager)
