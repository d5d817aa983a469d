"""View parameters and the torch reference view builder: geometry, perturbations, channel drop, tube mix."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sefar_fast.errors import SefarError
from sefar_fast.ops.views import (
    PERTURBS,
    ViewParams,
    build_views,
    draw_view_params,
    eval_view_params,
    frame_orders,
    mix_views,
)

ELEMENTS = [2, 2, 4]
RANGES = [(0, 2), (2, 2), (4, 4)]
RAW = dict(mean=[0.0, 0.0, 0.0], std=[1 / 255] * 3)  # normalisation that leaves raw 0..255 values


def params(box, flip=False, order=None, scale=None, out_size=2):
    b = len(box)
    return ViewParams(
        box=torch.tensor(box, dtype=torch.float32),
        flip=torch.tensor([flip] * b),
        order=order,
        channel_scale=torch.ones(b, 3) if scale is None else scale,
        out_size=out_size,
    )


def close(a, b):
    """Values equal up to the float error of normalising by 1/255 and back."""
    return torch.allclose(a, torch.as_tensor(b, dtype=torch.float32), atol=1e-4, rtol=0)


def ramp_frames():
    """One 4x4 frame: value 10*y + x in channel 0, 100 + 10*y + x in channel 1, 200 - ... in channel 2."""
    y, x = np.mgrid[0:4, 0:4]
    img = np.stack([10 * y + x, 100 + 10 * y + x, 200 - 10 * y - x], axis=-1).astype(np.uint8)
    return torch.from_numpy(img)[None, None]  # [1, 1, 4, 4, 3]


# ----------------------------------------------------------------------------- geometry


def test_crop_of_a_ramp_by_hand():
    f = ramp_frames()
    # Whole frame at its own size: the identity.
    out = build_views(f, params([[0, 0, 4, 4]], out_size=4), **RAW)
    assert close(out[0, 0].permute(1, 2, 0), f[0, 0])
    # Box (1,1) of side 2 at size 2: pixel centres land exactly on source pixels 1 and 2.
    out = build_views(f, params([[1, 1, 2, 2]]), **RAW)[0, 0, 0]
    assert close(out, [[11, 12], [21, 22]])
    # Whole frame at size 2: samples at 0.5 and 2.5, the ramp's midpoints.
    out = build_views(f, params([[0, 0, 4, 4]]), **RAW)[0, 0, 0]
    assert close(out, [[5.5, 7.5], [25.5, 27.5]])
    # Upsampling box (0,0) side 2 to size 4: samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25.
    out = build_views(f, params([[0, 0, 2, 2]], out_size=4), **RAW)[0, 0, 0]
    xs = torch.tensor([0.0, 0.25, 0.75, 1.25])
    assert close(out, 10 * xs[:, None] + xs[None, :])
    # Flip mirrors the crop left-right; the other channels follow the same geometry.
    out = build_views(f, params([[1, 1, 2, 2]], flip=True), **RAW)[0, 0]
    assert close(out[0], [[12, 11], [22, 21]])
    assert close(out[2], [[188, 189], [178, 179]])


def test_bilinear_matches_grid_sample_align_corners_false():
    gen = torch.Generator().manual_seed(0)
    b, k, h, w, s = 3, 2, 9, 13, 5
    frames = torch.randint(0, 256, (b, k, h, w, 3), generator=gen, dtype=torch.uint8)
    rng = np.random.default_rng(0)
    p = draw_view_params(b, [1, 1], (h, w), s, "weak", rng, scale_range=(4, 9), ref_short=7, flip=True)
    p.flip = torch.tensor([True, False, True])
    out = build_views(frames, p, **RAW)
    # Independent: grid_sample on each frame with normalised coordinates of the sample positions.
    y0, x0, bh, bw = p.box.unbind(1)
    i = torch.arange(s, dtype=torch.float32)
    ys = y0[:, None] + (i + 0.5) * bh[:, None] / s - 0.5
    xs = x0[:, None] + (i + 0.5) * bw[:, None] / s - 0.5
    xs = torch.where(p.flip[:, None], xs.flip(1), xs)
    gy, gx = (2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [B, S, S, 2]
    for kk in range(k):
        img = frames[:, kk].permute(0, 3, 1, 2).float()
        ref = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        assert torch.allclose(out[:, kk], ref, atol=1e-3)


def test_normalisation_and_channel_scale():
    f = ramp_frames()
    scale = torch.tensor([[0.0, 1.25, 1.0]])
    out = build_views(f, params([[1, 1, 2, 2]], scale=scale), mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 0.2])[0, 0]
    raw = torch.tensor([[11.0, 12], [21, 22]])
    assert torch.equal(out[0], torch.zeros(2, 2))
    assert torch.allclose(out[1], 1.25 * ((raw + 100) / 255 - 0.2) / 0.25)
    assert torch.allclose(out[2], ((200 - raw) / 255 - 0.3) / 0.2)
    half = build_views(f, params([[1, 1, 2, 2]]), mean=[0.5] * 3, std=[0.5] * 3, out_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == (1, 1, 3, 2, 2)


def test_train_boxes_follow_the_jitter_and_stay_inside():
    rng = np.random.default_rng(1)
    p = draw_view_params(2000, ELEMENTS, (256, 340), 224, "weak", rng)
    y0, x0, h, w = p.box.double().unbind(1)
    assert torch.equal(h, w)
    # s ~ U[256, 320] -> side 224 * 256 / s in [179.2, 224], with 1/side uniform.
    assert h.min() >= 224 * 256 / 320 - 1e-3 and h.max() <= 224 + 1e-3
    s = 224 * 256 / h
    assert abs(s.mean().item() - 288) < 1.5
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 256 + 1e-3).all() and (x0 + w <= 340 + 1e-3).all()
    assert (x0 / (340 - w)).mean().item() == pytest.approx(0.5, abs=0.03)
    # Frames smaller than the box: the box is clamped to the short side.
    small = draw_view_params(10, ELEMENTS, (100, 120), 224, "weak", rng)
    assert torch.allclose(small.box[:, 2], torch.full((10,), 100.0))


def test_weak_and_strong_parameters():
    rng = np.random.default_rng(2)
    weak = draw_view_params(500, ELEMENTS, (64, 80), 56, "weak", rng)
    assert not weak.flip.any()
    assert torch.equal(weak.order, torch.arange(8).expand(500, 8))
    assert torch.equal(weak.channel_scale, torch.ones(500, 3))
    labeled = draw_view_params(2000, ELEMENTS, (64, 80), 56, "weak", rng, flip=True)
    assert labeled.flip.float().mean().item() == pytest.approx(0.5, abs=0.04)
    strong = draw_view_params(4000, ELEMENTS, (64, 80), 56, "strong", rng, channel_drop=0.2)
    values = set(strong.channel_scale.unique().tolist())
    assert values == {0.0, 1.25}
    assert (strong.channel_scale == 0).float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert strong.flip.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(strong.order[0], torch.tensor([1, 0, 3, 2, 4, 5, 6, 7]))  # mod: fine elements reversed
    with pytest.raises(SefarError):
        draw_view_params(2, ELEMENTS, (64, 80), 56, "medium", rng)


def test_eval_views_cover_start_centre_end_of_the_long_side():
    wide = [eval_view_params(2, (4, 10), 8, s, 3).box[0].tolist() for s in range(3)]
    assert wide == [[0, 0, 4, 4], [0, 3, 4, 4], [0, 6, 4, 4]]
    tall = [eval_view_params(1, (10, 4), 8, s, 3).box[0].tolist() for s in range(3)]
    assert tall == [[0, 0, 4, 4], [3, 0, 4, 4], [6, 0, 4, 4]]
    assert eval_view_params(1, (4, 10), 8, 0, 1).box[0].tolist() == [0, 3, 4, 4]
    p = eval_view_params(3, (4, 10), 8, 1, 3)
    assert p.out_size == 8 and p.order is None and not p.flip.any() and torch.equal(p.channel_scale, torch.ones(3, 3))
    with pytest.raises(SefarError):
        eval_view_params(1, (4, 10), 8, 3, 3)


# ----------------------------------------------------------------------------- perturbations


def labelled_frames(b, k, h=6, w=6):
    """Frames whose pixels say which (sample, frame) they are: value 10 * frame + sample."""
    vals = (10 * torch.arange(k)[None, :] + torch.arange(b)[:, None]).to(torch.uint8)
    return vals[:, :, None, None, None].expand(b, k, h, w, 3).contiguous()


def test_mod_reverses_only_fine_elements_and_keeps_frames_intact():
    rng = np.random.default_rng(3)
    b = 6
    strong = draw_view_params(b, ELEMENTS, (6, 6), 4, "strong", rng, perturb="mod", channel_drop=0.0)
    frames = torch.randint(0, 256, (b, 8, 6, 6, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    same_geometry = ViewParams(strong.box, strong.flip, None, strong.channel_scale, strong.out_size)
    out = build_views(frames, strong, **RAW)
    ref = build_views(frames, same_geometry, **RAW)
    expected = [1, 0, 3, 2, 4, 5, 6, 7]
    assert torch.equal(out, ref[:, expected])
    # Context frames are pixel-identical to the unperturbed view; fine frames are swapped copies.
    assert torch.equal(out[:, 4:], ref[:, 4:])
    assert not torch.equal(out[:, :4], ref[:, :4])


COMBOS = [[2, 2, 4], [2, 4], [2, 2, 2, 4], [2, 2, 6], [2, 2, 8], [3, 5], [8]]
# The slots of each combo's clip layout, by hand (grouped by element, context last): the clip's time order.
LAYOUT_SLOTS = {(2, 2, 4): [3, 7, 1, 5, 0, 2, 4, 6], (2, 4): [1, 4, 0, 2, 3, 5],
                (2, 2, 2, 4): [4, 9, 2, 7, 1, 6, 0, 3, 5, 8], (2, 2, 6): [3, 8, 1, 6, 0, 2, 4, 5, 7, 9],
                (2, 2, 8): [4, 10, 1, 7, 0, 2, 3, 5, 6, 8, 9, 11], (3, 5): [1, 3, 6, 0, 2, 4, 5, 7],
                (8,): list(range(8))}


def check_sequence(op, shown, ident):
    """Rows `shown` [N, n] (what each of n places shows, in sequence order) against operation `op`."""
    n = len(ident)
    if op == "reverse":
        assert (shown == ident[::-1]).all()
    elif op == "t-half":
        assert (shown == np.r_[ident[n // 2 :], ident[: n // 2]]).all()
    elif op in ("shuffle", "local-shuffle"):
        assert (np.sort(shown, axis=1) == ident).all()  # permutations
        if op == "local-shuffle":
            assert (np.abs(shown - ident) <= 1).all() and (shown != ident).any(axis=1).all()
        else:  # uniform over all n! orders: small sequences show every one of them
            distinct = {tuple(r) for r in shown}
            assert len(distinct) == math.factorial(n) if n <= 4 else len(distinct) > 100
    else:  # warp and t-drop: monotone resamplings with repeats, never the identity
        assert (np.diff(shown, axis=1) >= 0).all()
        assert (shown != ident).any(axis=1).all()
        if op == "t-drop":
            assert (shown[:, 0] == 0).all()
            # each place shows itself or what the place before it shows
            assert ((shown[:, 1:] == ident[1:]) | (shown[:, 1:] == shown[:, :-1])).all()


@pytest.mark.parametrize("elements", COMBOS)
@pytest.mark.parametrize("perturb", [p for p in PERTURBS if p in ("mod", "none") or p.startswith("element-")])
def test_element_perturbations_stay_inside_their_elements(elements, perturb):
    rng = np.random.default_rng(4)
    orders = frame_orders(300, elements, perturb, rng)
    starts = np.cumsum([0, *elements[:-1]])
    for e, (start, n) in enumerate(zip(starts, elements)):
        block = orders[:, start : start + n] - start
        assert block.min() >= 0 and block.max() < n
        ident = np.arange(n)
        if perturb == "none" or (perturb == "mod" and e == len(elements) - 1):
            assert (block == ident).all()
        else:
            check_sequence("reverse" if perturb == "mod" else perturb.removeprefix("element-"), block, ident)


VIDEO_OPS = {"all-reverse": "reverse", "all-shuffle": "shuffle", "local-shuffle": "local-shuffle", "warp": "warp",
             "t-drop": "t-drop", "t-half": "t-half"}


@pytest.mark.parametrize("elements", COMBOS)
@pytest.mark.parametrize("perturb", list(VIDEO_OPS))
def test_video_perturbations_act_on_the_whole_clip_in_time_order(elements, perturb):
    """Read in time (slot) order, the view shows the operation applied to the clip's K frames."""
    rng = np.random.default_rng(5)
    orders = frame_orders(300, elements, perturb, rng)
    slots = np.array(LAYOUT_SLOTS[tuple(elements)])
    shown = slots[orders]  # the slot each position shows
    in_time = np.argsort(slots)
    check_sequence(VIDEO_OPS[perturb], shown[:, in_time], np.arange(sum(elements)))


