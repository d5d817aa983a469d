"""`bench_data` runs end to end on the CPU and counts what it timed (no timing assertions)."""

import pytest

from sefar_fast.data.bench import bench_data, check_dali_gpu, synthetic_store
from sefar_fast.data.pipeline import dali_available
from sefar_fast.data.store import ClipStore


def test_bench_data_on_a_store(tmp_path):
    synthetic_store(tmp_path / "s", clips=6, frames=8, size=(32, 40))
    result = bench_data(tmp_path / "s", device="cpu", batches=4, batch_size=4, frame_size=(16, 16), views=2,
                        workers=1, warmup=1)
    assert result["batches"] == 4 and result["frames_per_clip"] == 8 and result["views"] == 2
    assert result["clips_per_s"] > 0 and result["frames_per_s"] == pytest.approx(result["clips_per_s"] * 16)
    assert result["store"] == str(tmp_path / "s") and result["backend"] in ("dali", "pil")
    store = ClipStore.open(tmp_path / "s")
    assert len(store.records) == 6 and store.records[0].num_frames == 8


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_dali_check_runs_on_the_cpu():
    # the GPU check compares DALI on a device with PIL on the host; on the CPU both are libjpeg-based
    result = check_dali_gpu("cpu", batch_size=2, frame_size=(128, 128))
    assert result["same_shape"] and result["ok"] and result["max_abs_diff"] <= 3
