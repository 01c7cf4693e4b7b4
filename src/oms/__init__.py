"""The order management service around the sourcing engine (gRPC, store, jobs)."""
