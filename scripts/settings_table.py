"""Print the README's settings table from the settings classes (run after adding a setting)."""

from __future__ import annotations

from spindle.settings import _sections


def main() -> None:
    print("| variable | default | what it does |")
    print("|---|---|---|")
    for section in _sections():
        prefix = section.model_config.get("env_prefix", "")
        for name, field in section.model_fields.items():
            default = field.default if field.default_factory is None else field.default_factory()
            shown = f"`{default}`" if default not in ("", None) else "(empty)"
            print(f"| `{(prefix + name).upper()}` | {shown} | {field.description or ''} |")


if __name__ == "__main__":
    main()
