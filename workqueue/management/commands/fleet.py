"""``manage.py fleet``: run the simulated worker fleet (``workqueue.fleet``) against a Work API.

Environments come from ``--environment ENV_ID=ENV_KEY`` (repeatable) or, with ``--from-emulator``, from the local
emulator's admin surface. A summary line is printed every ``--report-every`` seconds and once more at the end; no
key or token is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workqueue.errors import InvalidID
from workqueue.fleet import Fleet, FleetConfig, FleetEnvironment
from workqueue.ids import validate_environment_id


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        bounds = (float(low), float(high)) if sep else (float(low), float(low))
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a range like 5:30") from None
    if bounds[0] < 0 or bounds[1] < bounds[0]:
        raise ArgumentTypeError(f"{text!r} is not a range MIN:MAX with 0 <= MIN <= MAX")
    return bounds


def _environment(text: str) -> FleetEnvironment:
    environment_id, sep, key = text.partition("=")
    if not sep or not key:
        # Nothing of the value is repeated back: without its "=", it may be a bare key.
        raise ArgumentTypeError("expected ENV_ID=ENV_KEY")
    try:
        validate_environment_id(environment_id)
    except InvalidID as exc:
        raise ArgumentTypeError(exc.message) from None
    return FleetEnvironment(environment_id=environment_id, environment_key=key)


class Command(BaseCommand):
    help = "Run a simulated fleet of self-hosted workers (some misbehaving) against a Work API."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--base-url",
            default=None,
            help="Work API base URL (default: ANTHROPIC_BASE_URL, i.e. the local emulator)",
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--environment",
            action="append",
            type=_environment,
            dest="environments",
            metavar="ENV_ID=ENV_KEY",
            help="an environment to serve and its environment key (repeatable)",
        )
        source.add_argument(
            "--from-emulator",
            action="store_true",
            help="serve every self-hosted environment of the emulator at --base-url, with the keys it reports",
        )
        parser.add_argument(
            "--api-key",
            default=None,
            help="the emulator's admin API key, for --from-emulator and the producer (default: EMULATOR_API_KEY)",
        )
        parser.add_argument("--workers-per-env", type=int, default=3)
        parser.add_argument(
            "--crash", type=_fraction, default=0.0, help="share of workers that crash mid-lease"
        )
        parser.add_argument(
            "--ignore-stop", type=_fraction, default=0.0, help="share of workers that never honour a stop"
        )
        parser.add_argument("--slow-ack", type=_fraction, default=0.0, help="share of workers slow to ack")
        parser.add_argument(
            "--enqueue-per-minute",
            type=float,
            default=0.0,
            help="new work items per minute per environment, through the emulator's admin surface (0: none)",
        )
        parser.add_argument(
            "--workers-per-client",
            type=int,
            default=FleetConfig.workers_per_client,
            help="workers sharing one HTTP connection pool (0: one pool for the whole fleet)",
        )
        parser.add_argument("--work-seconds", type=_range, default=(5.0, 30.0), metavar="MIN:MAX")
        parser.add_argument("--slow-ack-seconds", type=_range, default=(6.0, 12.0), metavar="MIN:MAX")
        parser.add_argument("--desired-ttl", type=int, default=None, help="desired_ttl_seconds on heartbeats")
        parser.add_argument(
            "--duration", type=float, default=0.0, help="seconds to run (0: until interrupted)"
        )
        parser.add_argument("--report-every", type=float, default=10.0, help="seconds between summary lines")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        base_url: str = options["base_url"] or settings.ANTHROPIC_BASE_URL
        api_key: str = options["api_key"] or os.environ.get("EMULATOR_API_KEY", "sk-ant-api03-emulator")
        if options["workers_per_env"] < 1:
            raise CommandError("--workers-per-env must be at least 1")
        if options["duration"] < 0 or options["report_every"] <= 0:
            raise CommandError("--duration must be >= 0 and --report-every > 0")
        if options["enqueue_per_minute"] < 0:
            raise CommandError("--enqueue-per-minute must not be negative")
        try:
            config = FleetConfig(
                workers_per_env=options["workers_per_env"],
                crash=options["crash"],
                ignore_stop=options["ignore_stop"],
                slow_ack=options["slow_ack"],
                work_seconds=options["work_seconds"],
                workers_per_client=options["workers_per_client"],
                slow_ack_seconds=options["slow_ack_seconds"],
                desired_ttl_seconds=options["desired_ttl"],
                enqueue_per_minute=options["enqueue_per_minute"],
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        control = None
        if options["from_emulator"] or config.enqueue_per_minute > 0:
            from workqueue.emulator.control import EmulatorControl

            control = EmulatorControl(base_url, api_key)
        if options["from_emulator"]:
            assert control is not None
            environments = self._emulator_environments(control)
        else:
            environments = options["environments"]
        if not environments:
            raise CommandError("no self-hosted environment to serve")

        enqueue = None
        if control is not None and config.enqueue_per_minute > 0:
            emulator = control

            def enqueue(environment_id: str) -> object:
                return emulator.enqueue(environment_id, metadata={"origin": "fleet"})

        fleet = Fleet(base_url, environments, config, enqueue=enqueue)
        ids = ", ".join(env.environment_id for env in environments)
        self.stdout.write(f"fleet: serving {ids} at {base_url}")
        # Ctrl-C cancels the run, which shuts the fleet down gracefully before the last summary.
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._run(fleet, options["duration"], options["report_every"]))
        self.stdout.write(fleet.summary())

    def _emulator_environments(self, control: Any) -> list[FleetEnvironment]:
        try:
            entries = control.environments()
        except Exception as exc:
            raise CommandError(f"could not list the emulator's environments: {type(exc).__name__}") from None
        found = []
        for entry in entries:
            environment = entry.get("environment") or {}
            config = environment.get("config") or {}
            if environment.get("archived_at") or config.get("type", "self_hosted") != "self_hosted":
                continue
            found.append(
                FleetEnvironment(environment_id=environment["id"], environment_key=entry["environment_key"])
            )
        return found

    async def _run(self, fleet: Fleet, duration: float, report_every: float) -> None:
        async def report() -> None:
            while True:
                await asyncio.sleep(report_every)
                self.stdout.write(fleet.summary())

        reporter = asyncio.create_task(report())
        try:
            await fleet.run(duration or None)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
