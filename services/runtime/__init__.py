"""What every Gatemesh service needs: settings, server bootstrap, telemetry, database and
Redis clients, access control and error mapping. One way to do each thing, shared."""
