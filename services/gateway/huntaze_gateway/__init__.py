"""The HTTP gateway: FastAPI in, gRPC out."""

__version__ = "0.1.0"
