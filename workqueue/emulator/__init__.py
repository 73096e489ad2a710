"""A local emulator of the Work API: the upstream's ``/v1/`` paths and semantics, plus a private ``/_emulator/``
admin surface. Its state lives in the ``emulator`` database alias, apart from the dashboard's."""
