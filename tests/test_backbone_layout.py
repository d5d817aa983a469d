"""The one-pass backbone (all elements together, block-diagonal temporal attention, a cls slot per
frame) against the per-element path it replaced; DropPath per (clip, element); the bf16 stream;
the temporal attention reference (`ops.attention.element_attention`) against SDPA per element."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sefar_fast.models import build_model, count_flops
from sefar_fast.models.timesformer import ElementLayout
from sefar_fast.ops.attention import element_attention

# ------------------------------------------------------------------ the per-element path, written out


def _mha(mod, x):
    """Multi-head attention over the middle axis of [M, S, D] with the weights of `mod` (qkv, proj)."""
    m, s, d = x.shape
    q, k, v = mod.qkv(x).view(m, s, 3, mod.heads, d // mod.heads).permute(2, 0, 3, 1, 4).unbind(0)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // mod.heads), dim=-1)
    return mod.proj((weights @ v).transpose(1, 2).reshape(m, s, d))


def _per_element_block(blk, x, t):
    """The block as it was: tokens [B, 1 + T*N, D] of ONE element, one shared cls token."""
    b, length, d = x.shape
    n = (length - 1) // t
    cls, patches = x[:, :1], x[:, 1:]
    seq = patches.reshape(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
    res = blk.temporal_fc(_mha(blk.temporal_attn, blk.temporal_norm1(seq)))
    patches = patches + res.view(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
    frames = torch.cat([cls.expand(b, t, d).reshape(b * t, 1, d), patches.reshape(b * t, n, d)], dim=1)
    res = _mha(blk.attn, blk.norm1(frames))
    res = torch.cat([res[:, 0].view(b, t, d).mean(dim=1, keepdim=True), res[:, 1:].reshape(b, t * n, d)], dim=1)
    x = torch.cat([cls, patches], dim=1) + res
    return x + blk.mlp(blk.norm2(x))


def per_element_cls(net, x):
    """Each element through the backbone on its own (the path before the one-pass layout)."""
    bb = net.backbone
    b, k = x.shape[:2]
    tokens = bb.patch_embed.proj(x.flatten(0, 1)).flatten(2).transpose(1, 2) + bb.pos_embed[:, 1:]
    tokens = tokens.reshape(b, k, bb.num_patches, bb.dim)
    out, start = [], 0
    for embed, t in zip(net.time_embed, net.elements):
        patches = (tokens[:, start : start + t] + embed[:, :, None]).reshape(b, t * bb.num_patches, bb.dim)
        h = torch.cat([(bb.cls_token + bb.pos_embed[:, :1]).expand(b, 1, bb.dim), patches], dim=1)
        for blk in bb.blocks:
            h = _per_element_block(blk, h, t)
        out.append(bb.norm(h[:, 0]))
        start += t
    return out


def perturbed(arch, elements, img, seed):
    """A model whose zero-initialised parts (temporal_fc, time embeddings) are not zero."""
    net = build_model(arch, 5, elements, img_size=img, drop_path=0.0).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


def outputs_and_grads(net, x, fn, weights):
    x = x.clone().requires_grad_(True)
    cls = fn(net, x)
    loss = sum((c * w).sum() for c, w in zip(cls, weights))
    named = {n: p for n, p in net.named_parameters() if not n.startswith("head.")}  # the head is not used
    grads = torch.autograd.grad(loss, [*named.values(), x])
    return torch.stack(cls), dict(zip([*named, "input"], grads))


@pytest.mark.parametrize("elements,img", [([2, 2, 4], 16), ([8], 16), ([2, 4], 24), ([2, 2, 2, 4], 16)])
def test_one_pass_equals_the_per_element_path_outputs_and_gradients(elements, img):
    net = perturbed("vit-pico", elements, img, seed=sum(elements) + img)
    x = torch.randn(3, sum(elements), 3, img, img, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(len(elements), 3, net.backbone.dim, generator=torch.Generator().manual_seed(2))
    ours, our_grads = outputs_and_grads(net, x, lambda n, v: n.element_cls(v), weights)
    ref, ref_grads = outputs_and_grads(net, x, per_element_cls, weights)
    assert (ours - ref).abs().max() < 1e-5
    assert our_grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        assert (our_grads[name] - g).abs().max() < 1e-5 * max(1.0, float(g.abs().max())), name
    assert ref_grads["backbone.blocks.0.temporal_fc.weight"].abs().max() > 1e-3  # time matters here
    assert ref_grads["time_embed.0"].abs().max() > 1e-3


def test_the_element_boundaries_matter():
    # The same weights read as one element of 4 frames and as two of 2 are different models.
    net = perturbed("vit-test", [2, 2], 16, seed=5)
    x = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        two = net.backbone.forward_elements(x, [2, 2])
        one = net.backbone.forward_elements(x, [4])
        first_half = net.backbone(x[:, :2])
    assert torch.allclose(two[:, 0], first_half, atol=1e-5)
    assert not torch.allclose(one[:, 0], first_half, atol=1e-3)


# ------------------------------------------------------------------ DropPath, dtype, no copies


@pytest.mark.parametrize("branch", ["temporal", "spatial", "mlp"])
def test_drop_path_drops_each_branch_per_clip_and_element(branch):
    elements = [2, 2, 4]
    net = perturbed("vit-test", elements, 16, seed=7)
    blk = net.backbone.blocks[0]
    silenced = {"temporal": [blk.attn.proj, blk.mlp.fc2], "spatial": [blk.temporal_fc, blk.mlp.fc2],
                "mlp": [blk.temporal_fc, blk.attn.proj]}[branch]
    with torch.no_grad():
        for linear in silenced:  # only `branch` adds anything
            linear.weight.zero_()
            linear.bias.zero_()
    blk.drop_path = 0.5
    x = torch.randn(64, sum(elements), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = net.backbone.tokens(x, torch.cat(list(net.time_embed), 1))
        layout = ElementLayout.build(elements, tokens.shape[2], tokens)
        full = blk(tokens, layout) - tokens  # eval: the branch kept as it is
        blk.train()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            dropped = blk(tokens, layout) - tokens
    kept = []
    for start, t in zip([0, 2, 4], elements):
        got, want = dropped[:, start : start + t].flatten(1), full[:, start : start + t].flatten(1)
        assert want.abs().amax(1).min() > 1e-3
        zero = got.abs().amax(1) == 0
        scaled = (got - 2 * want).abs().amax(1) < 1e-5
        assert (zero ^ scaled).all()  # every (clip, element): dropped whole, or kept whole and scaled by 2
        kept.append(scaled)
    kept = torch.stack(kept, 1)
    assert 0.3 < kept.float().mean() < 0.7
    assert (kept.any(1) & ~kept.all(1)).any()  # the elements of one clip are decided independently


def test_residual_stream_is_bf16_under_autocast():
    net = build_model("vit-test", 5, [2, 2, 4], img_size=16)
    seen = []
    for blk in net.backbone.blocks:
        blk.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net.element_cls(torch.randn(2, 8, 3, 16, 16))
    assert seen and all(pair == (torch.bfloat16, torch.bfloat16) for pair in seen)


def test_a_block_concatenates_nothing():
    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    net = build_model("vit-test", 5, [2, 2, 4], img_size=16).train()
    x = torch.randn(2, 8, 3, 16, 16)
    tokens = net.backbone.tokens(x).detach().requires_grad_(True)
    layout = ElementLayout.build([2, 2, 4], tokens.shape[2], tokens)
    with Ops() as ops:
        net.backbone.blocks[0](tokens, layout).sum().backward()
    # (the backward of each attention's q, k, v split stacks their gradients, as in any ViT)
    assert "addmm" in ops.names and "cat" not in ops.names


# ------------------------------------------------------------------ the temporal attention reference


def test_element_attention_is_sdpa_per_element():
    b, k, slots, heads, hd = 2, 8, 5, 2, 4
    lengths = [2, 2, 4]
    qkv = torch.randn(b, k, slots, 3 * heads * hd, generator=torch.Generator().manual_seed(0))
    element = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    for manual in (False, True):
        out = element_attention(qkv, element, heads, manual=manual)
        start = 0
        for t in lengths:
            seq = qkv[:, start : start + t].transpose(1, 2)  # [B, L, T, 3D]: one sequence per (clip, slot)
            q, kk, v = seq.reshape(b, slots, t, 3, heads, hd).permute(3, 0, 1, 4, 2, 5).unbind(0)
            want = F.scaled_dot_product_attention(q, kk, v)  # [B, L, H, T, hd]
            want = want.permute(0, 3, 1, 2, 4).reshape(b, t, slots, heads * hd)
            assert torch.allclose(out[:, start : start + t], want, atol=1e-6), (manual, t)
            start += t


# ------------------------------------------------------------------ FLOPs


def test_flop_count_is_the_per_element_mathematics():
    elements = [2, 2, 4]
    net = build_model("vit-test", 9, elements, img_size=24).eval()
    x = torch.randn(1, 8, 3, 24, 24)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.head_logits(net.fuse(per_element_cls(net, x)))
    assert count_flops("vit-test", 24, elements, num_classes=9) == counter.get_total_flops()


def test_one_pass_adds_little_to_the_flops_at_vit_b_size():
    # The one-pass layout also computes the cls slots' temporal step (multiplied by 0), the cls
    # MLP once per frame, and temporal products over every element's frames: a small surplus.
    net = build_model("vit-b", 99, [2, 2, 4], img_size=224, device="meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.empty(1, 8, 3, 224, 224, device="meta"))
    analytic = count_flops("vit-b", 224, [2, 2, 4], num_classes=99)
    assert analytic < counter.get_total_flops() < 1.01 * analytic
