"""How FLOPs figures are shown: in the largest unit that leaves them at least 1."""

from __future__ import annotations

# FLOPs are shown in the largest of these units that leaves the figure at least 1: a small
# model's were "0.00 MFLOPs".
_UNITS = ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs"))


def flops_unit(value: float | None, largest: float = 1e9) -> tuple[float, str]:
    """The scale and name of the unit ``value`` is shown in, at most ``largest``."""
    for scale, name in _UNITS:
        if scale <= largest and value is not None and abs(value) >= scale:
            return scale, name
    return 1.0, "FLOPs"


def scaled(value, scale: float) -> str:
    """``value`` (None: '?') divided by ``scale``, without its unit."""
    return "?" if value is None else f"{value / scale:.2f}" if scale > 1 else f"{value:.0f}"


def flops_text(value, like=None) -> str:
    """``value`` with its unit ('44.24 MFLOPs'), in the unit that suits ``like`` where given,
    so that figures set side by side share one."""
    scale, name = flops_unit(value if like is None else like)
    return f"{scaled(value, scale)} {name}"
