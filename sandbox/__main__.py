"""``python -m sandbox --host 127.0.0.1 --port 9000``: serve the simulated clouds with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

from sandbox.app import create_app
from sandbox.state import SandboxConfig, World


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, read ``SANDBOX_*`` and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig.from_env(os.environ)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    print(
        f"SANDBOX: DigitalOcean at http://{args.host}:{args.port}/sandbox/digitalocean, "
        f"Coolify at http://{args.host}:{args.port}/sandbox/coolify",
        file=sys.stderr,
    )
    uvicorn.run(create_app(World(config)), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
