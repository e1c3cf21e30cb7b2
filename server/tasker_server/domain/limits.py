"""Resource limits on what clients send: one frozen value, defaults here, overridden by settings.

Each limit is checked where the input is first read, before any work proportional to the input's
*expanded* size is done (YAML is refused while it is composed, not after it was built). The
server's ``Settings`` carry the configured values (``config.SETTINGS`` documents them); the
domain only sees this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one request's content.

    - ``template_bytes``: template YAML text, UTF-8 encoded.
    - ``template_nodes``: YAML nodes (scalars, lists, mappings) in one template, each alias
      counted as the nodes it repeats: this bounds the template's size after expansion.
    - ``nesting_depth``: how deeply lists and mappings nest, in template YAML and in every JSON
      value a client sends (task context, step results, error metadata).
    - ``steps_per_template``: step templates in one template.
    - ``payload_bytes``: a task context or a manually completed step result, serialized as
      compact JSON (worker-reported results keep the worker service's fixed 1 MiB check).
    """

    template_bytes: int = 256 * 1024
    template_nodes: int = 20_000
    nesting_depth: int = 32
    steps_per_template: int = 1000
    payload_bytes: int = 1024 * 1024


DEFAULT_LIMITS = Limits()