def test_all_reverse_moves_frames_across_elements_by_hand():
    # [2, 2, 4]: positions hold slots 3, 7 | 1, 5 | 0, 2, 4, 6. Reversed, slot s shows slot 7 - s, so the
    # context (slots 0, 2, 4, 6) shows slots 7, 5, 3, 1: the fine elements' frames, latest first.
    order = frame_orders(1, ELEMENTS, "all-reverse", np.random.default_rng(0))[0]
    assert order.tolist() == [6, 4, 7, 5, 1, 3, 0, 2]
    frames = labelled_frames(1, 8)
    out = build_views(frames, params([[0, 0, 6, 6]], order=torch.from_numpy(order[None]), out_size=6), **RAW)
    shown = (out[:, :, 0, 0, 0] / 10).round().long()[0]  # frame value 10 * position
    assert shown.tolist() == order.tolist()
    # t-half shows slot s + 4 (mod 8): on [2, 2, 4] that keeps every frame in its element (fine elements
    # reversed, the context's halves swapped)
    assert frame_orders(1, ELEMENTS, "t-half", np.random.default_rng(0))[0].tolist() == [1, 0, 3, 2, 6, 7, 4, 5]


def test_random_perturbations_vary_between_samples():
    rng = np.random.default_rng(5)
    for perturb in ("all-shuffle", "warp", "t-drop", "element-shuffle", "element-local-shuffle", "element-warp",
                    "element-t-drop"):
        orders = frame_orders(200, [4, 8], perturb, rng)
        assert len({tuple(r) for r in orders}) > 3, perturb
    assert len({tuple(r) for r in frame_orders(200, [4, 8], "local-shuffle", rng)}) == 2  # the two offsets
    with pytest.raises(SefarError):
        frame_orders(2, ELEMENTS, "reverse", rng)


