"""F1's Understanding -> Generation -> Action layout (DESIGN.md s2).

Order and blocks of the joint sequence:

    prefix     (understanding)  images then instruction: one bidirectional block
    history    (generation)     aggregated past frames: joins the prefix block (official code)
                                or starts its own block (``history_in_prefix=False``)
    foresight  (generation)     SOS + inputs of scales 2..K: one block per scale, s_k^2 tokens each
    state      (action)         its own block
    actions    (action)         one bidirectional block

Understanding never sees generation or action tokens (except merged history, see below);
generation never sees action tokens; actions see everything valid before them.
"""

import itertools

from attention.layout import Layout, LayoutError, Segment

UNDERSTANDING, GENERATION, ACTION = "understanding", "generation", "action"
"""Expert names used by the UGA layout (the MoT's expert specs use the same names)."""


def uga_layout(
    prefix: int,
    *,
    history: int = 0,
    scales: tuple[int, ...] = (),
    state: int = 1,
    actions: int = 0,
    history_in_prefix: bool = True,
) -> Layout:
    """F1's layout from token counts.

    prefix: image + instruction tokens (> 0).
    history: aggregated history tokens (0 for none).
    scales: side lengths of the foresight scales, e.g. (1, 2, 3, 4); scale k contributes s_k^2
        input tokens (the SOS stands in for scale 1, so scales[0] must be 1). Empty: no foresight
        (the No-Gen ablation).
    state: state tokens (0 for none); actions: action chunk length (0 for none).
    history_in_prefix: merge history into the prefix block as the official F1 code does, so
        prefix tokens also attend to history; False gives history a block of its own.

    Zero-length parts are left out of the layout (``"history" in layout`` is then False).

    Example:
        >>> layout = uga_layout(prefix=8, history=4, scales=(1, 2, 3, 4), state=1, actions=4)
        >>> layout.n, layout.segment("foresight").blocks
        (47, (1, 4, 9, 16))
    """
    for name, value in (
        ("prefix", prefix),
        ("history", history),
        ("state", state),
        ("actions", actions),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise LayoutError(f"uga_layout {name}: expected a non-negative int, got {value!r}")
    if prefix == 0:
        raise LayoutError("uga_layout prefix: expected at least one prefix token, got 0")
    scales = tuple(scales)
    if any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in scales):
        raise LayoutError(f"uga_layout scales: expected positive ints, got {scales}")
    if scales and scales[0] != 1:
        raise LayoutError(
            f"uga_layout scales: the first scale is the 1x1 SOS scale, expected scales[0] == 1, "
            f"got {scales}"
        )
    if any(b <= a for a, b in itertools.pairwise(scales)):
        raise LayoutError(f"uga_layout scales: expected strictly increasing sizes, got {scales}")

    segments = [Segment("prefix", UNDERSTANDING, (prefix,))]
    if history:
        segments.append(
            Segment("history", GENERATION, (history,), joins_previous=history_in_prefix)
        )
    if scales:
        segments.append(Segment("foresight", GENERATION, tuple(s * s for s in scales)))
    if state:
        segments.append(Segment("state", ACTION, (state,)))
    if actions:
        segments.append(Segment("actions", ACTION, (actions,)))
    return Layout(tuple(segments))
