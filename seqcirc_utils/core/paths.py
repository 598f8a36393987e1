"""Where the compendium's own files are (notebooks, book pages), however the package was installed.

An editable install or a source checkout finds them beside the package; an installed (non-editable)
package finds them through ``$SEQCIRC_ROOT`` or the current directory (or one of its parents) when it is
a checkout. Results paths are :func:`seqcirc_utils.core.results.results_dir`'s business.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Names the checkout explicitly (e.g. for an installed package run from elsewhere).
ROOT_ENV = "SEQCIRC_ROOT"
#: What makes a directory a checkout of the compendium.
CHECKOUT_MARKERS = ("notebooks", "_toc.yml")


def is_checkout(path: Path) -> bool:
    """True when ``path`` holds the compendium's notebooks directory and book table of contents."""
    return all((path / marker).exists() for marker in CHECKOUT_MARKERS)


def repo_root() -> Path:
    """The compendium checkout (absolute): ``$SEQCIRC_ROOT``, else the directory above the package when
    it is a checkout (source tree, editable install), else the nearest checkout among the current
    directory and its parents, else the current directory."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    beside_package = Path(__file__).resolve().parents[2]
    if is_checkout(beside_package):
        return beside_package
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if is_checkout(p)), cwd)


#: The package's data files (the GPT-2 tokenizer, the published anchors), installed with the package.
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
