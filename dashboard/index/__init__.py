"""The work index: every self-hosted environment's work items, kept in the dashboard's database.

- ``models``: the tables (a row per work item, each environment's sync state, item timelines, history samples).
  They belong to the ``dashboard`` app (``dashboard.models`` imports them), so their migrations are the app's.
- ``queries``: every read of the index pages and counts use: the stuck set, counts per state, paging both ways,
  search, freshness.
- ``sync``: how the live feed keeps the index in step with the upstream, within a request budget.
- ``history``: per-environment history samples, one a minute (written by the feed holding the lease), and their
  reads in bounded buckets for the environment page's charts (drawn by ``dashboard.live.sparkline``).

Nothing here renders a page; nothing outside ``sync`` (and the small ``record_answer`` hook actions call) and
``history`` (its samples) writes.
"""
