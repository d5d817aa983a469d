"""Pretrained ViT weights in every published layout, by file or by hub name, against a plain ViT written here.

The check throughout: a source ViT's weights, written in a layout by code in this file (independent of
the loader), loaded into a SefarNet, give every element the source ViT's cls feature of its frame when
the element's frames are identical (temporal_fc is zero and the time embedding zero, so the temporal
branch adds nothing), to 1e-5.
"""

import argparse
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sefar_fast.config import build_config
from sefar_fast.errors import SefarError
from sefar_fast.models import build_model, load_pretrained

HEADS = 2  # vit-test and vit-pico


def random_vit_state(dim=32, depth=1, patch=8, grid=2, classes=10, seed=0, layer_scale=False, cls_position=True):
    """A random timm-layout ViT state dict (with a classifier head); DeiT-III-like with layer scale and
    no position for the cls token."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return scale * torch.randn(*shape, generator=g)

    sd = {
        "patch_embed.proj.weight": r(dim, 3, patch, patch),
        "patch_embed.proj.bias": r(dim),
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, int(cls_position) + grid * grid, dim),
        "norm.weight": 1 + r(dim),
        "norm.bias": r(dim),
        "head.weight": r(classes, dim),
        "head.bias": r(classes),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
            b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
            b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
            b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim),
        }
        if layer_scale:  # far from 1, so that dropping a gamma moves the feature a lot
            sd |= {b + "ls1.gamma": 0.1 + r(dim, scale=1.0).abs(), b + "ls2.gamma": 0.1 + r(dim, scale=1.0).abs()}
    return sd


def plain_vit_cls(sd, images):
    """A plain ViT forward from a timm state dict: final-LN cls token of each image [M, 3, S, S]."""
    w = sd["patch_embed.proj.weight"]
    x = F.conv2d(images, w, sd["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    m, n, d = x.shape
    if sd["pos_embed"].shape[1] == n:  # no_embed_class: positions for the patches only
        x = torch.cat([sd["cls_token"].expand(m, 1, d), x + sd["pos_embed"]], 1)
    else:
        x = torch.cat([sd["cls_token"].expand(m, 1, d), x], 1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        ls1 = sd.get(f"blocks.{i}.ls1.gamma", torch.ones(d))
        ls2 = sd.get(f"blocks.{i}.ls2.gamma", torch.ones(d))
        h = F.layer_norm(x, (d,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        q, k, v = (h @ p("attn.qkv.weight").T + p("attn.qkv.bias")).split(d, -1)
        q, k, v = (t.reshape(m, -1, HEADS, d // HEADS).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // HEADS), -1) @ v
        x = x + ls1 * (a.transpose(1, 2).reshape(m, -1, d) @ p("attn.proj.weight").T + p("attn.proj.bias"))
        h = F.layer_norm(x, (d,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        h = F.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        x = x + ls2 * (h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias"))
    return F.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], 1e-6)[:, 0]


# ---- writers: timm names -> each published layout -------------------------------------------------------------------
def timm_to_npz(sd, big_vision=False, prefix="", scan=False):
    """vit_jax (or big_vision) .npz names and layouts; big_vision's `params/` prefix and scanned blocks."""
    mha, ln2, mlp = (0, 1, 0) if big_vision else (1, 2, 3)
    d = sd["norm.weight"].shape[0]
    a = lambda t: t.detach().numpy().copy()  # noqa: E731
    out = {
        "embedding/kernel": a(sd["patch_embed.proj.weight"].permute(2, 3, 1, 0)),  # OIHW -> HWIO
        "embedding/bias": a(sd["patch_embed.proj.bias"]),
        "cls": a(sd["cls_token"]),
        ("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"): a(sd["pos_embed"]),
        "Transformer/encoder_norm/scale": a(sd["norm.weight"]),
        "Transformer/encoder_norm/bias": a(sd["norm.bias"]),
        "head/kernel": a(sd["head.weight"].T),
        "head/bias": a(sd["head.bias"]),
    }
    blocks = []
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        att = f"MultiHeadDotProductAttention_{mha}/"
        blk = {"LayerNorm_0/scale": a(p("norm1.weight")), "LayerNorm_0/bias": a(p("norm1.bias"))}
        wq, wk, wv = p("attn.qkv.weight").chunk(3, 0)
        bq, bk, bv = p("attn.qkv.bias").chunk(3, 0)
        for name, wt, bt in (("query", wq, bq), ("key", wk, bk), ("value", wv, bv)):
            blk[f"{att}{name}/kernel"] = a(wt.T.reshape(d, HEADS, d // HEADS))
            blk[f"{att}{name}/bias"] = a(bt.reshape(HEADS, d // HEADS))
        blk[f"{att}out/kernel"] = a(p("attn.proj.weight").T.reshape(HEADS, d // HEADS, d))
        blk[f"{att}out/bias"] = a(p("attn.proj.bias"))
        blk[f"LayerNorm_{ln2}/scale"], blk[f"LayerNorm_{ln2}/bias"] = a(p("norm2.weight")), a(p("norm2.bias"))
        for r in (0, 1):
            blk[f"MlpBlock_{mlp}/Dense_{r}/kernel"] = a(p(f"mlp.fc{r + 1}.weight").T)
            blk[f"MlpBlock_{mlp}/Dense_{r}/bias"] = a(p(f"mlp.fc{r + 1}.bias"))
        blocks.append(blk)
        i += 1
    if scan:  # nn.scan: one encoderblock whose arrays carry the depth first
        out |= {f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]}
    else:
        out |= {f"Transformer/encoderblock_{j}/{k}": v for j, b in enumerate(blocks) for k, v in b.items()}
    return {prefix + k: v for k, v in out.items()}


def deit3_original(sd):
    """facebookresearch/deit's names for layer scale (gamma_1, gamma_2), nested under "model"."""
    return {"model": {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in sd.items()}}


def timm_training_checkpoint(sd):
    """What timm's train.py saves: DDP names under state_dict, beside args, optimizer, metric, ..."""
    return {"epoch": 3, "arch": "vit_test", "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "args": argparse.Namespace(model="vit_test", lr=0.1, mean=(0.5, 0.5, 0.5), amp=True), "version": 2,
            "metric": 81.2}


LAYOUTS = {
    "timm.pth": lambda sd, path: torch.save(sd, path),
    "nested.pth": lambda sd, path: torch.save({"epoch": 3, "model": sd}, path),
    "pytorch_model.bin": lambda sd, path: torch.save(sd, path),
    "last.pth.tar": lambda sd, path: torch.save(timm_training_checkpoint(sd), path),
    "timm.safetensors": lambda sd, path: save_file(sd, str(path)),
    "vit_jax.npz": lambda sd, path: np.savez(path, **timm_to_npz(sd)),
    "vit_jax_opt_target.npz": lambda sd, path: np.savez(path, **timm_to_npz(sd, prefix="opt/target/"),
                                                      **{"opt/state/step": np.zeros(1)}),
    "big_vision.npz": lambda sd, path: np.savez(path, **timm_to_npz(sd, big_vision=True, prefix="params/")),
    "big_vision_scan.npz": lambda sd, path: np.savez(path, **timm_to_npz(sd, True, "params/", scan=True)),
}


def element_features_match(net, sd, seed=1):
    """Each element sees its own image repeated: its cls feature must be the source ViT's of that image."""
    g = torch.Generator().manual_seed(seed)
    s = net.backbone.img_size
    images = [torch.randn(3, 3, s, s, generator=g) for _ in net.elements]
    x = torch.cat([img[:, None].expand(3, n, 3, s, s) for img, n in zip(images, net.elements)], 1)
    with torch.no_grad():
        ours = net.eval().element_cls(x)
    for img, feature in zip(images, ours):
        expected = plain_vit_cls(sd, img)
        assert (feature - expected).abs().max() < 1e-5 * max(1.0, float(expected.abs().max()))
    return True


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_gives_the_source_vits_cls_feature(tmp_path, layout):
    sd = random_vit_state(dim=64, depth=4, seed=3)  # vit-pico's size: 4 blocks, so scanned blocks are split
    LAYOUTS[layout](sd, tmp_path / layout)
    net = build_model("vit-pico", 5, [1, 2, 4], img_size=16, seed=9)
    report = load_pretrained(net, tmp_path / layout)
    assert report.dropped == ["head.bias", "head.weight"]
    assert element_features_match(net, sd)


@pytest.mark.parametrize("layout", ["timm.safetensors", "deit3_original.pth"])
def test_deit3_layer_scale_is_folded_and_the_cls_gets_no_position(tmp_path, layout):
    sd = random_vit_state(dim=64, depth=4, seed=4, layer_scale=True, cls_position=False)
    if layout == "timm.safetensors":
        save_file(sd, str(tmp_path / layout))
    else:
        torch.save(deit3_original(sd), tmp_path / layout)
    net = build_model("vit-pico", 5, [2, 4], img_size=16, seed=9)
    report = load_pretrained(net, tmp_path / layout)
    assert report.layer_scale_folded and report.cls_position_zero
    assert torch.equal(net.backbone.pos_embed[0, 0], torch.zeros(64))
    assert element_features_match(net, sd)


def test_one_frame_element_is_the_plain_vit_and_the_report_says_what_was_kept(tmp_path):
    sd = random_vit_state()
    torch.save(sd, tmp_path / "vit.pth")
    net = build_model("vit-test", 5, [1, 2], img_size=16)
    report = load_pretrained(net, tmp_path / "vit.pth")
    assert sorted(report.kept_init) == sorted(
        [f"backbone.blocks.0.temporal_fc.{w}" for w in ("weight", "bias")]
        + [k for k in net.state_dict() if not k.startswith("backbone.")]
    )
    blk = net.backbone.blocks[0]
    assert torch.equal(blk.temporal_attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    assert torch.equal(blk.temporal_norm1.bias, sd["blocks.0.norm1.bias"])
    assert (blk.temporal_fc.weight == 0).all() and (blk.temporal_fc.bias == 0).all()
    assert "loaded" in report.summary() and "2 dropped" in report.summary()


def test_pos_embed_on_another_grid_is_resized(tmp_path):
    sd = random_vit_state(dim=32, grid=2)
    constant = torch.arange(32.0)
    sd["pos_embed"][0, 1:] = constant  # every patch position the same vector
    torch.save(sd, tmp_path / "vit.pth")
    net = build_model("vit-test", 5, [2, 4], img_size=32)  # grid 4
    report = load_pretrained(net, tmp_path / "vit.pth")
    assert report.pos_embed_resized == (2, 4)
    pos = net.backbone.pos_embed
    assert pos.shape == (1, 17, 32)
    assert torch.equal(pos[0, 0], sd["pos_embed"][0, 0])  # the cls position is not interpolated
    assert torch.allclose(pos[0, 1:], constant.expand(16, 32), atol=1e-4)  # interpolation keeps constants


def net16():
    return build_model("vit-test", 5, [2, 4], img_size=16)


@pytest.mark.parametrize("extra, message", [
    ({"dist_token": torch.zeros(1, 1, 32)},
     r"1 tensors have no place in the model and would change what it computes \(dist_token\)"),
    ({"reg_token": torch.zeros(1, 4, 32), "fc_norm.weight": torch.ones(32)},
     r"2 tensors .*\(fc_norm.weight, reg_token\)"),
])
def test_tensors_that_would_change_the_function_are_errors(tmp_path, extra, message):
    torch.save(random_vit_state() | extra, tmp_path / "vit.pth")
    with pytest.raises(SefarError, match=message):
        load_pretrained(net16(), tmp_path / "vit.pth")


def test_missing_or_foreign_weights_are_errors(tmp_path):
    sd = random_vit_state()
    del sd["cls_token"]  # a global-pool ViT: the cls feature would be random
    torch.save(sd, tmp_path / "gap.pth")
    with pytest.raises(SefarError, match=r"gap\.pth lacks 1 ViT weights \(cls_token\), which would stay random"):
        load_pretrained(net16(), tmp_path / "gap.pth")
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, tmp_path / "resnet.pth")
    with pytest.raises(SefarError, match=r"resnet\.pth holds no ViT weights \(no patch_embed\.proj\.weight; it has "
                                         r"conv1\.weight, fc\.weight, \.\.\.\); give ImageNet ViT weights"):
        load_pretrained(net16(), tmp_path / "resnet.pth")
    sd = random_vit_state(layer_scale=True)
    del sd["blocks.0.mlp.fc2.weight"]
    torch.save(sd, tmp_path / "ls.pth")
    with pytest.raises(SefarError, match=r"layer scale blocks\.0\.ls2\.gamma has no blocks\.0\.mlp\.fc2"):
        load_pretrained(net16(), tmp_path / "ls.pth")


def test_a_sefar_checkpoint_is_named_as_such(tiny_run):
    with pytest.raises(SefarError) as err:
        load_pretrained(net16(), tiny_run.best)
    assert str(err.value).startswith(f"{tiny_run.best} is a sefar checkpoint (a trained SeFAR network, not ImageNet "
                                     f"weights): evaluate it with 'sefar eval {tiny_run.best}'")


def test_mismatched_weights_are_user_errors(tmp_path):
    torch.save(random_vit_state(dim=32, depth=1), tmp_path / "tiny.pth")
    with pytest.raises(SefarError, match=r"tiny\.pth.*width 32 and depth 1.*width 64 and depth 4"):
        load_pretrained(build_model("vit-pico", 5, [2, 4], img_size=16), tmp_path / "tiny.pth")
    with pytest.raises(SefarError, match=r"patch_embed\.proj\.weight has shape \(32, 3, 8, 8\).*\(32, 3, 4, 4\)"):
        load_pretrained(build_model("vit-test", 5, [2, 4], img_size=16, patch_size=4), tmp_path / "tiny.pth")
    with pytest.raises(SefarError, match="pretrained weights .*absent.pth not found; give timm:NAME.TAG, hf:"):
        load_pretrained(net16(), tmp_path / "absent.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(SefarError, match="unknown suffix '.onnx'"):
        load_pretrained(net16(), tmp_path / "w.onnx")
    (tmp_path / "broken.pth").write_bytes(b"not a zip")
    with pytest.raises(SefarError, match=r"cannot read pretrained weights .*broken\.pth: "):
        load_pretrained(net16(), tmp_path / "broken.pth")


# ---- weights by name, from a Hugging Face cache built here (no network) ---------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline huggingface_hub whose cache is a fresh folder; put(repo, file, write) adds a cached file
    the way the hub's cache lays it out (refs/main -> snapshots/<commit>/<file>)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(repo, file, write):
        folder = cache / f"models--{repo.replace('/', '--')}"
        commit = "0123456789abcdef0123456789abcdef01234567"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commit)
        target = folder / "snapshots" / commit / file
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)
        return target

    put.cache = cache
    return put


def test_timm_and_hf_names_load_from_the_cache_offline(hub):
    sd = random_vit_state(dim=64, depth=4, seed=5, layer_scale=True, cls_position=False)
    name = "deit3_small_patch16_224.fb_in22k_ft_in1k"
    hub(f"timm/{name}", "model.safetensors", lambda path: save_file(sd, str(path)))
    net = build_model("vit-pico", 5, [2, 4], img_size=16, seed=9)
    assert load_pretrained(net, f"timm:{name}").path == f"timm:{name}"
    assert element_features_match(net, sd)
    # a repo with only pytorch_model.bin, and a named file in a sub-folder of another repo
    sd2 = random_vit_state(dim=64, depth=4, seed=6)
    hub("timm/vit_old.orig_in21k", "pytorch_model.bin", lambda path: torch.save(sd2, path))
    load_pretrained(net, "timm:vit_old.orig_in21k")
    assert element_features_match(net, sd2)
    hub("someone/vits", "jax/ViT-S_16.npz", lambda path: np.savez(path, **timm_to_npz(sd2)))
    net = build_model("vit-pico", 5, [2, 4], img_size=16, seed=9)
    load_pretrained(net, "hf:someone/vits/jax/ViT-S_16.npz")
    assert element_features_match(net, sd2)


def test_no_network_and_no_cache_says_how_to_fetch_by_hand(hub):
    with pytest.raises(SefarError) as err:
        load_pretrained(net16(), "timm:vit_small_patch16_224.augreg_in21k_ft_in1k")
    assert str(err.value) == (
        "--pretrained timm:vit_small_patch16_224.augreg_in21k_ft_in1k: timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
        f"/model.safetensors is not in the Hugging Face cache ({hub.cache}) and HF_HUB_OFFLINE is set; download "
        "https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k_ft_in1k/resolve/main/model.safetensors by "
        "hand and give --pretrained /path/to/model.safetensors")
    with pytest.raises(SefarError, match=r"give the pretrained tag as timm's hub repos name it, e\.g\. timm:vit_small"):
        load_pretrained(net16(), "timm:vit_small_patch16_224")
    with pytest.raises(SefarError, match=r"give hf:OWNER/REPO or hf:OWNER/REPO/FILE"):
        load_pretrained(net16(), "hf:justaname")


def test_without_huggingface_hub_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    with pytest.raises(SefarError, match=r"needs huggingface_hub: pip install \"sefar-fast\[hub\]\""):
        load_pretrained(net16(), "hf:someone/vits")


def test_from_scratch_init_options_are_off_with_pretrained_unless_set():
    synth = build_config("synth")  # the preset's own backbone, with the init the preset chose for it
    assert synth.model.pretrained == "synth:vit-pico"
    assert (synth.model.pos_embed_std, synth.model.time_embed_std) == (0.5, 0.5)
    scratch = build_config("synth", None, {"model.pretrained": "none"})
    assert scratch.model.pretrained is None and (scratch.model.pos_embed_std, scratch.model.time_embed_std) == (0.5, 0.5)
    loaded = build_config("synth", None, {"model.pretrained": "vit.pth"})
    assert (loaded.model.pos_embed_std, loaded.model.time_embed_std) == (0.02, 0.0)  # timm's init
    kept = build_config("synth", None, {"model.pretrained": "vit.pth"}, ["model.time_embed_std=0.5"])
    assert (kept.model.pos_embed_std, kept.model.time_embed_std) == (0.02, 0.5)
