"""The work index: every self-hosted environment's work items, kept in the dashboard's database.

- ``models``: the tables (a row per work item, each environment's sync state, item timelines, history samples).
  They belong to the ``dashboard`` app (``dashboard.models`` imports them), so their migrations are the app's.
- ``queries``: every read of the index pages and counts use: the stuck set, counts per state, paging both ways,
  search, freshness.
- ``sync``: how the live feed keeps the index in step with the upstream, within a request budget.
- ``history``: item timelines and per-environment history samples, and the chart drawn from them.

Nothing here renders a page; nothing outside ``sync`` (and the small ``record_answer`` hook actions call) writes.
"""
