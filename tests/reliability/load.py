"""Load with faults through the edge, and what it must leave behind in billing.

`run_load` fires calls at once through Envoy: JSON ones with the official `openai` SDK,
streams with `httpx` (the SDK ends a stream that stops without `[DONE]` as if it had
finished, and a load test has to know the difference). Every body asks the fake upstream
for `chaos` (500, 429, hangs past the provider's timeout, streams cut midway, no usage), and
a share of the clients walk away: JSON ones after a random delay, streams after a few
chunks. Each call runs on an API key of its own, so billing's usage records (which carry
the key id) tell what became of each call.

`check_billing` then reads billing's own tables and returns one verdict per invariant:
the ledger balances; no account below zero; no hold open; no hold settled twice; each
account's usage records sum to its ledger debits and to what left its wallet; every call
the client saw complete was billed exactly once at price x tokens; nothing was charged for a
refused call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from sqlalchemy.ext.asyncio import create_async_engine

from tests.billing.ledger_checks import assert_invariants
from tests.e2e.edge_mesh import INPUT_MICROS, OUTPUT_MICROS
from tests.fake_upstream import plan_chat
from tests.reliability.harness import CHAOS, Account, ChaosMesh
from tests.reliability.results import Row

PROMPT = "tell me something reliable please"


@dataclass
class Call:
    """One call of the load and what its client saw."""

    key_id: str
    api_key: str
    stream: bool
    leave_after: float | None  # JSON: seconds before the client leaves; streams: chunks
    outcome: str = ""  # served, refused, cut, left, error
    status: int = 0
    text: str = ""
    usage: dict[str, int] | None = None
    detail: str = ""
    seconds: float = 0.0
    error_shaped: bool = False  # a refusal's body is OpenAI's {"error": {"message", "type", ...}}


def openai_shaped(body: Any) -> bool:
    """Whether an error body (or its "error" member, as the SDK hands it out) is OpenAI's."""
    error = body.get("error", body) if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


@dataclass
class Verdict:
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def plan_calls(accounts: list[Account], rng: random.Random, leave_rate: float) -> list[Call]:
    """One call per key: half streams, `leave_rate` of the clients leaving early."""
    calls = []
    for account in accounts:
        for key_id, api_key in account.keys.items():
            stream = rng.random() < 0.5
            leave = None
            if rng.random() < leave_rate:
                leave = float(rng.randint(1, 4)) if stream else rng.uniform(0.002, 0.4)
            calls.append(Call(key_id, api_key, stream, leave))
    return calls


def body(stream: bool) -> dict[str, Any]:
    return {
        "model": CHAOS,
        "messages": [{"role": "user", "content": PROMPT}],
        "fake_mode": "chaos",
        "fake_words": 12,
        **({"stream": True, "stream_options": {"include_usage": True}} if stream else {}),
    }


async def json_call(http: httpx.AsyncClient, url: str, call: Call) -> None:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=call.api_key, max_retries=0, http_client=http)
    extra = {k: v for k, v in body(False).items() if k.startswith("fake_")}
    request = client.chat.completions.create(model=CHAOS, messages=body(False)["messages"], extra_body=extra)
    try:
        if call.leave_after is None:
            reply = await request
        else:
            reply = await asyncio.wait_for(request, call.leave_after)
    except TimeoutError:
        call.outcome = "left"
        return
    except openai.APIStatusError as error:
        call.outcome, call.status, call.detail = "refused", error.status_code, error.message[:200]
        call.error_shaped = openai_shaped(error.body)
        return
    call.outcome, call.status = "served", 200
    call.text = reply.choices[0].message.content or ""
    call.usage = reply.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) if reply.usage else None


