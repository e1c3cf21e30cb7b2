"""The SDK version, sent to the server in the worker hello."""

__version__ = "0.1.0"
