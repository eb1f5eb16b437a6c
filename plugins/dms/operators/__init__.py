"""One operator per pipeline step: extract, transform, load, reconcile."""
