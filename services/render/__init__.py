"""The render service (thin gRPC adapter)."""
