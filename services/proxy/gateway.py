"""The proxy's hot path: one metered call, from key check to settled cost.

Per call: check the key and take the rate limit (one `verify`), hold the largest possible
cost (estimated prompt plus the output limit, at the cached price), call the upstream
(retries and fallback in `router`), then settle the exact cost from the usage the upstream
reports, or from a local count where it reports none, and record the request's metadata
(`metered_call`; streams in `stream_relay`). A leased key (see `leases`) skips auth, and its
cost is reserved from a credit lease in process when one covers it (see `credit`).

The ports (`Gatekeeper`, `Ledger`, `RequestLog`, in `ports`) are implemented over gRPC and
SQL in `adapters` and `store`; this module knows neither. Nothing here logs or stores content.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import DeadlineExceeded, DomainError, Unavailable, Violations

from .bodies import embedding_input_ok, parse_object, require_key, upstream_chat_body, validate_chat
from .credit import CreditLeases
from .known_keys import KnownKeys
from .leases import KeyLease, Leases, Share
from .metered_call import MeteredCall, Tasks, new_request_id
from .model import KeyGrant, Limits
from .ports import Gatekeeper, Ledger, RequestLog
from .router import Route, Router
from .sse import StreamState
from .stream_relay import StreamRelay
from .tokens import TokenCounter, message_texts
from .upstream import first_events, read_json

CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"


@dataclass
class Reply:
    """A chat answer: a JSON body, or a stream of SSE chunks."""

    body: bytes | None = None
    stream: StreamRelay | None = None


class Gateway:
    """The hot path: metered chat completions, embeddings and the model list."""

    def __init__(
        self,
        router: Router,
        gatekeeper: Gatekeeper,
        ledger: Ledger,
        request_log: RequestLog,
        counter: TokenCounter,
        limits: Limits,
        known_keys: KnownKeys | None = None,
        leases: Leases | None = None,
        credit: CreditLeases | None = None,
    ) -> None:
        self.router = router
        self.credit = credit  # credit leases; None: every call holds synchronously
        self.known_keys = known_keys or KnownKeys()
        self.leases = Leases() if leases is None else leases  # never ready without a key-change watcher
        self.gatekeeper = gatekeeper
        self.ledger = ledger
        self.request_log = request_log
        self.counter = counter
        self.limits = limits
        self.tasks = Tasks()

    async def chat(self, api_key: str, raw: bytes) -> Reply:
        require_key(api_key)
        body = parse_object(raw)
        model, stream = validate_chat(body)
        route = self.router.resolve(model)
        prompt = self.counter.prompt_tokens(route.model, body)
        call = await self._admit(api_key, route, prompt, self.limits.output_limit(route.model, body), "chat", stream)
        upstream_body, wants_usage = upstream_chat_body(raw, body, route, stream)
        if not stream:
            attempt = await call.guard(self.router.call(route, CHAT_PATH, upstream_body, read_json))
            call.provider = attempt.provider.name
            data, reply = attempt.primed
            await call.finish_json(reply, self._chat_output)
            return Reply(body=data)
        state = StreamState(client_wants_usage=wants_usage)
        attempt = await call.guard(self.router.call(route, CHAT_PATH, upstream_body, first_events(state)))
        call.provider = attempt.provider.name
        return Reply(stream=StreamRelay(call, state, attempt.response, attempt.primed, self._stream_output))

    async def embeddings(self, api_key: str, raw: bytes) -> bytes:
        require_key(api_key)
        body = parse_object(raw)
        violations = Violations()
        model = body.get("model")
        violations.check(isinstance(model, str) and bool(model), "model", "must be a non-empty string")
        violations.check(
            embedding_input_ok(body.get("input")),
            "input",
            "must be a string, an array of strings, of token ids or of token-id arrays, not empty",
        )
        violations.raise_if_any()
        route = self.router.resolve(str(model))
        if route.model != route.public_model:
            body["model"] = route.model
            raw = json.dumps(body, separators=(",", ":")).encode()
        prompt = self.counter.input_tokens(route.model, body["input"])
        call = await self._admit(api_key, route, prompt, 0, "embeddings", False)
        attempt = await call.guard(self.router.call(route, EMBEDDINGS_PATH, raw, read_json))
        call.provider = attempt.provider.name
        data, reply = attempt.primed
        await call.finish_json(reply, lambda _model, _reply: 0)
        return data

    async def list_models(self, api_key: str) -> bytes:
        """The models the key may use and a call could succeed for (served by a provider
        with its key, and priced), in OpenAI's list shape."""
        require_key(api_key)
        grant = await self.gatekeeper.verify(api_key, "", False, 0)
        allowed = set(grant.allowed_models)
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in sorted(self.router.models().items())
            if (not allowed or name in allowed) and await self.ledger.price(self.router.resolve(name).model)
        ]
        return json.dumps({"object": "list", "data": models}, separators=(",", ":")).encode()

    async def _admit(
        self, api_key: str, route: Route, prompt: int, max_output: int, endpoint: str, stream: bool
    ) -> MeteredCall:
        """Verify the key, take the rate limit and hold the largest possible cost. A leased
        key with room in its rate share is admitted here, without auth (see `leases`). For a
        key this proxy has seen verified, the hold is placed while auth verifies (see
        `_admit_concurrently`); for a new key, and after any refusal, one after the other."""
        estimate = prompt + max_output
        price = await self.ledger.price(route.model)
        cost = max(1, price.cost(prompt, max_output)) if price is not None else 0
        leased = self.leases.take(api_key, route.public_model, estimate) if cost else None
        if leased is not None:
            return await self._admit_leased(api_key, *leased, route, prompt, estimate, cost, endpoint, stream)
        known = self.known_keys.get(api_key) if cost else None
        if known is not None:
            return await self._admit_concurrently(api_key, known, route, prompt, estimate, cost, endpoint, stream)
        grant = await self._verify(api_key, route.public_model, estimate, lease=bool(cost))
        if not cost:  # after auth: a bad key hears 401 before anything about the model
            self.gatekeeper.report_tokens(grant.key_id, -estimate)
            raise Unavailable(f"the model '{route.public_model}' has no price yet", reason="model_not_priced")
        self.known_keys.put(api_key, grant)
        call = MeteredCall(self, grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        await call.place_hold(cost)
        return call

    async def _admit_concurrently(
        self, api_key: str, known: KeyGrant, route: Route, prompt: int, estimate: int, cost: int, endpoint: str,
        stream: bool,
    ) -> MeteredCall:  # fmt: skip
        """Verify and hold at once: the call waits for the slower of the two instead of their
        sum. The hold is placed for the account and spend cap the key had when last verified;
        if auth refuses the key (or it changed meanwhile), that hold is released unused and
        nothing is charged or logged, exactly as if auth had refused before any hold. The
        key is then forgotten, so a refused key (say a client hammering past its rate limit)
        places no further holds until it passes auth again."""
        call = MeteredCall(self, known, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        call.tokens_taken = False
        verify = self.tasks.spawn(self._verify(api_key, route.public_model, estimate, lease=True))
        hold = call.hold_task(cost)
        try:
            await asyncio.wait((verify, hold))
        except asyncio.CancelledError:
            self.tasks.spawn(call.abandon_admission(verify, hold))
            raise
        refused = verify.exception()
        if refused is not None:
            self.known_keys.forget(api_key)
            call.discard(hold)
            raise refused
        grant: KeyGrant = verify.result()
        call.tokens_taken = True
        failed = hold.exception()
        if failed is not None:
            self.gatekeeper.report_tokens(grant.key_id, -estimate)
            call.reclaim_if_unknown(failed)
            raise failed
        call.hold_id = hold.result()
        self.known_keys.put(api_key, grant)
        if grant.hold_terms() == known.hold_terms():
            return call
        call.discard(hold)  # the key's spend cap changed since: hold again under the new one
        call = MeteredCall(self, grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        await call.place_hold(cost)
        return call

    async def _admit_leased(
        self, api_key: str, lease: KeyLease, share: Share, route: Route, prompt: int, estimate: int, cost: int,
        endpoint: str, stream: bool,
    ) -> MeteredCall:  # fmt: skip
        """A leased key: its request and tokens came from this proxy's share, and its cost is
        reserved from the key's credit lease when that covers it (see `credit`), so nothing
        waits for auth or billing; otherwise the hold is placed as for any call. A renewal of
        the share, when due, goes to auth in the background."""
        if self.leases.wants_renewal(lease):
            self.tasks.spawn(self._renew(api_key, lease, estimate))
        call = MeteredCall(self, lease.grant, route, "", new_request_id(), prompt, estimate, endpoint, stream)
        call.share = share
        if not call.draw_from_lease(cost):
            await call.place_hold(cost)
        return call

    async def _verify(self, api_key: str, model: str, estimate: int, lease: bool) -> KeyGrant:
        """VerifyKey taking the call from the rate limits; asks for a lease while auth's change
        stream is up (one request per key at a time), and leases the key if auth gives one
        and nothing changed meanwhile."""
        token = self.leases.ask(api_key) if lease else None
        if token is None:
            return await self.gatekeeper.verify(api_key, model, True, estimate)
        try:
            epoch = self.leases.epoch
            grant = await self.gatekeeper.verify(api_key, model, True, estimate, lease=True)
            self.leases.grant(api_key, grant, grant.offer, epoch)
        finally:
            self.leases.answered(token)
        return grant

    async def _renew(self, api_key: str, lease: KeyLease, tokens: int) -> None:
        """Top up a leased key's rate share (no call taken). A refusal drops the lease; auth
        being unreachable only means the shares run out and calls are checked one by one."""
        token = self.leases.ask(api_key)
        if token is None:
            self.leases.renewed(lease)
            return
        epoch = self.leases.epoch
        try:
            grant = await self.gatekeeper.verify(api_key, "", False, tokens, lease=True)
        except (Unavailable, DeadlineExceeded):
            return
        except DomainError:
            self.leases.forget(api_key)
            return
        finally:
            self.leases.renewed(lease)
            self.leases.answered(token)
        self.leases.grant(api_key, grant, grant.offer, epoch)

    def _chat_output(self, model: str, reply: dict[str, Any]) -> int:
        texts = [
            text
            for choice in reply.get("choices") or ()
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
            for text in message_texts(choice["message"])
        ]
        return self.counter.count(model, "".join(texts))

    def _stream_output(self, model: str, state: StreamState) -> int:
        return self.counter.count(model, state.output_text())
