"""Push and pull models to and from OCI distribution registries, as Ollama does.

Any registry that speaks the distribution API works: ``registry.ollama.ai`` for public
models, ``ghcr.io``, Docker's ``registry:2`` (CNCF distribution), Harbor, and so on. The
model name's host is the registry and ``namespace/model`` the repository; https unless
``insecure`` (plain http, for a local registry). Credentials: see ``auth.py``.

Modules, each readable on its own: ``transport`` (one HTTP exchange), ``auth``
(credentials, challenges, tokens), ``client`` (one repository: auth retries, redirects,
errors), ``partial`` (a resumable download on disk), ``pulling``, ``pushing``.
"""

from __future__ import annotations

from modelkit.registry.auth import Credentials, find_credentials
from modelkit.registry.pulling import PullResult, ensure_model, pull
from modelkit.registry.pushing import PushResult, push

__all__ = ["Credentials", "PullResult", "PushResult", "ensure_model", "find_credentials",
           "pull", "push"]
