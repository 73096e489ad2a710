"""Per-person rate limit: a token bucket kept in the database, so every dashboard instance draws from the same one.

Each person (all their access tokens together: minting more tokens buys no more calls) has a bucket of at most ``GATEWAY_RATE_BURST`` calls that refills at ``GATEWAY_RATE_PER_MINUTE``.
Taking a call is one SQL UPDATE that refills and decrements in the same statement, guarded by "at least one call
left", so two instances racing on one bucket cannot both spend the last call (the database serialises the
writes; no row lock or read-modify-write in Python). The database rather than the cache because the dashboard's
default cache is per process, and the database is the one store every instance already shares.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError
from django.db.models import F, FloatField, Value
from django.db.models.functions import Greatest, Least
from django.db.models.lookups import GreaterThanOrEqual

from dashboard.gateway.models import RateBucket


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds until one call is available again (the ``retry-after`` header)


def _limits() -> tuple[float, float]:
    per_minute = float(max(1, settings.GATEWAY_RATE_PER_MINUTE))
    burst = float(max(1, settings.GATEWAY_RATE_BURST))
    return per_minute / 60.0, burst


async def take(user_id: int, now: float | None = None) -> Decision:
    """Spends one call from the person's bucket, or says how long to wait for one."""
    rate, burst = _limits()
    now = time.time() if now is None else now
    # Elapsed time is clamped at zero so an instance whose clock lags another's never drains a bucket.
    refilled = Least(
        Value(burst),
        F("tokens") + Greatest(Value(0.0), Value(now) - F("updated_at")) * Value(rate),
        output_field=FloatField(),
    )
    for _ in range(2):
        spent = await RateBucket.objects.filter(
            GreaterThanOrEqual(refilled, Value(1.0)), user_id=user_id
        ).aupdate(tokens=refilled - Value(1.0), updated_at=Greatest(F("updated_at"), Value(now)))
        if spent:
            return Decision(allowed=True)
        bucket = await RateBucket.objects.filter(user_id=user_id).afirst()
        if bucket is not None:
            available = min(burst, bucket.tokens + max(0.0, now - bucket.updated_at) * rate)
            return Decision(allowed=False, retry_after=max(1, math.ceil((1.0 - available) / rate)))
        try:
            await RateBucket.objects.acreate(user_id=user_id, tokens=burst - 1.0, updated_at=now)
            return Decision(allowed=True)
        except IntegrityError:
            continue  # another instance created it first: go round once more and spend from it
    return Decision(allowed=False, retry_after=1)
