"""Temporal attention kernel (`kernels.attention`) against SDPA run on each element alone.

As in test_kernels_views, the Triton kernels run under TRITON_INTERPRET=1 in a child process
(this file run as a script) so that the pytest process never imports triton. The child
reports, per case, the largest differences of the output and of the qkv gradient from SDPA
per element (float64 for the bf16 cases), whether the dispatcher ran the kernel, and a model
with the kernel installed against the same model on the torch path (eager and compiled).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from interpreted import needs_triton

# name: element lengths, batch, slots L, heads, head dim, dtype
CASES = {
    "sefar-2-2-4": ([2, 2, 4], 2, 5, 2, 16, "float32"),
    "one-element-8": ([8], 1, 3, 1, 64, "float32"),
    "fine-2-4-odd-head": ([2, 4], 2, 7, 3, 12, "float32"),
    "four-elements": ([2, 2, 2, 4], 1, 4, 2, 8, "float32"),
    "one-frame-element": ([1, 3], 3, 2, 2, 8, "float32"),
    "twelve-frames": ([2, 2, 8], 1, 3, 1, 16, "float32"),
    "bf16-2-2-4": ([2, 2, 4], 2, 9, 2, 32, "bfloat16"),
}


def sdpa_per_element(qkv, lengths, heads):
    """Each element's frames alone through F.scaled_dot_product_attention: [B, K, L, 3D] -> [B, K, L, D]."""
    b, _, slots, three_d = qkv.shape
    d = three_d // 3
    outs, start = [], 0
    for t in lengths:
        q, k, v = qkv[:, start : start + t].reshape(b, t, slots, 3, heads, d // heads).permute(3, 0, 2, 4, 1, 5)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, L, H, T, hd]
        outs.append(out.permute(0, 3, 1, 2, 4).reshape(b, t, slots, d))
        start += t
    return torch.cat(outs, dim=1)


def element_index(lengths):
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))


# ----------------------------------------------------------------------------- the child process


def _kernel_cases() -> dict:
    from sefar_fast import kernels
    from sefar_fast.kernels.attention import element_attention_triton

    results = {}
    for i, (name, (lengths, b, slots, heads, hd, dtype)) in enumerate(CASES.items()):
        g = torch.Generator().manual_seed(i)
        qkv = torch.randn(b, sum(lengths), slots, 3 * heads * hd, generator=g).to(getattr(torch, dtype))
        grad = torch.randn(b, sum(lengths), slots, heads * hd, generator=g).to(qkv.dtype)
        element = element_index(lengths)
        x = qkv.clone().requires_grad_(True)
        out = element_attention_triton(x, element, heads)
        (dqkv,) = torch.autograd.grad(out, x, grad)
        # The reference in float64 from the same (possibly bf16-rounded) values.
        ref_in = qkv.detach().double().requires_grad_(True)
        want = sdpa_per_element(ref_in, lengths, heads)
        (want_grad,) = torch.autograd.grad(want, ref_in, grad.double())
        dispatched = kernels.element_attention(qkv, element, heads)
        results[name] = dict(
            dtypes=[str(out.dtype), str(dqkv.dtype)],
            out_err=float((out.detach().double() - want.detach()).abs().max() / want.detach().abs().max()),
            grad_err=float((dqkv.double() - want_grad).abs().max() / want_grad.abs().max()),
            dispatch_equal=bool(torch.equal(dispatched, out.detach())),
        )
    return results


def _model_case() -> dict:
    """A model with the kernel installed against the same model on the torch path: outputs and gradients,
    eagerly and through torch.compile (aot_eager: the kernel's registered backward under AOT autograd)."""
    from sefar_fast import kernels
    from sefar_fast.kernels import attention
    from sefar_fast.models import build_model

    launches = []
    launch = attention._launch
    attention._launch = lambda kernel, *args: (launches.append(kernel.__name__), launch(kernel, *args))[1]
    net = build_model("vit-test", 5, [2, 2, 4], img_size=16, drop_path=0.0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x = torch.randn(2, 8, 3, 16, 16, generator=g)

    def run(model):
        net.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}

    ref_out, ref_grads = run(net)
    net.set_temporal_kernel(kernels.element_attention)
    result = {}
    for mode, model in (("eager", net), ("compiled", torch.compile(net, backend="aot_eager", fullgraph=True))):
        launches.clear()
        out, grads = run(model)
        result[mode] = dict(launches=sorted(set(launches)), out_err=float((out - ref_out).abs().max()),
                            grad_err=max(float((grads[n] - ref_grads[n]).abs().max() / ref_grads[n].abs().max())
                                         for n in grads if ref_grads[n].abs().max() > 0))
    result["temporal_grad"] = float(ref_grads["backbone.blocks.0.temporal_attn.qkv.weight"].abs().max())
    return result


# ----------------------------------------------------------------------------- the tests (parent process)


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_equals_sdpa_per_element(interpreted, name):
    got = interpreted["kernel"][name]
    dtype = CASES[name][-1]
    assert got["dtypes"] == [f"torch.{dtype}"] * 2
    # Errors relative to the largest value. float32: accumulation order only; bfloat16: the
    # float32 result cast once to 8 significant bits (the interpreter truncates, a GPU rounds
    # to nearest: at most one unit in the last place, 2^-7).
    tol = 1e-6 if dtype == "float32" else 2.0**-7
    assert got["out_err"] <= tol
    assert got["grad_err"] <= tol
    assert got["dispatch_equal"], "kernels.element_attention did not run the kernel"


@needs_triton
def test_model_with_the_kernel_equals_the_torch_path(interpreted):
    got = interpreted["model"]
    assert got["temporal_grad"] > 1e-3  # the temporal attention matters to this model
    for mode in ("eager", "compiled"):  # (the gradient errors are relative to each parameter's largest)
        assert got[mode]["launches"] == ["_backward_kernel", "_forward_kernel"], mode
        assert got[mode]["out_err"] < 1e-5, mode
        assert got[mode]["grad_err"] < 1e-5, mode


def test_dispatcher_takes_the_torch_path_off_cuda(monkeypatch):
    from sefar_fast import kernels
    from sefar_fast.ops.attention import element_attention

    monkeypatch.delenv("SEFAR_KERNELS", raising=False)
    qkv = torch.randn(2, 8, 3, 3 * 2 * 4, generator=torch.Generator().manual_seed(1))
    element = element_index([2, 2, 4])
    assert kernels.kernel_backend(qkv.device) == "torch"
    assert torch.equal(kernels.element_attention(qkv, element, 2), element_attention(qkv, element, 2))
    assert torch.allclose(kernels.element_attention(qkv, element, 2), sdpa_per_element(qkv, [2, 2, 4], 2),
                          atol=1e-6)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    print(json.dumps({"kernel": _kernel_cases(), "model": _model_case()}))
