"""Render the configuration reference (docs/configuration.md) from the settings classes.

Every key is declared once, with its default and description, on a pydantic-settings
class; this script renders them so the reference cannot drift from the code
(`tests/test_docs.py` fails when the committed file differs). Run `make docs` after
adding a setting.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"

SECTIONS = [
    ("Shared by every service", "services.runtime.settings", "GatemeshSettings"),
    ("auth", "services.auth.settings", "AuthSettings"),
    ("billing", "services.billing.settings", "BillingSettings"),
    ("proxy", "services.proxy.settings", "ProxySettings"),
    ("privacy", "services.privacy.settings", "PrivacySettings"),
    ("edge", "services.edge.settings", "EdgeSettings"),
]

HEADER = """# Configuration reference

Generated from the settings classes by `scripts/config_reference.py` (`make docs`); do not
edit by hand. Every key is read from the environment as `GATEMESH_<KEY>` (upper case) or
from the YAML file named by `--config` / `GATEMESH_CONFIG`; the environment wins. Lists
and maps can be given in the environment as JSON. Secrets without a value are generated
once into `<data_dir>/secrets.json` (mode 0600) for a local mesh; set them explicitly in
production.
"""


def _default(field: object) -> str:
    default = field.default  # type: ignore[attr-defined]
    if default is PydanticUndefined:
        factory = field.default_factory  # type: ignore[attr-defined]
        default = factory() if factory else ""
    if default is None or default == "":
        return "(empty)"
    text = str(default)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}...`"


def section(title: str, cls: type, base: type | None) -> str:
    own = {n: f for n, f in cls.model_fields.items() if base is None or n not in base.model_fields}
    rows = [f"\n## {title}\n", "| key | default | meaning |", "| --- | --- | --- |"]
    for name, field in own.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def render() -> str:
    parts = [HEADER]
    base = None
    for title, module, name in SECTIONS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError:
            continue
        parts.append(section(title, cls, base))
        base = base or cls
    return "".join(parts)


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
