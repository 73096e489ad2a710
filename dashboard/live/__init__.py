"""The live layer: one upstream feed per environment fanned out over websockets, queue history, wall displays.

- ``feed``: the runtime that decides which environments are watched, holds one feed per environment across all
  instances (``coordination``), polls the upstream, renders each snapshot once (``snapshots``) and publishes it.
- ``consumers`` / ``routing``: the websocket endpoints the pages and the wall display connect to.
- ``models``: queue-depth history samples and display links.
- ``views``: the display-link admin page, the kiosk page, ``/readyz`` and ``/metrics``.
- ``metrics``: the Prometheus metrics and the instrumented HTTP transport for upstream calls.
"""
