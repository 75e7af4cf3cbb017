"""Use cases shared by the admin API, the web console and the CLI: each takes a
:class:`~hookbay.ops.access.Principal` and applies the same scoping, validation and audit, so the
three interfaces stay thin and cannot drift apart."""
