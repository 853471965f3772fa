"""`gatemesh openapi`: print the OpenAPI document of the REST edge.

The document is generated from the descriptor set (the protos' `google.api.http` rules
and comments), exactly as the edge serves it at `/openapi.json`.
"""

from __future__ import annotations

import argparse
import sys


def cmd_openapi(args: argparse.Namespace) -> int:
    from services.edge import openapi
    from services.edge.settings import MESH_SERVICES

    services = args.service or list(MESH_SERVICES)
    sys.stdout.write(openapi.render(openapi.document(services)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("openapi", help="print the REST edge's OpenAPI document (JSON)")
    parser.add_argument(
        "--service", action="append", help="only this service's API (repeatable; default: every service)"
    )
    parser.set_defaults(func=cmd_openapi)
