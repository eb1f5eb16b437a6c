"""Developer tooling: the local stack, settings and the demo (not part of the deployed DAGs)."""