async def stream_call(http: httpx.AsyncClient, url: str, call: Call) -> None:
    headers = {"authorization": f"Bearer {call.api_key}"}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body(True), headers=headers) as reply:
        call.status = reply.status_code
        if reply.status_code != 200:
            await reply.aread()
            call.outcome, call.detail = "refused", reply.text[:200]
            with contextlib.suppress(ValueError):
                call.error_shaped = openai_shaped(reply.json())
            return
        events = 0
        async for line in reply.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                call.outcome = "served" if call.outcome == "" else call.outcome
                return
            event = json.loads(data)
            if "error" in event:
                call.outcome, call.detail = "cut", str(event["error"].get("message"))[:200]
                continue
            events += 1
            call.text += "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices") or [])
            if event.get("usage"):
                call.usage = {k: event["usage"][k] for k in ("prompt_tokens", "completion_tokens")}
            if call.leave_after is not None and events >= call.leave_after:
                call.outcome = "left"
                return
    call.outcome = call.outcome or "cut"  # ended without [DONE]


async def one_call(http: httpx.AsyncClient, url: str, call: Call) -> None:
    started = time.monotonic()
    try:
        await (stream_call if call.stream else json_call)(http, url, call)
    except (httpx.HTTPError, openai.APIConnectionError) as error:
        call.outcome, call.detail = "error", f"{type(error).__name__}: {error}"[:200]
    call.seconds = time.monotonic() - started


# Connections per httpx client: httpcore's pool scans all of its connections for each
# request, so one client with a thousand connections spent the load in that scan.
SHARD = 32


async def run_load(mesh: ChaosMesh, calls: list[Call], concurrency: int) -> float:
    """Run every call, at most `concurrency` at once; returns the seconds it took."""
    shards = max(1, -(-concurrency // SHARD))
    limits = httpx.Limits(max_connections=SHARD, max_keepalive_connections=SHARD)
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)))
            for _ in range(shards)
        ]

        async def gated(index: int, call: Call) -> None:
            async with gate:
                await one_call(clients[index % shards], mesh.url, call)

        await asyncio.gather(*(gated(index, call) for index, call in enumerate(calls)))
    return time.monotonic() - started


def outcomes(calls: list[Call]) -> Counter[str]:
    return Counter(call.outcome for call in calls)


