"""Regenerates the Python stubs of the geoloc.v1 API from protos/ into services/geoloc/v1/.

    python scripts/gen_protos.py            # write the stubs
    python scripts/gen_protos.py --check    # exit 1 if the committed stubs are stale

The stubs are committed so that installing geoloc needs no code generation; the test
suite runs --check, so a .proto change without regenerated stubs fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
API_PACKAGE = Path("geoloc") / "v1"
STUB_DIR = ROOT / "services" / "geoloc" / "v1"
KEEP = {"__init__.py"}


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) over every .proto of the API; returns the stubs written."""
    from grpc_tools import protoc

    protos = sorted((PROTO_ROOT / API_PACKAGE).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / API_PACKAGE).glob("*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs, write nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name for p in STUB_DIR.glob("*.py*") if p.name not in KEEP}
        if args.check:
            stale = sorted(
                name
                for name in fresh.keys() | committed
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(fresh[name], STUB_DIR / name, shallow=False)
            )
            if stale:
                print("stale generated stubs (run python scripts/gen_protos.py): " + ", ".join(stale), file=sys.stderr)
                return 1
            return 0
        for name in committed - fresh.keys():
            (STUB_DIR / name).unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, STUB_DIR / name)
        print(f"wrote {len(fresh)} files to {STUB_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
