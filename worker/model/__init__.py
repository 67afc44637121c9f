"""The model: jobs, changes, results, transactions, the caller and its rights, the clock (pure, no I/O)."""
