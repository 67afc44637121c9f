"""HTTP routes: each adapts a request to a worker-side call and back."""
