"""fmpipe pipelines: DAG wiring, the local runner, compile, and the CLI."""
