"""``EmulatorControl``: a small synchronous client of a running emulator's ``/_emulator/`` admin surface, for tests,
benchmarks and the demo. It speaks only to the emulator, never to the real API."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControl:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, f"/_emulator/{path}", json=json)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        try:
            return self._http.get("/_emulator/health").json().get("ok") is True
        except (httpx.HTTPError, ValueError):
            return False

    def reset(self) -> None:
        self._call("POST", "reset")

    def environments(self) -> list[dict[str, Any]]:
        """Every environment with its environment key: ``[{"environment": {...}, "environment_key": "..."}]``."""
        data: list[dict[str, Any]] = self._call("GET", "environments")["data"]
        return data

    def create_environment(self, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
        """A new self-hosted environment (unless ``config`` says otherwise) and its environment key."""
        created = self._call("POST", "environments", {"name": name, **fields})
        return created["environment"], created["environment_key"]

    def enqueue(
        self, env_id: str, type: str = "session", metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type}
        if metadata is not None:
            body["metadata"] = metadata
        item: dict[str, Any] = self._call("POST", f"environments/{env_id}/work", body)
        return item

    def bulk_create(self, env_id: str, *groups: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Many items at once: ``bulk_create(env, {"count": 2500, "state": "stopped", "age_seconds": 3000})``
        (group fields: ``engine.bulk_create``). Answers ``{"count", "ids" (up to 1,000 items), ...}``."""
        response = self._http.post(
            f"/_emulator/environments/{env_id}/work/bulk", json={"groups": list(groups)}, timeout=timeout
        )
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def server_stop(self, env_id: str, work_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self._call("POST", f"environments/{env_id}/work/{work_id}/server-stop")
        return item

    def expire_lease(self, env_id: str, work_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self._call("POST", f"environments/{env_id}/work/{work_id}/expire-lease")
        return item

    def set_fault(self, **fault: Any) -> dict[str, Any]:
        """e.g. ``set_fault(route="stats", status=503, retry_after=2, count=3)``; see ``faults.Fault``."""
        created: dict[str, Any] = self._call("POST", "faults", fault)
        return created

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def requests(self) -> dict[str, Any]:
        counts: dict[str, Any] = self._call("GET", "requests")
        return counts

    def environment_requests(self, env_id: str) -> int:
        """Requests the emulator has served for one environment's routes since the counters were last reset."""
        return int(self.requests().get("by_environment", {}).get(env_id, {}).get("total", 0))

    def reset_requests(self) -> None:
        self._call("DELETE", "requests")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        clock: dict[str, Any] = self._call("POST", "clock", {"advance_seconds": seconds})
        return clock

    def clock(self) -> dict[str, Any]:
        clock: dict[str, Any] = self._call("GET", "clock")
        return clock
