"""The auth service: accounts, sessions, API keys, key verification for the hot path,
rate limits, sign-in throttling, the security log and policy acceptance."""
