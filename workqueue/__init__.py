"""Everything about Anthropic's self-hosted environments Work API, with no dashboard in it.

- ``workqueue.client``: the async httpx client, typed records, errors, the secret decoder.
- ``workqueue.poller``: the work poller (poll → ack → hand out → stop, with backoff).
- ``workqueue.emulator``: a local emulator of the upstream API (a Django app served by its own ASGI process).
- ``workqueue.fleet``: a simulated worker fleet for demos and benchmarks.
"""
