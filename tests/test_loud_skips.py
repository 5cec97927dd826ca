"""The contract tests never skip silently: without the specs, the run ends with a banner naming the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import base_env

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_missing_specs_end_the_run_with_a_banner(tmp_path: Path) -> None:
    """With DEPLOYER_SPECS_DIR pointing at an empty folder, the contract tests are reported NOT RUN in a banner
    at the end of the run, with the folder and the reason."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/sandbox/test_contract.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env=base_env({"DEPLOYER_SPECS_DIR": str(tmp_path)}), capture_output=True, text=True,
        timeout=170, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SOME TESTS WERE NOT RUN" in output
    assert f"NOT RUN: contract tests: the OpenAPI specs are not in {tmp_path}" in output
    assert " passed" not in output.splitlines()[-1] or "skipped" in output.splitlines()[-1]
