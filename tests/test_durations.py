"""A short duration reads the same from the server (``dashboard.durations.age_text``: stuck reasons, the first paint
of a counting age) and from the browser (``ageText`` in ``static/live.js``, once the counter runs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboard.durations import age_text

WORDING = [
    (0, "0 s"),
    (59.4, "59 s"),
    (60, "1 min"),
    (95, "1 min 35 s"),
    (192, "3 min 12 s"),
    (599, "9 min 59 s"),
    (612, "10 min"),
    (3600, "1 h"),
    (3725, "1 h 2 min"),
    (47 * 3600 + 60, "47 h 1 min"),
    (3 * 86400, "3 days"),
]


@pytest.mark.parametrize(("seconds", "words"), WORDING)
def test_the_server_words_a_duration(seconds, words):
    assert age_text(seconds) == words


def test_the_browser_words_it_the_same():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (Path(__file__).resolve().parent.parent / "static" / "live.js").read_text()
    match = re.search(r"^  function ageText\(seconds\) \{\n.*?^  \}\n", source, re.MULTILINE | re.DOTALL)
    assert match, "ageText is not in static/live.js"
    script = (
        match.group(0) + f"console.log(JSON.stringify({json.dumps([s for s, _ in WORDING])}.map(ageText)));"
    )
    ran = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(ran.stdout) == [words for _, words in WORDING]


def test_a_counting_age_over_an_hour_starts_in_the_words_it_counts_in():
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.templatetags.dashboard_pages import age

    html = str(age(timezone.now() - timedelta(seconds=3725)))
    assert ">1 h 2 min</span> ago" in html
