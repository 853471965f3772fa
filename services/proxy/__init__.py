"""The proxy service: the OpenAI-compatible API, metered to the micro-unit."""