def price(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_MICROS + output_tokens * OUTPUT_MICROS


async def wait_no_open_hold(mesh: ChaosMesh, within_s: float) -> int:
    """Wait until billing has no open hold (settles finish after answers, a killed proxy's
    holds expire); returns how many are still open at the deadline."""
    deadline = time.monotonic() + within_s
    while True:
        rows = await mesh.billing_rows("SELECT count(*) AS n FROM holds WHERE status = 'open'")
        if rows[0]["n"] == 0 or time.monotonic() > deadline:
            return rows[0]["n"]
        await asyncio.sleep(0.25)


async def check_billing(
    mesh: ChaosMesh, accounts: list[Account], calls: list[Call], hold_wait_s: float
) -> list[Verdict]:
    """Every invariant, read from billing's own tables."""
    verdicts = [Verdict("no hold left open")]
    still_open = await wait_no_open_hold(mesh, hold_wait_s)
    if still_open:
        verdicts[0].failures.append(f"{still_open} holds still open")
    verdicts.append(await _ledger_balances(mesh))
    usage = await mesh.billing_rows("SELECT * FROM usage_records")
    transfers = await mesh.billing_rows("SELECT * FROM transfers")
    balances = await mesh.billing_rows("SELECT * FROM ledger_accounts")
    holds = await mesh.billing_rows("SELECT key_id, status FROM holds")
    verdicts.append(_holds_end_once(holds, usage))
    verdicts.append(_accounts_add_up(accounts, usage, transfers, balances))
    verdicts.extend(_calls_billed(calls, usage))
    return verdicts


async def _ledger_balances(mesh: ChaosMesh) -> Verdict:
    verdict = Verdict("ledger balances (entries sum to zero, balances = entries, none negative)")
    # One snapshot for every query: releases may still be committing while it reads.
    engine = create_async_engine(mesh.databases["billing"], isolation_level="REPEATABLE READ")
    try:
        await assert_invariants(engine)
    except AssertionError as error:
        verdict.failures.append(f"ledger invariant: {error!r}")
    finally:
        await engine.dispose()
    return verdict


def _holds_end_once(holds: list[dict[str, Any]], usage: list[dict[str, Any]]) -> Verdict:
    """Each call (one per key) places at most one hold, and has a usage record only for a
    hold it placed: a retried hold or a settle replayed after a crash is not a second one."""
    verdict = Verdict("each call held at most once, and billed only against its hold")
    held, used = Counter(h["key_id"] for h in holds), Counter(u["key_id"] for u in usage)
    verdict.failures.extend(f"{key}: {n} holds" for key, n in held.items() if n > 1)
    verdict.failures.extend(f"{key}: {n} usage records, {held[key]} holds" for key, n in used.items() if n > held[key])
    return verdict


Rows = list[dict[str, Any]]


def _accounts_add_up(accounts: list[Account], usage: Rows, transfers: Rows, balances: Rows) -> Verdict:
    verdict = Verdict("each account's usage records = its ledger debits = what left its wallet")
    by_id = {row["id"]: row["balance"] for row in balances}
    for account in accounts:
        recorded = sum(u["cost_micros"] for u in usage if u["account_id"] == account.account_id)
        debited = sum(t["amount"] for t in transfers if t["account_id"] == account.account_id and t["kind"] == "usage")
        wallet, held = by_id.get(f"wallet:{account.account_id}", 0), by_id.get(f"holds:{account.account_id}", 0)
        spent = account.granted - wallet
        if not recorded == debited == spent or held != 0 or wallet < 0:
            verdict.failures.append(
                f"{account.account_id}: usage {recorded}, debits {debited}, spent {spent}, held {held}, wallet {wallet}"
            )
    return verdict


def _calls_billed(calls: list[Call], usage: list[dict[str, Any]]) -> list[Verdict]:
    once = Verdict("no call billed twice (at most one usage record per call)")
    served = Verdict("every served call billed once, at price x tokens")
    refused = Verdict("nothing charged for a refused call")
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in usage:
        by_key.setdefault(row["key_id"], []).append(row)
    plan = plan_chat(body(False))
    for call in calls:
        rows = by_key.get(call.key_id, [])
        if len(rows) > 1:
            once.failures.append(f"{call.key_id}: {len(rows)} usage records")
        if call.outcome == "served":
            served.failures.extend(_served_failures(call, rows, plan.text, plan.prompt_tokens, plan.completion_tokens))
        if call.outcome == "refused" and any(r["cost_micros"] for r in rows):
            refused.failures.append(f"{call.key_id}: refused ({call.status}) but charged {rows[0]['cost_micros']}")
    return [once, served, refused]


def _served_failures(call: Call, rows: list[dict[str, Any]], text: str, prompt: int, completion: int) -> list[str]:
    if call.text != text:
        return [f"{call.key_id}: served text differs: {call.text!r}"]
    if len(rows) != 1 or rows[0]["status"] != "ok":
        return [f"{call.key_id}: served but usage records {[(r['status'], r['cost_micros']) for r in rows]}"]
    row = rows[0]
    tokens = (row["input_tokens"], row["output_tokens"])
    if row["cost_micros"] != price(*tokens):
        return [f"{call.key_id}: charged {row['cost_micros']} for tokens {tokens}"]
    if call.usage is not None and (row["tokens_estimated"] or tokens != (prompt, completion)):
        estimated = row["tokens_estimated"]
        return [f"{call.key_id}: upstream reported {call.usage}, billed {tokens} (estimated {estimated})"]
    return []


def load_row(name: str, calls: list[Call], faults_drawn: dict[str, int], verdicts: list[Verdict]) -> Row:
    """The results-table row of one load: faults are the upstream's non-ok draws plus the
    clients that left; they count as survived when every check passed and no call broke."""
    seen = outcomes(calls)
    faults = sum(n for fault, n in faults_drawn.items() if fault != "ok") + seen["left"]
    failed = [v for v in verdicts if not v.passed]
    return Row(
        name,
        calls=len(calls),
        faults=faults,
        survived=faults if not failed and not seen["error"] else 0,
        checks=len(verdicts),
        passed=len(verdicts) - len(failed),
        lost=sum(len(v.failures) for v in verdicts if v.name.startswith("every served call")),
    )
