"""Models: sizes, shapes, attention paths, element batching, fusion head, dropout, checkpointing, FLOP count
(pretrained loading: tests/test_pretrained.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sefar_fast.errors import SefarError
from sefar_fast.models import ARCHS, build_model, count_flops

COMBOS = [[2, 2, 4], [2, 4], [2, 2, 2, 4], [2, 2, 6], [2, 2, 8], [8]]


def perturb(module: nn.Module, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter so zero-initialised parts (temporal_fc, time embeds) matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def clips(b, k, s, seed=0):
    return torch.randn(b, k, 3, s, s, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ sizes and shapes


def test_unknown_arch_and_bad_sizes_are_user_errors():
    with pytest.raises(SefarError, match="vit-t, vit-s, vit-b, vit-pico, vit-test"):
        build_model("vit-xl", 5, [2, 2, 4], img_size=32)
    with pytest.raises(SefarError, match="multiple of the patch size 8"):
        build_model("vit-test", 5, [2, 2, 4], img_size=20)
    with pytest.raises(SefarError, match="elements"):
        build_model("vit-test", 5, [2, 0], img_size=16)


def test_vit_b_parameter_count_equals_the_reference():
    net = build_model("vit-b", 99, [2, 2, 4], img_size=224, device="meta")
    assert sum(p.numel() for p in net.parameters()) == 122_269_539


# timm's ViT-{T,S,B}/16 at 224 without the classifier (vit_*_patch16_224 minus head.*).
TIMM_VIT_NO_HEAD = {"vit-t": 5_524_416, "vit-s": 21_665_664, "vit-b": 85_798_656}


@pytest.mark.parametrize("arch", ["vit-t", "vit-s", "vit-b"])
@pytest.mark.parametrize("elements", [[2, 2, 4], [8]])
def test_parameter_count_is_vit_plus_temporal_parts_plus_head(arch, elements):
    net = build_model(arch, 99, elements, img_size=224, device="meta")
    d, depth = ARCHS[arch].dim, ARCHS[arch].depth
    temporal_per_block = 2 * d + (3 * d * d + 3 * d) + 2 * (d * d + d)  # temporal_norm1, qkv, proj, temporal_fc
    g = len(elements)
    pairs = g * (g - 1) // 2
    head = (g > 1) * (2 * d * 256 + 256 + 512) + (d * 256 + 256 + 512)  # pair / unary Linear + LN
    head += (g + pairs) * 256 * 256 + 256 + 512 + 256 * 99 + 99  # fusion Linear + LN, classifier
    expected = TIMM_VIT_NO_HEAD[arch] + depth * temporal_per_block + sum(elements) * d + head
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize("elements", COMBOS)
def test_forward_shapes_every_element_combo(elements):
    net = build_model("vit-test", 7, elements, img_size=16).eval()
    x = clips(3, sum(elements), 16)
    cls = net.element_cls(x)
    assert [tuple(c.shape) for c in cls] == [(3, 32)] * len(elements)
    assert net.features(x).shape == (3, 256)
    assert net(x).shape == (3, 7)
    assert torch.isfinite(net(x)).all()


@pytest.mark.parametrize(
    "arch,img,patch", [("vit-test", 24, None), ("vit-pico", 16, None), ("vit-s", 32, 16), ("vit-test", 16, 4)]
)
def test_forward_shapes_other_sizes(arch, img, patch):
    net = build_model(arch, 3, [2, 2, 4], img_size=img, patch_size=patch).eval()
    assert net.backbone.num_patches == (img // (patch or ARCHS[arch].patch_size)) ** 2
    assert net(clips(2, 8, img)).shape == (2, 3)


def test_wrong_input_shape_is_a_user_error():
    net = build_model("vit-test", 3, [2, 2, 4], img_size=16)
    with pytest.raises(SefarError, match=r"\[B, 8, 3, S, S\]"):
        net(clips(2, 6, 16))


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = (build_model("vit-test", 3, [2, 4], img_size=16, seed=s) for s in (1, 1, 2))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        if pa.std() > 0 and "norm" not in name:
            assert not torch.equal(pa, pc), name
    assert all((t == 0).all() for t in a.time_embed)
    assert all((blk.temporal_fc.weight == 0).all() for blk in a.backbone.blocks)


# ------------------------------------------------------------------ numerics


def test_sdpa_and_manual_attention_give_the_same_numbers():
    net = build_model("vit-pico", 5, [2, 2, 4], img_size=16).eval()
    perturb(net, 0)
    x = clips(2, 8, 16)
    with torch.no_grad():
        sdpa = net(x)
        net.set_attention("manual")
        manual = net(x)
    assert torch.allclose(sdpa, manual, atol=1e-5, rtol=1e-4)
    with pytest.raises(SefarError, match="sdpa, manual"):
        net.set_attention("flash")


def reference_timesformer_cls(bb, frames, time_embed, heads):
    """Divided space-time attention written out per patch position and per frame, from the weights of `bb`.

    frames [B, T, 3, S, S], time_embed [1, T, D] -> final-LN cls [B, D].
    """
    def ln(mod, v):
        return F.layer_norm(v, v.shape[-1:], mod.weight, mod.bias, 1e-6)

    def attend(mod, v):  # v [M, L, D]
        m, length, d = v.shape
        q, k, vv = (v @ mod.qkv.weight.T + mod.qkv.bias).chunk(3, -1)
        out = []
        for h in range(heads):
            sl = slice(h * d // heads, (h + 1) * d // heads)
            w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d // heads), -1)
            out.append(w @ vv[..., sl])
        return torch.cat(out, -1) @ mod.proj.weight.T + mod.proj.bias

    b, t = frames.shape[:2]
    w = bb.patch_embed.proj.weight
    pt = torch.stack([F.conv2d(frames[:, i], w, bb.patch_embed.proj.bias, stride=w.shape[-1]) for i in range(t)], 1)
    pt = pt.flatten(3).transpose(2, 3)  # [B, T, N, D]
    pt = pt + bb.pos_embed[:, None, 1:] + time_embed[:, :, None]
    cls = bb.cls_token[:, 0] + bb.pos_embed[:, 0]  # [1, D]
    cls = cls.expand(b, -1)
    n = pt.shape[2]
    for blk in bb.blocks:
        pt = pt + torch.stack([blk.temporal_fc(attend(blk.temporal_attn, ln(blk.temporal_norm1, pt[:, :, j])))
                               for j in range(n)], 2)
        cls_out, new_pt = [], []
        for i in range(t):
            seq = torch.cat([cls[:, None], pt[:, i]], 1)
            res = attend(blk.attn, ln(blk.norm1, seq))
            cls_out.append(res[:, 0])
            new_pt.append(pt[:, i] + res[:, 1:])
        cls = cls + torch.stack(cls_out, 0).mean(0)
        pt = torch.stack(new_pt, 1)
        cls = cls + blk.mlp(ln(blk.norm2, cls))
        pt = pt + blk.mlp(ln(blk.norm2, pt))
    return ln(bb.norm, cls)


def test_backbone_matches_divided_attention_written_out():
    net = build_model("vit-pico", 5, [2, 4], img_size=16).eval()
    perturb(net, 8)
    x = clips(2, 6, 16, seed=3)
    with torch.no_grad():
        ours = net.element_cls(x)
        for i, (start, t) in enumerate([(0, 2), (2, 4)]):
            ref = reference_timesformer_cls(net.backbone, x[:, start : start + t], net.time_embed[i],
                                             heads=ARCHS["vit-pico"].heads)
            assert torch.allclose(ours[i], ref, atol=1e-4), i


def test_one_pass_over_the_elements_equals_separate_passes():
    elements = [2, 2, 4, 2]
    net = build_model("vit-test", 5, elements, img_size=16).eval()
    perturb(net, 1)
    x = clips(3, sum(elements), 16, seed=2)
    with torch.no_grad():
        grouped = net.element_cls(x)
        start = 0
        for i, t in enumerate(elements):
            alone = net.backbone(x[:, start : start + t], net.time_embed[i])
            assert torch.allclose(grouped[i], alone, atol=1e-5), i
            start += t


def test_time_embedding_of_each_element_is_its_own():
    net = build_model("vit-test", 5, [2, 2, 4], img_size=16).eval()
    perturb(net, 3)
    x = clips(2, 8, 16)
    x[:, 2:4] = x[:, 0:2]  # the two fine elements see the same frames
    with torch.no_grad():
        f = net.element_cls(x)
        assert not torch.allclose(f[0], f[1])  # ...but have different time embeddings
        net.time_embed[1].copy_(net.time_embed[0])
        f = net.element_cls(x)
        assert torch.allclose(f[0], f[1], atol=1e-6)


def hand_fusion(head, cls):
    """The fusion head written out from its weights, pairs in lexicographic order."""
    def branch(fc, norm, v):
        return F.layer_norm(F.gelu(v @ fc.weight.T + fc.bias), (256,), norm.weight, norm.bias, 1e-6)

    g = len(cls)
    parts = [
        branch(head.pair_fc, head.pair_norm, torch.cat([cls[i], cls[j]], -1)) for i in range(g) for j in range(i + 1, g)
    ]
    parts += [branch(head.unary_fc, head.unary_norm, c) for c in cls]
    return branch(head.fuse_fc, head.fuse_norm, torch.cat(parts, -1))


@pytest.mark.parametrize("elements", [[2, 2, 4], [2, 2, 2, 4], [8]])
def test_fusion_head_matches_hand_computation(elements):
    net = build_model("vit-test", 6, elements, img_size=16).eval()
    perturb(net, 4)
    g = len(elements)
    assert net.head.fuse_fc.in_features == (g + g * (g - 1) // 2) * 256
    assert (net.head.pair_fc is None) == (g == 1)
    x = clips(2, sum(elements), 16)
    with torch.no_grad():
        cls = net.element_cls(x)
        feat = net.features(x)
        assert torch.allclose(feat, hand_fusion(net.head, cls), atol=1e-5)
        logits = net(x)
        assert torch.allclose(logits, feat @ net.head.classifier.weight.T + net.head.classifier.bias, atol=1e-5)


# ------------------------------------------------------------------ dropout and MC


@pytest.mark.parametrize("arch", list(ARCHS))
def test_only_the_head_dropout_has_positive_p(arch):
    net = build_model(arch, 10, [2, 2, 4], img_size=32, patch_size=16, device="meta")
    dropouts = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    assert [(n, m.p) for n, m in dropouts] == [("head.dropout", 0.5)]


def test_head_keep_mask_equals_module_dropout_with_the_same_mask():
    net = build_model("vit-test", 6, [2, 2, 4], img_size=16).train()
    feat = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(123)
        via_module = net.head_logits(feat)
        torch.manual_seed(123)
        mask = F.dropout(torch.ones_like(feat), p=0.5, training=True)  # the same draw nn.Dropout makes
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    assert torch.allclose(via_module, net.head_logits(feat, keep_mask=mask), atol=1e-6)


def test_keep_masks_broadcast_over_samples():
    net = build_model("vit-test", 6, [2, 2, 4], img_size=16)
    masks = (torch.rand((10, 4, 256), generator=torch.Generator().manual_seed(5)) >= 0.5).float() * 2.0
    feat = torch.randn(4, 256)
    logits = net.head_logits(feat, keep_mask=masks)
    assert logits.shape == (10, 4, 6)
    assert torch.allclose(logits[3], net.head.classifier(feat * masks[3]))


def test_mc_dropout_mode_varies_only_the_head():
    net = build_model("vit-pico", 6, [2, 2, 4], img_size=16, drop_path=0.5)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        x = clips(2, 8, 16)
        net.train()
        assert not torch.equal(net.features(x), net.features(x))  # DropPath draws in train mode
    net.enable_mc_dropout()
    assert not net.backbone.training and not net.backbone.blocks[0].training and net.head.dropout.training
    x = clips(2, 8, 16)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        assert torch.equal(net.features(x), net.features(x))  # DropPath is off
        assert not torch.equal(net(x), net(x))  # the head dropout is on


def test_grad_checkpointing_gives_the_same_gradients():
    net = build_model("vit-pico", 4, [2, 2, 4], img_size=16, drop_path=0.3).train()  # depth 4: DropPath active
    perturb(net, 6, scale=0.02)
    x, y = clips(3, 8, 16), torch.tensor([0, 3, 1])

    def grads(checkpointing):
        net.set_grad_checkpointing(checkpointing)
        net.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(7)  # same DropPath and head-dropout draws
            F.cross_entropy(net(x), y).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6), name
    assert plain["backbone.blocks.0.temporal_fc.weight"].abs().sum() > 0


def test_forward_is_captured_as_one_graph():
    net = build_model("vit-test", 4, [2, 2, 4], img_size=16).eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    x = clips(2, 8, 16)
    with torch.no_grad():
        assert torch.allclose(compiled(x), net(x), atol=1e-6)


# ------------------------------------------------------------------ FLOPs


def test_flop_count_of_vit_b_matches_the_reference_estimate():
    # 24.5 GMACs per 224^2 frame for a TimeSformer ViT-B/16 (ViT linear layers + temporal attention).
    flops = count_flops("vit-b", 224, [2, 2, 4], num_classes=99)
    assert flops == pytest.approx(2 * 8 * 24.5e9, rel=0.01)


def test_embedding_init_scales_are_configurable_and_default_to_timm():
    plain = build_model("vit-test", 5, [2, 4], img_size=16)
    assert all(not e.detach().any() for e in plain.time_embed)  # zero: a loaded ViT starts image-only
    assert 0.015 < float(plain.backbone.pos_embed.detach().std()) < 0.025
    strong = build_model("vit-test", 5, [2, 4], img_size=16, pos_embed_std=0.5, time_embed_std=0.5)
    values = torch.cat([strong.backbone.pos_embed.flatten()] + [e.flatten() for e in strong.time_embed])
    assert 0.4 < float(values.detach().std()) < 0.6
    # the rest of the init is unchanged: same seed, same patch embedding
    assert torch.equal(plain.backbone.patch_embed.proj.weight, strong.backbone.patch_embed.proj.weight)
    with pytest.raises(SefarError, match="time_embed_std"):
        build_model("vit-test", 5, [2, 4], img_size=16, time_embed_std=-1.0)
