"""Benchmarks of the dashboard, its live feed and the emulator: ``python -m bench`` (``make bench``).

Each benchmark prints figures measured side by side in one run (ours next to a baseline, through the dashboard next
to direct), starts and stops its own subprocesses in a temporary directory, and is bounded in time:

- ``upstream_cost``: upstream requests per environment per minute, 1 and 500 viewers, against per-screen polling;
- ``fanout``: from a published snapshot to the last of 1,000 websocket clients, in-memory layer and Redis;
- ``proxy``: the environment and work item pages through the dashboard against the same calls made directly;
- ``memory``: the server's resident memory per open websocket, idle and receiving;
- ``emulator``: polls, acks and heartbeats per second the emulator serves to the simulated fleet.

``harness`` holds what they share (workspace, server subprocesses, websocket viewers, results); ``prepare`` makes the
template databases they copy; ``__main__`` runs them and writes the table.
"""
