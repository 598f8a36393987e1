"""seqcirc_utils: shared circuits for sequence continuation — the compendium's utility package.

Modules (one concept each): ``types`` (Component, Circuit, AblationMode), ``models`` (load_model),
``tasks`` (datasets), ``metrics``, ``forward``, ``behaviour``, ``ablation``, ``pruning``,
``patching``, ``attribution``, head-function scores, ``compare``, ``plots``, ``runner``, ``cli``.
"""

__version__ = "0.1.0"
