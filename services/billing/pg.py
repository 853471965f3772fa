"""PostgreSQL's one-statement forms of the hot path: a hold, a settle within its hold, a
credit lease's draw within what is left of it, a batch's key lookup, key storage and balance
changes, each one round trip.

`HOLD_PG`, `SETTLE_PG` and `DRAW_PG` state the rules of `rules` (`hold_refusal`,
`settle_split`, `draw_legs`) in SQL; `tests/billing/test_one_statement_forms.py` runs them
against those functions on the same inputs, so that the fast SQL cannot drift from the rule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from sqlalchemy import text

_SQL_TYPES = {"int": "BIGINT", "str": "VARCHAR"}


@functools.cache
def record_keys_pg(result_type: type) -> tuple[Any, list[str]]:
    """The statement storing keys with results of this dataclass (int and str fields), and
    the field names in the order of its array parameters c0, c1, ..."""
    fields = dataclasses.fields(result_type)
    names = [f.name for f in fields]
    # annotations may be strings
    types = [_SQL_TYPES[f.type if isinstance(f.type, str) else f.type.__name__] for f in fields]
    arrays = ", ".join(f"CAST(:c{i} AS {sql_type}[])" for i, sql_type in enumerate(types))
    columns = ", ".join(f"c{i}" for i in range(len(fields)))
    result = ", ".join(f"'{name}', c{i}" for i, name in enumerate(names))
    statement = text(
        f"""
WITH stored AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT CAST(:scope AS VARCHAR), k, h, json_build_object({result})::text, CAST(:now AS TIMESTAMP)
    FROM unnest(CAST(:keys AS VARCHAR[]), CAST(:hashes AS VARCHAR[]), {arrays}) AS u(k, h, {columns})
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM stored
"""
    )
    return statement, names


# One primary-key probe per key, whatever the statistics say: as `key IN (SELECT unnest(...))`
# PostgreSQL planned by the selectivity of `scope`, and with stale statistics (a table that
# grew since it was last analyzed) it read every key of the scope to join them with the
# batch's (seen: 10 ms per batch at 22,000 keys, and growing with the table).
KEYS_STORED_PG = text(
    "SELECT i.key, i.params_hash, i.result FROM unnest(CAST(:ids AS VARCHAR[])) AS k(key),"
    " LATERAL (SELECT key, params_hash, result FROM idempotency WHERE scope = :scope AND key = k.key LIMIT 1) AS i"
)

ADD_BALANCES_PG = text(
    "UPDATE ledger_accounts AS a SET balance = a.balance + d.delta"
    " FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:deltas AS BIGINT[])) AS d(id, delta) WHERE a.id = d.id"
)

# A whole hold in one statement, for PostgreSQL (the single hold's path; SQLite runs the same
# steps one statement each). The holds account is credited first and the wallet debited only
# after it (the debit's WHERE reads `credit`), so rows are locked in the one order every path
# uses (`holds:<a>` before `wallet:<a>`), then the key's spend row. Every later step reads
# `debit`, so nothing is written when the wallet cannot cover the amount, except the holds
# account's credit: the caller rolls the transaction back on any refusal (no debit, the key's
# cap, the idempotency key taken by an earlier request).
HOLD_PG = text(
    """
