"""Head-dropout keep masks from a counter-based RNG (Philox 4x32-10), in plain torch.

The regulation kernel draws its U dropout masks inside the kernel with Triton's
``tl.philox``; this module computes the very same bits with torch integer ops, so
the torch path of `kernels.regulate_head` (CPU, ``SEFAR_KERNELS=torch``, the
``teacher_mc=full`` reruns) and the tests see exactly the masks the kernel drew.

Keying. Every (seed, u, b, feature) has its own counter: Philox with key = the
64-bit seed (low word, high word) and counter (c0, c1, c2, c3) = (feature, b, u, 0);
the first output word r decides. A mask value therefore does not depend on the
batch size, the number of samples or the feature width.

Uniform and keep. ``uniform = (r >> 8) * 2**-24`` is exact in float32 (24 bits on a
2**-24 grid in [0, 1)); the feature is kept when ``uniform >= p`` and kept features
are scaled by ``1 / (1 - p)``, as `nn.Dropout` does.

Arithmetic. uint32 words are held in int64 tensors; the 32 x 32 -> 64 products are
split into 16-bit halves so no intermediate leaves the int64 range.
"""

from __future__ import annotations

import torch

from sefar_fast.errors import SefarError

MASK32 = 0xFFFFFFFF
ROUND_A = 0xD2511F53
ROUND_B = 0xCD9E8D57
KEY_A = 0x9E3779B9
KEY_B = 0xBB67AE85
ROUNDS = 10
UNIFORM_BITS = 24


def _mul_hi_lo(const: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of const * x for a uint32 constant and uint32 values x (int64 tensors)."""
    x_hi, x_lo = x >> 16, x & 0xFFFF
    p_lo = const * x_lo  # < 2**48
    p_hi = const * x_hi  # < 2**48, weight 2**16
    high = (p_hi + (p_lo >> 16)) >> 16
    low = (p_lo + ((p_hi & 0xFFFF) << 16)) & MASK32
    return high, low


def philox4x32(key: tuple[int, int], counter: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of a 2-word key and a 4-word counter (uint32 values in int64 tensors): 4 words."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c).long() & MASK32 for c in counter))
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for _ in range(ROUNDS):
        hi_b, lo_b = _mul_hi_lo(ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + KEY_A) & MASK32, (k1 + KEY_B) & MASK32
    return c0, c1, c2, c3


def philox_words(seed: int, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """First output word (uint32 in int64) with key = the 64-bit `seed` and counter (c0, c1, c2, 0),
    as Triton's ``tl.philox(seed, c0, c1, c2, 0)[0]`` for 32-bit counters."""
    return philox4x32((seed & MASK32, (seed >> 32) & MASK32), (c0, c1, c2, torch.zeros_like(torch.as_tensor(c0))))[0]


def check_seed(seed: int) -> int:
    """Seeds are non-negative and below 2**63 (the kernel takes them as int64)."""
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise SefarError(f"MC-dropout seed {seed} must be in [0, 2**63)")
    return seed


def head_keep_masks(
    seed: int, samples: int, batch: int, dim: int, p: float = 0.5, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Keep masks [U, B, D]: 0 where dropped (probability p), 1/(1-p) where kept; the kernel's stream."""
    seed = check_seed(seed)
    if not 0.0 <= p < 1.0:
        raise SefarError(f"head dropout p={p} must be in [0, 1)")
    u = torch.arange(samples, device=device)[:, None, None]
    b = torch.arange(batch, device=device)[None, :, None]
    d = torch.arange(dim, device=device)[None, None, :]
    words = philox_words(seed, d, b, u)
    uniform = (words >> (32 - UNIFORM_BITS)).to(torch.float32) * (2.0**-UNIFORM_BITS)
    return (uniform >= p).to(dtype) / (1.0 - p)
