"""EMA teacher: a frozen copy, the update formula, and a time constant per labeled clip."""

import pytest
import torch

from sefar_fast.train.ema import EmaTeacher, decay_for


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.drop = torch.nn.Dropout(0.5)


def test_create_is_a_frozen_eval_copy():
    student = Net().train()
    teacher = EmaTeacher.create(student)
    assert not teacher.module.training and student.training
    assert all(not p.requires_grad for p in teacher.module.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert teacher.module.fc.weight.data_ptr() != student.fc.weight.data_ptr()
    assert torch.equal(teacher.module.fc.weight, student.fc.weight)


def test_update_averages_params_and_float_buffers_and_copies_the_rest():
    torch.manual_seed(0)
    student = Net()
    teacher = EmaTeacher.create(student)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.running.fill_(3.0)
        student.steps.fill_(7)
    teacher.update(student, 0.9)
    after = teacher.module.state_dict()
    for name in ("fc.weight", "fc.bias", "running"):
        assert torch.allclose(after[name], 0.9 * before[name] + 0.1 * student.state_dict()[name])
    assert after["steps"].item() == 7


def test_decay_per_labeled_clip():
    assert decay_for(1) == 0.9999
    assert decay_for(64) == pytest.approx(0.9999**64)
    with pytest.raises(ValueError):
        decay_for(0)


@pytest.mark.parametrize("batch", [2, 8, 64])
def test_time_constant_does_not_depend_on_batch_size(batch):
    """k steps over `batch` labeled clips move the teacher as far as k * batch single-clip steps."""
    torch.manual_seed(1)
    start = Net()
    target = Net()  # a fixed student the teacher converges to
    big, small = EmaTeacher.create(start), EmaTeacher.create(start)
    steps = 5
    for _ in range(steps):
        big.update(target, decay_for(batch, base=0.99))
    for _ in range(steps * batch):
        small.update(target, decay_for(1, base=0.99))
    w0, w = start.fc.weight, target.fc.weight
    expected = w + (w0 - w) * 0.99 ** (steps * batch)  # closed form for a constant student
    assert torch.allclose(big.module.fc.weight, small.module.fc.weight, atol=1e-6)
    assert torch.allclose(big.module.fc.weight, expected, atol=1e-6)


def test_the_bf16_forward_copy_gives_the_autocast_outputs_of_the_teacher_bit_for_bit():
    """The teacher's forward reads bf16 copies of the weights autocast would cast at every call; its
    outputs under autocast are exactly those of the float32 teacher, before and after updates."""
    from sefar_fast.models import build_model

    student = build_model("vit-test", 5, [2, 4], img_size=16, seed=3).train()
    teacher = EmaTeacher.create(student, torch.bfloat16)
    linear = teacher.forward_module.backbone.blocks[0].attn.qkv
    assert linear.weight.dtype == torch.bfloat16
    assert teacher.module.backbone.blocks[0].attn.qkv.weight.dtype == torch.float32
    assert teacher.forward_module.backbone.norm.weight is teacher.module.backbone.norm.weight  # shared, not copied
    x = torch.randn(3, 6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            fast = teacher.forward_module.features(x)
            plain = teacher.module.features(x)
        assert torch.equal(fast, plain), step
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        teacher.lerp(student, torch.tensor(0.3))
    assert not torch.equal(teacher.module.backbone.blocks[0].attn.qkv.weight, student.backbone.blocks[0].attn.qkv.weight)


def test_a_zero_weight_leaves_the_teacher_exactly_as_it_was():
    torch.manual_seed(2)
    student = Net()
    teacher = EmaTeacher.create(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    teacher.lerp(student, torch.tensor(0.0))
    assert all(torch.equal(v, before[k]) for k, v in teacher.module.state_dict().items() if v.is_floating_point())
