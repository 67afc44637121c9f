"""The service: drain a key, apply its jobs, finish them; transactions, the reconciler, callbacks."""
