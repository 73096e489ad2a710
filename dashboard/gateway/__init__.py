"""The gateway for scripts: the Work API's own paths under ``/gateway/``, behind personal access tokens, the
dashboard's roles, reasons, rate limits and audit log. The token pages (``/tokens/``) live here too."""
