"""The classify service (thin gRPC adapter)."""
