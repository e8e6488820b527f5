"""Adapters for serving HTTP: uvicorn protocol limits shared by the gateway and the worker's ops endpoint."""
