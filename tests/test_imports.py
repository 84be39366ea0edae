"""Dependencies point one way: the trainer never imports the Gymnasium side, and the numpy parts never import torch.

Each check runs in a fresh interpreter, so modules imported by other tests cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def imported_after(code: str) -> set[str]:
    """Top-level package names in `sys.modules` after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_trainer_imports_neither_envs_nor_gymnasium(tmp_path):
    # A user's own `envs` package first on the path (common in RL repositories) must not matter to the trainer
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text('raise ImportError("a user\'s own envs package")\n')
    code = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
from trl_lead.config import LEADConfig
from trl_lead.resolve import resolve_policy
from trl_lead.trainer import LEADSFTTrainer  # noqa: F401  (what the probe imports)
args = LEADConfig(output_dir={str(tmp_path / "out")!r}, report_to="none", use_cpu=True, bf16=False)
policy = resolve_policy(args, None)
assert type(policy).__name__ == "Exp3S", policy
"""
    packages = imported_after(code)
    assert "torch" in packages and "trl" in packages  # the probe sees what the trainer does import
    assert "envs" not in packages
    assert "gymnasium" not in packages


@pytest.mark.parametrize("module", ["trl_lead.policies", "trl_lead.selection", "trl_lead.settings"])
def test_numpy_parts_import_no_torch(module):
    packages = imported_after(f"import {module}")
    assert not packages & {"torch", "trl", "transformers", "envs", "gymnasium"}
