"""A model bundle as a service reads it: the file of its role, checked, and the backbone it is for.

A bundle (`geoloc bundle build`, training/bundle.py) is one folder holding everything a deployment
needs for one backbone; bundle.json names its backbone (name, Triton model, feature width,
preprocessing) and every file's role and sha256. A service given a bundle loads its own file from
it and refuses to start, saying why, when that file changed since the bundle was built or when
what it loaded was made for another backbone or width than the bundle's: a mounted bundle is then
checked by the services that use it, not only by the command that built it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from geoloc.artifacts.files import file_sha256

BUNDLE_FILE = "bundle.json"
FORMAT = "geoloc-bundle/1"


class BundleError(RuntimeError):
    """The bundle is missing, malformed, changed since it was built, or for another backbone."""


def bundle_hashes(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file of a bundle folder but bundle.json itself."""
    return {
        str(path.relative_to(root)): file_sha256(path)
        for path in sorted(Path(root).rglob("*"))
        if path.is_file() and path.name != BUNDLE_FILE and "__pycache__" not in path.parts
    }


@dataclass(frozen=True)
class Bundle:
    root: Path
    version: str
    backbone: dict  # name, model, dimension, preprocessing, model_sha256
    files: dict[str, str]  # role -> path relative to root
    sha256: dict[str, str]  # path relative to root -> sha256, as built

    @classmethod
    def read(cls, root: Path) -> Bundle:
        path = Path(root) / BUNDLE_FILE
        if not path.is_file():
            raise BundleError(f"{root}: not a model bundle (no {BUNDLE_FILE}; `geoloc bundle build` makes one)")
        try:
            record = json.loads(path.read_text())
            if record.get("format") != FORMAT:
                raise BundleError(f"{path}: format {record.get('format')!r}, not {FORMAT!r}")
            bundle = cls(Path(root), record["version"], record["backbone"], record["files"], record["sha256"])
        except (ValueError, KeyError, TypeError) as error:
            raise BundleError(f"{path}: not a readable bundle record ({error})") from None
        # Which models a pod serves is in its log: the version is a hash of every file.
        structlog.get_logger("geoloc.bundle").info(
            "bundle_read", bundle=str(root), version=bundle.version, backbone=bundle.backbone.get("name")
        )
        return bundle

    def file(self, role: str) -> Path:
        """The file of `role`, once it and its manifest (the .json beside it, where the bundle has one)
        hash as they did when the bundle was built."""
        if role not in self.files:
            raise BundleError(f"the bundle {self.root} (version {self.version}) holds no {role} file")
        path = self.root / self.files[role]
        for member in dict.fromkeys((self.files[role], str(Path(self.files[role]).with_suffix(".json")))):
            if member not in self.sha256:
                continue
            if not (self.root / member).is_file():
                raise BundleError(f"{self.root / member}: missing from the bundle (version {self.version})")
            found = file_sha256(self.root / member)
            if found != self.sha256[member]:
                raise BundleError(
                    f"{self.root / member}: changed since the bundle was built (sha256 {found[:12]}, recorded "
                    f"{self.sha256[member][:12]}); rebuild the bundle or restore the file"
                )
        return path

    def problems(self) -> list[str]:
        """Every file of the bundle folder that is missing, added, or changed since the bundle was
        built (by its path relative to the root), sorted; empty when every file hashes as built."""
        found, problems = bundle_hashes(self.root), []
        for name in sorted(set(self.sha256) | set(found)):
            if name not in found:
                problems.append(f"{name}: missing")
            elif name not in self.sha256:
                problems.append(f"{name}: not part of the bundle as built")
            elif found[name] != self.sha256[name]:
                problems.append(
                    f"{name}: changed since the bundle was built "
                    f"(sha256 {found[name][:12]}, recorded {self.sha256[name][:12]})"
                )
        return problems

    def check_served(self, what: str, backbone: str, dimension: int) -> None:
        """Raises BundleError unless `what` (a head, a sampler...) takes this bundle's backbone features."""
        expected = (self.backbone["name"], int(self.backbone["dimension"]))
        if (backbone, int(dimension)) != expected:
            raise BundleError(
                f"the {what} takes {dimension}-d {backbone} features; the bundle {self.root} (version "
                f"{self.version}) is for {expected[1]}-d {expected[0]} features"
            )
