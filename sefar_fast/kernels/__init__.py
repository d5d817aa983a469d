"""Triton kernels for the training step, each with a torch reference behind one dispatcher.

    build_views          crop / flip / frame order / normalise / channel scale  (ops.views.build_views)
    build_strong_mixed   strong views + tube-mixed views in one pass             (build_views + mix_views)
    regulate_head        U head-dropout samples -> Adaptive Regulation           (ops.regulation)
    head_keep_masks      the kernel's dropout masks, computed with torch
    element_attention    temporal attention within each temporal element         (ops.attention.element_attention)

``SEFAR_KERNELS=auto|torch|triton`` chooses the implementation (see `dispatch`).
Importing this package does not import triton.
"""

from sefar_fast.kernels.dispatch import (
    build_strong_mixed,
    build_views,
    element_attention,
    kernel_backend,
    regulate_head,
)
from sefar_fast.kernels.philox import head_keep_masks

__all__ = ["build_views", "build_strong_mixed", "regulate_head", "head_keep_masks", "element_attention",
           "kernel_backend"]
