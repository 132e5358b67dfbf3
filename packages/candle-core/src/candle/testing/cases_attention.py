"""Conformance cases of rotary embeddings and scaled dot-product attention.

rope runs against a PyTorch reference written here (torch has no rope op); sdpa against
`torch.nn.functional.scaled_dot_product_attention`. Every case is `fused`: the backend's kernel
is also checked against core's composition.
"""

from __future__ import annotations

from typing import Any

from .spec import In, OpCase

ATTENTION_CASES: list[OpCase] = []

def _is_torch(m: Any) -> bool:
    return m.__name__ == "torch"


def _rope_ref(m: Any, x: Any, cos: Any, sin: Any, interleaved: bool) -> Any:
    """Rope written with the names torch and candle share (the reference for torch)."""
    h = x.shape[-1] // 2
    if interleaved:
        xr = x.reshape(tuple(x.shape[:-1]) + (h, 2))
        x1, x2 = xr[..., 0], xr[..., 1]
        y = m.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
        return y.reshape(tuple(x.shape))
    x1, x2 = x[..., :h], x[..., h:]
    return m.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _rope(interleaved: bool) -> Any:
    def fn(m: Any, x: Any, cos: Any, sin: Any) -> Any:
        if _is_torch(m):
            return _rope_ref(m, x, cos, sin, interleaved)
        from ..ops.attention import rope

        return rope(x, cos, sin, interleaved)

    return fn


def _sdpa(mask: str | None = None, **kw: Any) -> Any:
    """An sdpa case function; `mask` is None, "bool" (a uint8 input, bool in torch) or "float"."""

    def fn(m: Any, q: Any, k: Any, v: Any, *rest: Any) -> Any:
        am = rest[0] if rest else None
        if _is_torch(m):
            if mask == "bool":
                am = am.bool()
            return m.nn.functional.scaled_dot_product_attention(q, k, v, am, **kw)
        from ..ops.attention import scaled_dot_product_attention

        return scaled_dot_product_attention(q, k, v, am, **kw)

    return fn


def _add(name: str, fn: Any, *inputs: In, **kw: Any) -> None:
    ATTENTION_CASES.append(OpCase(name, fn, tuple(inputs), fused=True, **kw))


# --- rope --------------------------------------------------------------------------------------------
for _inter, _tag in ((False, "half"), (True, "interleaved")):
    _add(f"rope_{_tag}", _rope(_inter), In((2, 3, 5, 8)), In((5, 4)), In((5, 4)))
    _add(f"rope_{_tag}_per_batch", _rope(_inter), In((2, 3, 4, 6)), In((2, 1, 4, 3)), In((2, 1, 4, 3)))
    _add(f"rope_{_tag}_3d", _rope(_inter), In((3, 5, 8)), In((5, 4), grad=False), In((5, 4), grad=False))

# --- scaled dot-product attention --------------------------------------------------------------------
Q, K, V = In((2, 3, 4, 8)), In((2, 3, 6, 8)), In((2, 3, 6, 5))
_add("sdpa", _sdpa(), Q, K, V)
_add("sdpa_scale", _sdpa(scale=0.3), Q, K, V)
_add("sdpa_causal", _sdpa(is_causal=True), Q, K, V)
_add("sdpa_causal_square", _sdpa(is_causal=True), In((2, 3, 5, 8)), In((2, 3, 5, 8)), In((2, 3, 5, 8)))
_add("sdpa_causal_more_queries", _sdpa(is_causal=True), In((1, 2, 6, 4)), In((1, 2, 4, 4)), In((1, 2, 4, 3)))
_add("sdpa_bool_mask", _sdpa("bool"), Q, K, V, In((4, 6), "mask"))
_add("sdpa_bool_mask_heads", _sdpa("bool"), Q, K, V, In((2, 1, 4, 6), "mask"))
_add("sdpa_float_mask", _sdpa("float"), Q, K, V, In((2, 3, 4, 6)))
_add("sdpa_float_mask_bcast", _sdpa("float"), Q, K, V, In((1, 6)))
_add("sdpa_gqa", _sdpa(enable_gqa=True), In((2, 6, 3, 8)), In((2, 2, 5, 8)), In((2, 2, 5, 4)))
_add("sdpa_gqa_causal", _sdpa(is_causal=True, enable_gqa=True), In((1, 4, 5, 8)), In((1, 2, 5, 8)),
     In((1, 2, 5, 8)))
_add("sdpa_gqa_mask", _sdpa("float", enable_gqa=True), In((1, 4, 3, 8)), In((1, 1, 5, 8)), In((1, 1, 5, 8)),
     In((4, 3, 5)))
_add("sdpa_3d", _sdpa(), In((3, 4, 8)), In((3, 6, 8)), In((3, 6, 8)))
_add("sdpa_decode", _sdpa(enable_gqa=True), In((1, 4, 1, 8)), In((1, 2, 7, 8)), In((1, 2, 7, 8)))