WITH credit AS (
    INSERT INTO ledger_accounts (id, kind, account_id, balance)
    VALUES (CAST(:holds AS VARCHAR), 'holds', CAST(:account AS VARCHAR), CAST(:amount AS BIGINT))
    ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance
    RETURNING balance
), debit AS (
    UPDATE ledger_accounts SET balance = balance - CAST(:amount AS BIGINT)
    WHERE id = CAST(:wallet AS VARCHAR) AND balance >= CAST(:amount AS BIGINT) AND EXISTS (SELECT 1 FROM credit)
    RETURNING balance
), hold AS (
    INSERT INTO holds (id, account_id, key_id, amount, status, created_at, expires_at)
    SELECT CAST(:hold_id AS VARCHAR), CAST(:account AS VARCHAR), CAST(:key_id AS VARCHAR), CAST(:amount AS BIGINT),
           'open', CAST(:now AS TIMESTAMP), CAST(:expires AS TIMESTAMP)
    FROM debit
), transfer AS (
    INSERT INTO transfers (id, kind, account_id, reference, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), 'hold', CAST(:account AS VARCHAR), CAST(:hold_id AS VARCHAR),
           CAST(:amount AS BIGINT), CAST(:now AS TIMESTAMP)
    FROM debit
), legs AS (
    INSERT INTO entries (transfer_id, ledger_account, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), leg.account, leg.amount, CAST(:now AS TIMESTAMP)
    FROM debit, (VALUES (CAST(:wallet AS VARCHAR), -CAST(:amount AS BIGINT)),
                        (CAST(:holds AS VARCHAR), CAST(:amount AS BIGINT))) AS leg(account, amount)
), spend AS (
    INSERT INTO key_spend (key_id, spent, held)
    SELECT CAST(:key_id AS VARCHAR), 0, CAST(:amount AS BIGINT) FROM debit WHERE CAST(:key_id AS VARCHAR) <> ''
    ON CONFLICT (key_id) DO UPDATE SET held = key_spend.held + excluded.held
    WHERE CAST(:cap AS BIGINT) = 0 OR key_spend.spent + key_spend.held + excluded.held <= CAST(:cap AS BIGINT)
    RETURNING key_id
), recorded AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT 'hold', CAST(:key AS VARCHAR), CAST(:params_hash AS VARCHAR),
           json_build_object('hold_id', CAST(:hold_id AS VARCHAR), 'amount_micros', CAST(:amount AS BIGINT),
                             'expires_at', CAST(:expires_iso AS VARCHAR), 'balance_micros', debit.balance)::text,
           CAST(:created AS TIMESTAMP)
    FROM debit
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT balance FROM debit) AS balance,
       (SELECT count(*) FROM spend) AS reserved,
       (SELECT count(*) FROM recorded) AS recorded
"""
)


# The usage record and the transfer a settle or a draw writes for the hold `taken` (one of
# its CTEs): the call's cost, no shortfall (both statements write only within the hold).
USAGE_AND_TRANSFER = """), usage AS (
    INSERT INTO usage_records (id, account_id, key_id, model, provider, input_tokens, output_tokens, cost_micros,
                               shortfall_micros, status, latency_ms, tokens_estimated, created_at)
    SELECT CAST(:usage_id AS VARCHAR), t.account_id, CAST(:u_key_id AS VARCHAR), CAST(:model AS VARCHAR),
           CAST(:provider AS VARCHAR), CAST(:input_tokens AS BIGINT), CAST(:output_tokens AS BIGINT),
           CAST(:cost AS BIGINT), 0, CAST(:status AS VARCHAR), CAST(:latency_ms AS BIGINT),
           CAST(:tokens_estimated AS BOOLEAN), CAST(:created AS TIMESTAMP)
    FROM taken t
), transfer AS (
    INSERT INTO transfers (id, kind, account_id, reference, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), 'usage', t.account_id, CAST(:hold_id AS VARCHAR), CAST(:cost AS BIGINT),
           CAST(:now AS TIMESTAMP)
    FROM taken t
"""


# A whole settle within its hold in one statement, for PostgreSQL (the single settle's path
# when the cost does not exceed the hold; above it, and on SQLite, the settle runs step by
# step). `taken` resolves the open hold (its row lock first); the holds account is debited,
# then the wallet credited (`wallet` reads `held`), then the key's spend row (`spend` reads
# `wallet`): the one lock order of every path. Everything else reads `taken`, so nothing is
# written when the hold is not open or its amount is below the cost: the caller then takes
# the step path in the same transaction, which raises the right error or charges above the
# hold. The idempotency key is stored last, with the result; a key taken meanwhile by a
# concurrent request shows as `recorded` 0 and the caller rolls back.
SETTLE_PG = text(
    f"""
WITH taken AS (
    UPDATE holds SET status = 'settled'
    WHERE id = CAST(:hold_id AS VARCHAR) AND status = 'open' AND amount >= CAST(:cost AS BIGINT)
    RETURNING account_id, key_id, amount
), held AS (
    UPDATE ledger_accounts l SET balance = l.balance - t.amount
    FROM taken t WHERE l.id = CAST(:holds_prefix AS VARCHAR) || t.account_id
    RETURNING l.balance
), wallet AS (
    UPDATE ledger_accounts l SET balance = l.balance + t.amount - CAST(:cost AS BIGINT)
    FROM taken t WHERE l.id = CAST(:wallet_prefix AS VARCHAR) || t.account_id AND EXISTS (SELECT 1 FROM held)
    RETURNING l.balance
{USAGE_AND_TRANSFER}), legs AS (
    INSERT INTO entries (transfer_id, ledger_account, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), leg.account, leg.amount, CAST(:now AS TIMESTAMP)
    FROM taken t, LATERAL (VALUES (CAST(:holds_prefix AS VARCHAR) || t.account_id, -t.amount),
                                  (CAST(:wallet_prefix AS VARCHAR) || t.account_id, t.amount - CAST(:cost AS BIGINT)),
                                  (CAST(:revenue AS VARCHAR), CAST(:cost AS BIGINT))) AS leg(account, amount)
    WHERE leg.amount <> 0
), spend AS (
    UPDATE key_spend s SET held = s.held - t.amount, spent = s.spent + CAST(:cost AS BIGINT)
    FROM taken t, wallet WHERE s.key_id = t.key_id AND t.key_id <> ''
), recorded AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT 'settle', CAST(:key AS VARCHAR), CAST(:params_hash AS VARCHAR),
           json_build_object('charged_micros', CAST(:cost AS BIGINT),
                             'released_micros', t.amount - CAST(:cost AS BIGINT), 'shortfall_micros', 0,
                             'usage_id', CAST(:usage_id AS VARCHAR), 'balance_micros', wallet.balance)::text,
           CAST(:key_created AS TIMESTAMP)
    FROM taken t, wallet
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT amount FROM taken) AS amount,
       (SELECT balance FROM wallet) AS balance,
       (SELECT count(*) FROM recorded) AS recorded
