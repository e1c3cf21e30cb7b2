"""Tasker's domain layer: pure Python, no grpc, no sqlalchemy.

Modules: ``errors`` (exception tree), ``states`` (transition tables), ``retry`` (backoff),
``templates`` (YAML task templates), ``dag`` (dependency graphs), ``builder`` (YAML builder),
``access`` (roles, permissions, principals, the auth file).
"""
