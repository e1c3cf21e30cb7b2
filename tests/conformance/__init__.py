"""Conformance scenarios (data in ``scenarios/``) and the Python SDK's conformance worker."""
