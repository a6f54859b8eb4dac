"""The model architectures by name, without torch: `<backbone>_<head>`, the short aliases the paper
and our defaults use, and resolving a name to its canonical form.

The CLI offers and checks `--arch` with these before anything imports torch; pipeline/models
builds the architectures (its BACKBONES builders are keyed by BACKBONE_NAMES, its heads by HEADS).
"""

from __future__ import annotations

DEFAULT_ARCH = "motion3d_gru"
PAPER_ARCH = "cnn3d_gru"
BACKBONE_NAMES = ("motion3d", "cnn3d", "cnn3dbn", "cnn3dbnmix", "cnn3dgn", "cnn2d")
# head name -> recurrent layers in order, as (cell, units); the paper's table names them this way.
HEADS: dict[str, tuple[tuple[str, int], ...]] = {
    "none": (),
    "gru32": (("gru", 32),),
    "gru128": (("gru", 128),),
    "lstm32": (("lstm", 32),),
    "lstm128": (("lstm", 128),),
    "lstm32_gru32": (("lstm", 32), ("gru", 32)),
    "gru32_lstm32": (("gru", 32), ("lstm", 32)),
    "lstm128_gru128": (("lstm", 128), ("gru", 128)),
    "gru128_lstm128": (("gru", 128), ("lstm", 128)),
}
# Short names used by the paper and by our CLI defaults.
ALIASES = {"cnn3d_gru": "cnn3d_gru128", "cnn3d_lstm": "cnn3d_lstm128", "cnn3d": "cnn3d_none",
           "cnn3dbn_gru": "cnn3dbn_gru128", "cnn3dgn_gru": "cnn3dgn_gru128",
           "cnn3dbnmix_gru": "cnn3dbnmix_gru128", "motion3d_gru": "motion3d_gru128"}


def list_models() -> list[str]:
    """Every canonical architecture name, `<backbone>_<head>`."""
    return [f"{backbone}_{head}" for backbone in BACKBONE_NAMES for head in HEADS]


def canonical_arch(arch: str) -> str:
    """The canonical name for `arch` (resolving aliases); ValueError naming the choices if unknown."""
    name = ALIASES.get(arch, arch)
    if name not in list_models():
        choices = ", ".join(list_models() + sorted(ALIASES))
        raise ValueError(f"unknown architecture '{arch}'; choose one of: {choices}")
    return name
