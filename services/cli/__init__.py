"""The `gatemesh` command line: `gatemesh up` runs the local mesh; operator commands talk to it."""
