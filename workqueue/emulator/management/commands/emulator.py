"""``manage.py emulator``: migrate the emulator's database and serve the Work API emulator alone with uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from workqueue.emulator.asgi import build_application
from workqueue.emulator.seed import seed


class Command(BaseCommand):
    help = (
        "Serve the local Work API emulator (its own database, /v1/ routes and the /_emulator/ admin surface)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8100, help="port to listen on (default 8100)")
        parser.add_argument(
            "--seed", action="store_true", help="create example environments with work in them"
        )
        parser.add_argument(
            "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", "emulator", database="emulator", interactive=False, verbosity=0)
        if options["seed"]:
            seed(self.stdout)
        # 4xx answers are the emulator doing its job (401, 409, 412...): not worth a log line each.
        logging.getLogger("django.request").setLevel(logging.ERROR)
        app = build_application()
        self.stdout.write(f"Work API emulator on http://{options['addr']}:{options['port']}/")
        self.stdout.flush()
        uvicorn.run(
            app,
            host=options["addr"],
            port=options["port"],
            log_level=options["log_level"],
            access_log=False,
            lifespan="off",
        )
