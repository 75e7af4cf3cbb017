"""Direct HTTPS for ``serve`` (``--tls-cert``/``--tls-key``): the files are checked before the
server binds, so a wrong path or a key that does not match the certificate is one line and exit 2,
not a traceback from inside uvicorn's start-up."""

from __future__ import annotations

import ssl
from typing import Any

from hookbay.errors import HookbayError
from hookbay.settings import Settings


class TlsConfigError(HookbayError):
    code = "tls_config"
    message = "The TLS settings are not usable"


def tls_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` options for the certificate and key in ``settings``; none without TLS."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return {}
    if not cert or not key:
        missing = "--tls-cert (HOOKBAY_TLS_CERT)" if not cert else "--tls-key (HOOKBAY_TLS_KEY)"
        raise TlsConfigError(f"HTTPS needs both a certificate and its key: {missing} is not set")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise TlsConfigError(f"{e.filename or cert}: no such file") from None
    except PermissionError as e:
        raise TlsConfigError(f"{e.filename or cert}: permission denied (the server's user must read it)") from None
    except ssl.SSLError as e:
        reason = e.reason or str(e).splitlines()[0]
        raise TlsConfigError(f"{cert} and {key} are not a PEM certificate and its matching private key "
                             f"({reason})") from None
    return {"ssl_certfile": cert, "ssl_keyfile": key}
