"""The web console (``/ui/``): login, sources, live request tail, request detail and replay, mapping
playground, profiles with their consent ledger, deliveries and dead letters, traffic charts."""

from hookbay.console.app import create_console_app
from hookbay.console.base import Console

__all__ = ["Console", "create_console_app"]
