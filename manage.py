#!/usr/bin/env python
"""Django's command-line utility for the dashboard, and for the Work API emulator (``manage.py emulator``, with the
emulator's own settings)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["emulator"]:
        # The emulator is a process of its own, with settings of its own.
        os.environ["DJANGO_SETTINGS_MODULE"] = "workqueue.emulator.settings"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
