"""Models: the TimeSformer backbone, the SeFAR network (elements + fusion head), pretrained loading, sizes,
and `model_from_config`, the one place a run's config becomes a network."""

from sefar_fast.models.packaged import PACKAGED, check_packaged_arch
from sefar_fast.models.pretrained import PretrainedReport, load_pretrained
from sefar_fast.models.sefar_net import (
    FusionHead,
    SefarNet,
    build_model,
    model_from_config,
)
from sefar_fast.models.sizes import (
    ARCHS,
    FUSION_DIM,
    ArchSpec,
    arch_spec,
    count_flops,
    num_patches,
)
from sefar_fast.models.timesformer import TimeSformer
from sefar_fast.models.vit_files import read_vit_state
from sefar_fast.models.weights import resolve_weights

__all__ = [
    "ARCHS",
    "FUSION_DIM",
    "PACKAGED",
    "ArchSpec",
    "FusionHead",
    "PretrainedReport",
    "SefarNet",
    "TimeSformer",
    "arch_spec",
    "build_model",
    "count_flops",
    "load_pretrained",
    "model_from_config",
    "num_patches",
    "check_packaged_arch",
    "read_vit_state",
    "resolve_weights",
]
