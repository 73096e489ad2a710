"""Wall-display links: only admins create and revoke them (both audited), the link is shown once, the kiosk page
opens without a login, is audited, shows only the environments it was made for and has no buttons; a forged
link is a 404 and a revoked one a 403."""

from __future__ import annotations

import re

import pytest
from live_support import reset_local_state
from pages_support import environment, make_user

from dashboard.live.models import DisplayLink
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_live_state():
    reset_local_state()
    yield
    reset_local_state()


def create_link(client, **fields) -> tuple[DisplayLink, str]:
    created = client.post("/displays/", {"time_zone": "UTC", **fields})
    assert created.status_code == 302, created.content.decode()[:2000]
    response = client.get(created["Location"])
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    match = re.search(
        r"<code data-display-url>(http://testserver/display/([^/<]+)/)</code>", response.content.decode()
    )
    assert match, "the new link is shown"
    return DisplayLink.objects.get(name=fields["name"]), match.group(2)


def test_only_admins_may_manage_display_links(client, upstream):
    for role in ("viewer", "operator"):
        client.force_login(make_user(role))
        assert client.get("/displays/").status_code == 403
        assert client.post("/displays/", {"name": "sneaky"}).status_code == 403
    assert not DisplayLink.objects.exists()
    assert AuditEntry.objects.filter(outcome="denied").count() == 2
    client.logout()
    assert client.get("/displays/").status_code == 302


def test_an_admin_creates_a_link_shown_once_and_audited(client, upstream):
    shown, _ = environment(upstream, "Payments")
    environment(upstream, "Search")
    client.force_login(make_user("admin"))
    page = client.get("/displays/").content.decode()
    assert "Payments" in page and "Search" in page
    link, token = create_link(client, name="NOC wall", environments=[shown["id"]], time_zone="Europe/Paris")
    assert link.environments == [shown["id"]] and link.time_zone == "Europe/Paris"
    assert token not in link.nonce_hash
    entry = AuditEntry.objects.get(action="display_link_created")
    assert entry.username == "admin" and entry.outcome == "succeeded" and entry.token_name == "NOC wall"
    # Listed afterwards, without its address.
    listing = client.get("/displays/").content.decode()
    assert "NOC wall" in listing and token not in listing


