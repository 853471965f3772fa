"""The API reference page the edge serves at `/docs`: Swagger UI over `/openapi.json`.

Swagger UI's files come from the `swagger-ui-bundle-v2` package (its `swagger_ui_path`),
copied next to a page and a start-up script of ours, so nothing is fetched at run time:
the page loads its script, style and icon from `/docs/...` on the edge itself, and the
spec validator badge (which would call out to a public validator) is off.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

from .config import DOCS_ASSETS, DOCS_INIT, DOCS_PAGE, DOCS_PATH, OPENAPI_PATH

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Gatemesh API reference</title>
  <link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{DOCS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{DOCS_PATH}/{DOCS_INIT}"></script>
</body>
</html>
"""
INIT = f"""window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: "{OPENAPI_PATH}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  }});
}};
"""


def write_docs(directory: Path) -> Path:
    """The page, its start-up script and Swagger UI's assets, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DOCS_PAGE).write_text(PAGE)
    (directory / DOCS_INIT).write_text(INIT)
    source = Path(str(swagger_ui_path))
    for name in DOCS_ASSETS:
        shutil.copyfile(source / name, directory / name)
    return directory
