"""The synth backbone: its pose frames, its targets, `sefar pretrain-synth`, and the packaged file the
synth preset trains from (`--pretrained synth:vit-pico`)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sefar_fast.config import build_config
from sefar_fast.data.synth import SYNTH_VERSION, figure_points, render, synth_params
from sefar_fast.data.synth_poses import pose_frames
from sefar_fast.errors import SefarError
from sefar_fast.models import build_model, check_packaged_arch, load_pretrained, resolve_weights
from sefar_fast.train.checks import preflight
from sefar_fast.train.pretrain import DEPTH_SCALE, PoseNet, PretrainSettings, pretrain_synth, targets

LUMA = np.array([0.299, 0.587, 0.114])


def dark_at(frames: np.ndarray, points: np.ndarray, which: list[int]) -> float:
    """Fraction of (frame, point) pairs whose pixel under the point is dark: the figure is always darker
    than the bright background (luma 0.68-0.88), its body and legs much darker (about 0.15-0.3)."""
    hits = []
    for frame, pts in zip(frames, points):
        for j in which:
            x, y = int(np.floor(pts[j, 0])), int(np.floor(pts[j, 1]))
            if 0 <= x < frame.shape[1] and 0 <= y < frame.shape[0]:
                hits.append(frame[y, x] @ LUMA < 0.5 * 255)
    return float(np.mean(hits))


BODY = [0, 1, 9, 13]  # hip, neck, knees: inside the torso and thigh capsules


def test_figure_points_lie_on_the_rendered_figure():
    frames, points = [], []
    for label in range(0, 20, 3):
        params = synth_params(label, np.random.default_rng([SYNTH_VERSION, 7, label]), 64)
        frames.append(render(params))
        points.append(figure_points(params))
    frames, points = np.concatenate(frames), np.concatenate(points)
    assert dark_at(frames, points, BODY) > 0.9
    mirrored = points.copy()
    mirrored[..., 0] = 64 - mirrored[..., 0]  # the same points mirrored: mostly on the background
    assert dark_at(frames, mirrored, BODY) < 0.5


def test_pose_frames_are_resized_like_the_loader_with_their_points():
    data = pose_frames(seed=0, clips=12, frames_per_clip=3, frame_size=(40, 40))
    assert data.frames.shape == (36, 40, 40, 3) and data.frames.dtype == np.uint8
    assert data.points.shape == (36, 16, 3)
    assert dark_at(data.frames, data.points, BODY) > 0.85
    again = pose_frames(seed=0, clips=4, frames_per_clip=3, frame_size=(40, 40), first_clip=8)
    assert np.array_equal(again.frames, data.frames[24:]) and np.array_equal(again.points, data.points[24:])
    other = pose_frames(seed=1, clips=4, frames_per_clip=3, frame_size=(40, 40))
    assert not np.array_equal(other.frames, data.frames[:12])
    with pytest.raises(SefarError):
        pose_frames(seed=0, clips=0, frames_per_clip=3, frame_size=(40, 40))


def test_pose_frames_are_not_clips_of_the_data_set():
    """The pretraining clips come from their own random stream: none is a clip of the synth set."""
    data = pose_frames(seed=0, clips=20, frames_per_clip=1, frame_size=(64, 64))
    from sefar_fast.data.synth import synth_clips

    dataset = {frame.tobytes() for clip in synth_clips(seed=0, clips_per_class=2) for frame in clip.frames}
    assert not any(frame.tobytes() in dataset for frame in data.frames)


def test_targets_by_hand():
    # a 20-pixel box at (y0, x0) = (2, 4): its centre (14, 12) is (0, 0), its left edge x = -1
    points = torch.tensor([[[14.0, 12.0, 0.1], [4.0, 2.0, -0.2], [24.0, 22.0, 0.0]]])
    box = torch.tensor([[2.0, 4.0, 20.0, 20.0]])
    plain = targets(points, box, torch.tensor([False])).view(3, 3)
    assert torch.allclose(plain, torch.tensor([[0.0, 0.0, 0.1 / DEPTH_SCALE], [-1.0, -1.0, -0.2 / DEPTH_SCALE],
                                               [1.0, 1.0, 0.0]]))
    flipped = targets(points, box, torch.tensor([True])).view(3, 3)
    assert torch.allclose(flipped[:, 0], -plain[:, 0]) and torch.equal(flipped[:, 1:], plain[:, 1:])


def test_the_pose_net_saves_a_plain_vit_that_loads_like_imagenet_weights(tmp_path):
    net = PoseNet("vit-test", 32)
    net.reset_parameters(torch.Generator().manual_seed(0))
    frozen = {n for n, p in net.backbone.named_parameters() if not p.requires_grad}
    assert frozen and all(".temporal_" in n for n in frozen)
    assert all(torch.count_nonzero(p) == 0 for n, p in net.backbone.named_parameters() if ".temporal_fc." in n)
    state = net.vit_state()
    assert not any("temporal" in k for k in state) and "pos_embed" in state and "blocks.0.attn.qkv.weight" in state
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "vit.safetensors"))
    model = build_model("vit-test", 5, [2, 2, 4], img_size=32)
    report = load_pretrained(model, tmp_path / "vit.safetensors")
    assert report.dropped == [] and report.kept_init  # nothing in the file is left out
    assert all(".temporal_fc." in k or "time_embed" in k or not k.startswith("backbone.") for k in report.kept_init)
    blocks = model.backbone.blocks[0]
    assert torch.equal(blocks.attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert torch.equal(blocks.temporal_attn.qkv.weight, state["blocks.0.attn.qkv.weight"])  # spatial copied to time


def test_pretrain_synth_writes_the_backbone_with_its_provenance(tmp_path):
    settings = PretrainSettings(arch="vit-test", seed=3, steps=3, batch_size=8, clips=4, frames_per_clip=2)
    summary = pretrain_synth(tmp_path / "a.safetensors", settings, command="sefar pretrain-synth --test")
    again = pretrain_synth(tmp_path / "b.safetensors", settings, command="sefar pretrain-synth --test")
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as a, safe_open(str(tmp_path / "b.safetensors"), "pt") as b:
        meta = json.loads(a.metadata()["sefar_pretrain"])
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # bit for bit
    assert meta["command"] == "sefar pretrain-synth --test" and meta["settings"]["seed"] == 3
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", meta["commit"])
    assert summary["held_out_point_error_px"] == meta["held_out_point_error_px"] > 0
    with pytest.raises(SefarError, match="safetensors"):
        pretrain_synth(tmp_path / "c.pt", settings, command="x")


# ----------------------------------------------------------------------------- the packaged backbone


def test_packaged_names_resolve_to_files_and_other_names_pass_through(tmp_path):
    path = resolve_weights("synth:vit-pico")
    assert path.is_file() and path.suffix == ".safetensors" and path.stat().st_size <= 2 * 2**20
    local = tmp_path / "vit.npz"
    local.write_bytes(b"")
    assert resolve_weights(str(local)) == local
    with pytest.raises(SefarError, match="no such packaged backbone; packaged: synth:vit-pico"):
        resolve_weights("synth:vit-s")
    check_packaged_arch("synth:vit-pico", "vit-pico")
    check_packaged_arch(str(local), "vit-s")
    with pytest.raises(SefarError, match="is a vit-pico backbone but the model is vit-test"):
        check_packaged_arch("synth:vit-pico", "vit-test")


def test_the_packaged_backbone_states_how_it_was_made():
    with safe_open(str(resolve_weights("synth:vit-pico")), "pt") as f:
        meta = json.loads(f.metadata()["sefar_pretrain"])
        names = set(f.keys())
    assert meta["command"].startswith("sefar pretrain-synth") and meta["arch"] == "vit-pico"
    assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"])  # made from a committed tree
    assert isinstance(meta["settings"]["seed"], int)
    model = build_model("vit-pico", 20, [2, 2, 4], img_size=32)
    assert names == {k.removeprefix("backbone.") for k in model.state_dict()
                     if k.startswith("backbone.") and ".temporal_" not in k}


def test_the_synth_preset_trains_from_the_packaged_backbone():
    cfg = build_config("synth")
    assert cfg.model.pretrained == "synth:vit-pico" and cfg.model.arch == "vit-pico"
    preflight(cfg)
    other = build_config("synth", None, {"model.arch": "vit-test"})
    with pytest.raises(SefarError, match="--pretrained none to train vit-test from scratch"):
        preflight(other)
    assert build_config("synth", None, {"model.arch": "vit-test", "model.pretrained": "none"}).model.pretrained is None
    assert build_config("synth", None, {}, ["model.pretrained=none"]).model.pretrained is None