def test_a_link_needs_a_name_known_environments_and_a_real_time_zone(client, upstream):
    client.force_login(make_user("admin"))
    response = client.post(
        "/displays/", {"name": "", "environments": ["env_nope"], "time_zone": "Mars/Olympus"}
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert "Give the display a name" in text and "Pick environments from the list" in text
    assert "Pick a time zone" in text
    assert not DisplayLink.objects.exists()


def test_the_kiosk_page_opens_without_login_is_audited_and_has_no_buttons(client, upstream):
    shown, _ = environment(upstream, "Payments <prod>")
    hidden, _ = environment(upstream, "Hidden")
    admin = make_user("admin")
    client.force_login(admin)
    link, token = create_link(client, name="Ops room", environments=[shown["id"]])
    client.logout()

    response = client.get(f"/display/{token}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'id="wall-{shown["id"]}"' in page and hidden["id"] not in page
    assert "Payments &lt;prod&gt;" in page and "<prod>" not in page
    assert f'ws-connect="/ws/display/{token}/?env={shown["id"]}"' in page
    assert "<button" not in page and "<form" not in page
    assert "<script>" not in page and "data-clock" in page and 'data-time-zone="UTC"' in page
    assert response["Referrer-Policy"] == "no-referrer"
    entry = AuditEntry.objects.get(action="display_opened")
    assert entry.via == "display" and entry.token_name == "Ops room" and entry.username == ""
    link.refresh_from_db()
    assert link.last_opened_at is not None


def test_a_forged_link_is_404_and_a_revoked_one_403(client, upstream):
    environment(upstream, "Payments")
    client.force_login(make_user("admin"))
    link, token = create_link(client, name="Lobby")
    client.logout()
    assert client.get(f"/display/{token[:-3]}xyz/").status_code == 404
    assert client.get("/display/garbage/").status_code == 404

    client.force_login(make_user("admin", username="admin2"))
    assert "Say why" in client.post(f"/displays/{link.pk}/revoke").content.decode()
    assert client.post(f"/displays/{link.pk}/revoke", {"reason": "screen stolen"}).status_code == 302
    client.logout()
    link.refresh_from_db()
    assert (
        link.revoked_at is not None and link.revoked_by is not None and link.revoked_by.username == "admin2"
    )
    assert AuditEntry.objects.filter(action="display_link_revoked", username="admin2").exists()
    response = client.get(f"/display/{token}/")
    assert response.status_code == 403
    assert "revoked" in response.content.decode()
    assert not AuditEntry.objects.filter(action="display_opened").exists()


def test_a_link_for_every_environment_shows_each_of_them(client, upstream):
    first, _ = environment(upstream, "Alpha")
    second, _ = environment(upstream, "Beta")
    client.force_login(make_user("admin"))
    _, token = create_link(client, name="All")
    client.logout()
    page = client.get(f"/display/{token}/").content.decode()
    assert f'id="wall-{first["id"]}"' in page and f'id="wall-{second["id"]}"' in page


def test_openings_of_a_link_are_audited_once_an_hour_with_their_count(client, upstream):
    from datetime import timedelta

    from django.utils import timezone

    link = DisplayLink(name="Lobby", environments=[])
    token = link.issue_token()
    link.save()
    for _ in range(5):
        assert client.get(f"/display/{token}/").status_code == 200

    entries = AuditEntry.objects.filter(action="display_opened")
    assert [entry.sent["openings"] for entry in entries] == [1]
    # An hour on, the next opening is audited with the four before it.
    DisplayLink.objects.filter(pk=link.pk).update(
        last_audited_at=timezone.now() - timedelta(hours=1, seconds=1)
    )
    assert client.get(f"/display/{token}/").status_code == 200
    assert sorted(entry.sent["openings"] for entry in entries.all()) == [1, 5]


def qr_modules(svg: str) -> list[list[int]]:
    """The dark modules of a QR code drawn by segno as one SVG path (horizontal runs, 4 modules of border)."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    grid = [[0] * size for _ in range(size)]
    x = y = 0.0
    path = re.search(r'<path class="qrline"[^>]* d="([^"]+)"', svg).group(1)
    for command, first, second in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path):
        if command == "M":
            x, y = float(first), float(second)
        elif command == "m":
            x, y = x + float(first), y + float(second)
        else:
            for column in range(int(x), int(x) + int(first)):
                grid[int(y)][column] = 1
            x += int(first)
    return [row[4 : size - 4] for row in grid[4 : size - 4]]


def test_the_new_link_is_shown_once_as_a_qr_code_of_its_address(client, upstream):
    import segno

    environment(upstream, "Payments")
    client.force_login(make_user("admin"))
    created = client.post("/displays/", {"name": "NOC wall", "time_zone": "UTC"})
    page = client.get(created["Location"]).content.decode()
    url = re.search(r"<code data-display-url>([^<]+)</code>", page).group(1)
    token = url.rstrip("/").rsplit("/", 1)[1]
    svg = re.search(r"<figure class=\"qr\" data-display-qr>\s*(<svg.*?</svg>)", page, re.S).group(1)
    # The code on the page is the one for exactly this address (segno draws the same symbol for the same text).
    expected = [list(row) for row in segno.make(url, error="m").matrix]
    assert qr_modules(svg) == expected
    # The picture adds no copy of the secret as text, and it is gone with the address on a reload.
    assert token not in svg
    assert page.count(token) == 2  # the address shown, and its copy button
    again = client.get(created["Location"])
    assert again.status_code == 302 and again["Location"] == "/displays/"
    listing = client.get("/displays/").content.decode()
    assert "data-display-qr" not in listing and token not in listing
