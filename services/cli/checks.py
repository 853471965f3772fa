"""`gatemesh up`'s configuration check, before any process starts.

It reads the proxy's routing settings and billing's price list from the same
configuration the services will read and runs every routing check (`services.proxy.checks`):
each mistake is printed as a warning naming its setting, and the start is refused when no
model could be called at all. The services repeat their own part of the checks when they
start, so a mesh started without `gatemesh up` is checked too.
"""

from __future__ import annotations

import os
import sys

from services.billing.settings import BillingSettings
from services.proxy.checks import check_routing
from services.proxy.settings import ProxySettings

from .common import CliError


def preflight() -> None:
    """Warn of each routing mistake; raise CliError when nothing could be served."""
    proxy = ProxySettings()
    priced = set(BillingSettings().prices)
    findings, fatal = check_routing(proxy.providers, proxy.model_aliases, os.environ, priced)
    for finding in findings:
        print(f"gatemesh: warning: {finding}", file=sys.stderr, flush=True)
    if fatal:
        raise CliError(f"not starting: {fatal} (see the warnings above)")
    if not proxy.providers:
        print("gatemesh: warning: providers: none configured, so the mesh serves no model", file=sys.stderr)
