"""The geoclip package's own LocationEncoder, loaded from its files: the reference our encoder
is tested against and benchmarked beside. Never used to serve."""

from __future__ import annotations

import importlib.util
import sys
import types

from torch import nn

from geoloc.gallery.location_encoder import geoclip_package_dir


def geoclip_reference_encoder() -> nn.Module:
    """The geoclip package's own LocationEncoder, loaded from its files.

    Its package `__init__` imports transformers' CLIP and its `misc` module needs pandas, so
    the package is not imported: `location_encoder.py` and `rff/` run unchanged, and `misc` is
    replaced by the one name they use from it, the folder holding the weights.
    """
    model_dir = geoclip_package_dir()
    package = types.ModuleType("_geoclip_files")
    package.__path__ = [str(model_dir)]
    misc = types.ModuleType("_geoclip_files.misc")
    misc.file_dir = str(model_dir)
    sys.modules.update({"_geoclip_files": package, "_geoclip_files.misc": misc})
    for name, path, search in [
        ("_geoclip_files.rff", model_dir / "rff" / "__init__.py", [str(model_dir / "rff")]),
        ("_geoclip_files.location_encoder", model_dir / "location_encoder.py", None),
    ]:
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules["_geoclip_files.location_encoder"].LocationEncoder().eval()