"""
)


# A credit lease's draw (issue 15) within what is left of the lease in one statement, for
# PostgreSQL (the single draw's path when 0 < cost <= the lease's amount; past it, on an
# ended lease, for cost 0 and on SQLite the draw runs step by step, `Holds._draw_steps`).
# `taken` lowers the open hold's amount by the cost (its row lock first), `held` debits the
# holds account, then `spend` moves the cost from the key's held spend to its spent (`spend`
# reads `held`): the one lock order of every path. The wallet does not change, so its balance
# for the result is read, not locked, as the step path reads it (here as of the statement's
# start); revenue has no balance row. Everything reads `taken`, so nothing is written when
# the hold is not open, holds less than the cost, or the cost is 0: the caller then takes the
# step path in the same transaction. The idempotency key is stored last, with the result, as
# `SETTLE_PG` stores it (`released_micros` 0); a key taken meanwhile shows as `recorded` 0 and
# the caller rolls back.
DRAW_PG = text(
    f"""
WITH taken AS (
    UPDATE holds SET amount = amount - CAST(:cost AS BIGINT)
    WHERE id = CAST(:hold_id AS VARCHAR) AND status = 'open' AND amount >= CAST(:cost AS BIGINT)
          AND CAST(:cost AS BIGINT) > 0
    RETURNING account_id, key_id, amount
), held AS (
    UPDATE ledger_accounts l SET balance = l.balance - CAST(:cost AS BIGINT)
    FROM taken t WHERE l.id = CAST(:holds_prefix AS VARCHAR) || t.account_id
    RETURNING l.balance
), wallet AS (
    SELECT coalesce(l.balance, 0) AS balance
    FROM taken t LEFT JOIN ledger_accounts l ON l.id = CAST(:wallet_prefix AS VARCHAR) || t.account_id
    WHERE EXISTS (SELECT 1 FROM held)
{USAGE_AND_TRANSFER}), legs AS (
    INSERT INTO entries (transfer_id, ledger_account, amount, created_at)
    SELECT CAST(:transfer_id AS VARCHAR), leg.account, leg.amount, CAST(:now AS TIMESTAMP)
    FROM taken t, LATERAL (VALUES (CAST(:holds_prefix AS VARCHAR) || t.account_id, -CAST(:cost AS BIGINT)),
                                  (CAST(:revenue AS VARCHAR), CAST(:cost AS BIGINT))) AS leg(account, amount)
    WHERE leg.amount <> 0
), spend AS (
    UPDATE key_spend s SET held = s.held - CAST(:cost AS BIGINT), spent = s.spent + CAST(:cost AS BIGINT)
    FROM taken t, held WHERE s.key_id = t.key_id AND t.key_id <> ''
), recorded AS (
    INSERT INTO idempotency (scope, key, params_hash, result, created_at)
    SELECT 'settle', CAST(:key AS VARCHAR), CAST(:params_hash AS VARCHAR),
           json_build_object('charged_micros', CAST(:cost AS BIGINT), 'released_micros', 0, 'shortfall_micros', 0,
                             'usage_id', CAST(:usage_id AS VARCHAR), 'balance_micros', wallet.balance)::text,
           CAST(:key_created AS TIMESTAMP)
    FROM wallet
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT amount FROM taken) AS amount,
       (SELECT balance FROM wallet) AS balance,
       (SELECT count(*) FROM recorded) AS recorded
"""
)
