"""Names of the precisions and memory layouts an inference measurement runs at,
`BASE[+cl][+fold][+compile]` (torch-free, so that params can be checked without importing torch;
qoeflow/models/harness.py runs them).

BASE is `fp32`, `fp16` or `bf16` (the model's weights cast to that type) or `autocast-fp16` /
`autocast-bf16` (fp32 weights, operations under `torch.autocast`); `+cl` runs the model and its inputs
in `channels_last` layout, `+fold` with every batch norm that follows a convolution or linear layer folded
into it (in fp32, before any cast), `+compile` through `torch.compile`.
"""

from __future__ import annotations

BASES = ("fp32", "fp16", "bf16", "autocast-fp16", "autocast-bf16")
FLAGS = ("cl", "fold", "compile")


def parse(name: str) -> tuple[str, frozenset[str]]:
    """(BASE, flags) of a precision name; ValueError for anything else."""
    base, *flags = str(name).split("+")
    if base not in BASES or len(set(flags)) != len(flags) or not set(flags) <= set(FLAGS):
        raise ValueError(f"unknown precision {name!r}: expected BASE[+cl][+fold][+compile] with BASE one of "
                         f"{', '.join(BASES)}")
    return base, frozenset(flags)
