"""Device runtime adapters."""
