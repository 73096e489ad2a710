"""Fan-out inside a process: the channel layer carries one message per group to the process's relay, whatever the
number of sockets, and the relay hands the same text to each local socket; a socket that stops reading is closed
so that it reconnects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from live_support import communicator, receive_matching, session_cookie
from pages_support import environment, make_user

from dashboard.live import fanout
from dashboard.live.consumers import LiveConsumer
from dashboard.live.feed import group_name

pytestmark = pytest.mark.django_db(transaction=True)


def layer_members(group: str) -> set[str]:
    return set(get_channel_layer().groups.get(group, {}))


async def test_one_channel_layer_member_per_process_whatever_the_sockets(live_runtime, upstream):
    env, _ = await sync_to_async(environment)(upstream, "crowd")
    cookie = await session_cookie(await sync_to_async(make_user)("viewer"))
    viewers = [communicator(f"/ws/live/{env['id']}/", cookie=cookie) for _ in range(5)]
    for comm in viewers:
        assert (await comm.connect())[0]
    relay = live_runtime.relay
    group = group_name("environment", env["id"])
    assert layer_members(group) == {relay.channel}
    assert len(relay.members[group]) == 5
    await sync_to_async(upstream.enqueue)(env["id"])
    frames = [await receive_matching(comm, r'data-figure="depth">1<') for comm in viewers]
    assert len(set(frames)) == 1
    for comm in viewers[:-1]:
        await comm.disconnect()
    assert layer_members(group) == {relay.channel}
    await viewers[-1].disconnect()
    # The last local socket gone, the process leaves the group: the feed's messages no longer come here.
    assert layer_members(group) == set()
    assert group not in relay.members


async def test_a_socket_that_stops_reading_is_closed_to_reconnect():
    sent: list[dict[str, Any]] = []

    async def base_send(message: dict[str, Any]) -> None:
        sent.append(message)

    consumer = LiveConsumer()
    consumer.inbox = asyncio.Queue()
    consumer.behind = False
    consumer.base_send = base_send
    message = {"type": "live.item", "text": "<div></div>", "group": "g"}
    for _ in range(fanout.INBOX_LIMIT):
        consumer.deliver(message)
    assert consumer.inbox.qsize() == fanout.INBOX_LIMIT
    consumer.deliver(message)
    # What waited is dropped and the socket is told to close with 1013, which htmx answers by reconnecting.
    assert consumer.inbox.qsize() == 1
    behind = consumer.inbox.get_nowait()
    consumer.deliver(message)
    assert consumer.inbox.empty()
    await consumer.dispatch(behind)
    assert sent == [{"type": "websocket.close", "code": 1013}]
