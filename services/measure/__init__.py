"""The measure service (thin gRPC adapter)."""
