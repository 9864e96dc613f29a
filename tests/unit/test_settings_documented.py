"""Every setting Spindle reads must be documented in the README's settings table."""

from __future__ import annotations

from pathlib import Path

from spindle.settings import all_setting_env_names

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name in all_setting_env_names() if f"`{name}`" not in text]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_names_the_commands_ci_runs() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in text and "bash scripts/test.sh" in ci
    assert "bash scripts/serve.sh" in text
