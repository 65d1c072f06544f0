"""The translate service (thin gRPC adapter)."""
