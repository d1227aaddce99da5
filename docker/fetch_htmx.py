"""Put htmx into app/static/vendor for an image built without `make setup` (which uses npm): the tarball of the
exact version package-lock.json pins, from the npm registry, checked against the lock file's integrity hash."""

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "app" / "static" / "vendor" / "htmx.min.js"


def main() -> None:
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/htmx.org"]
    url = f"https://registry.npmjs.org/htmx.org/-/htmx.org-{locked['version']}.tgz"
    tarball = urllib.request.urlopen(url, timeout=60).read()
    algorithm, digest = locked["integrity"].split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != digest:
        raise SystemExit(f"{url} does not match package-lock.json's integrity hash")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        script = archive.extractfile("package/dist/htmx.min.js").read()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(script)


if __name__ == "__main__":
    main()
