"""The gateway service (thin gRPC adapter)."""
