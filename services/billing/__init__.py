"""The billing service: the ledger, holds, prices, usage records and top-ups."""
