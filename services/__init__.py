"""Gatemesh services: auth, proxy, billing and privacy, and the runtime they share."""
