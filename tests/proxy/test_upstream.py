"""A provider's pooled HTTP session against a real HTTP server."""

from __future__ import annotations

from aiohttp import web

from services.proxy.settings import ProviderConfig
from services.proxy.upstream import CircuitBreaker, Provider, read_json
from tests.support import free_port


async def test_a_cookie_an_upstream_sets_is_never_sent_on_later_calls() -> None:
    """One session serves every tenant's calls: a Set-Cookie answered to one call must not
    reach the upstream with the next (another user's) call. (By a host name: aiohttp's
    default jar keeps no cookies of IP addresses.)"""
    cookies_seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        cookies_seen.append(request.headers.get("cookie", ""))
        response = web.json_response({"choices": []})
        response.set_cookie("session", "for-the-first-caller-only")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = ProviderConfig(name="p", base_url=f"http://localhost:{port}/v1", models=["m"])
    provider = Provider(config, CircuitBreaker(5, reset_s=60))
    try:
        for _ in range(3):
            await read_json(await provider.post("/chat/completions", b"{}"))
    finally:
        await provider.close()
        await runner.cleanup()
    assert cookies_seen == ["", "", ""]
