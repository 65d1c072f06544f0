"""The segment service (thin gRPC adapter)."""