# ----------------------------------------------------------------------------- tube mixing


def test_mix_takes_own_patches_where_the_tube_is_set_and_the_partner_elsewhere():
    b, patch, grid = 3, 2, (2, 3)
    s_h, s_w = grid[0] * patch, grid[1] * patch
    dropped = torch.arange(b, dtype=torch.float32)[:, None, None, None, None].expand(b, 8, 3, s_h, s_w)
    clean = 100 + dropped
    masks = torch.tensor([[[1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 1, 1]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    partner = torch.tensor([2, 0, 1])
    out = mix_views(dropped, clean, masks, partner, ELEMENTS, patch)
    for bb in range(b):
        for e, (start, n) in enumerate(RANGES):
            pix = masks[e].repeat_interleave(patch, 0).repeat_interleave(patch, 1)
            expect = torch.where(pix, torch.tensor(float(bb)), torch.tensor(100.0 + partner[bb].item()))
            for kk in range(start, start + n):
                assert torch.equal(out[bb, kk, 0], expect)
                assert torch.equal(out[bb, kk, 2], expect)


def test_pixel_mix_equals_token_mix_after_a_conv_patch_embedding():
    torch.manual_seed(0)
    b, k, patch, grid = 4, 8, 4, (3, 2)
    s_h, s_w = grid[0] * patch, grid[1] * patch
    dropped = torch.randn(b, k, 3, s_h, s_w)
    clean = torch.randn(b, k, 3, s_h, s_w)
    masks = torch.rand(3, *grid, generator=torch.Generator().manual_seed(1)) < 0.5
    partner = torch.tensor([1, 3, 0, 2])
    embed = torch.nn.Conv2d(3, 16, kernel_size=patch, stride=patch)
    mixed = mix_views(dropped, clean, masks, partner, ELEMENTS, patch)
    with torch.no_grad():
        tokens_mixed = embed(mixed.flatten(0, 1)).unflatten(0, (b, k))  # [B, K, D, Hp, Wp]
        tok_own = embed(dropped.flatten(0, 1)).unflatten(0, (b, k))
        tok_partner = embed(clean.flatten(0, 1)).unflatten(0, (b, k))[partner]
    per_frame = torch.cat([masks[e].expand(n, *grid) for e, (_, n) in enumerate(RANGES)])  # [K, Hp, Wp]
    token_mix = torch.where(per_frame[None, :, None], tok_own, tok_partner)
    assert torch.allclose(tokens_mixed, token_mix, atol=1e-5)


def test_mix_refuses_a_crop_that_is_not_a_whole_patch_grid():
    x = torch.zeros(1, 8, 3, 6, 6)
    with pytest.raises(SefarError):
        mix_views(x, x, torch.ones(3, 2, 2, dtype=torch.bool), torch.tensor([0]), ELEMENTS, 4)
