"""nats-py over WebSocket (its aiohttp transport) against petrel: the
second client language for WebSocket, next to async-nats in
tests/websocket.rs."""

import asyncio
import re

import nats

from test_nats_py import Server, ready

CONF = """
websocket {
  host: 127.0.0.1
  port: -1
  no_tls: true
  compression: true
}
"""


def ws_url(server):
    for line in server.log:
        m = re.search(r"Listening for websocket clients on ws://(.*):(\d+)", line)
        if m:
            return f"ws://{m.group(1)}:{m.group(2)}"
    raise AssertionError("no websocket listening line:\n" + "".join(server.log))


def test_nats_py_pub_sub_and_request_over_websocket():
    server = Server("--shards", "2", conf=CONF)
    url = ws_url(server)

    async def body():
        nc = await nats.connect(url, allow_reconnect=False)
        tcp = await nats.connect(server.url, allow_reconnect=False)
        got = []
        fut = asyncio.get_running_loop().create_future()

        async def on_msg(m):
            got.append((m.subject, m.data))
            if len(got) == 2 and not fut.done():
                fut.set_result(True)

        async def on_req(m):
            await m.respond(b"ws:" + m.data)

        await nc.subscribe("web.>", cb=on_msg)
        await nc.subscribe("svc", cb=on_req)
        await ready(nc)
        await ready(tcp)
        await tcp.publish("web.from_tcp", b"hello")
        await nc.publish("web.from_ws", b"x" * 100_000)
        await asyncio.wait_for(fut, 5)
        assert sorted(got) == [("web.from_tcp", b"hello"), ("web.from_ws", b"x" * 100_000)]
        reply = await tcp.request("svc", b"ping", timeout=5)
        assert reply.data == b"ws:ping"
        await nc.close()
        await tcp.close()

    try:
        asyncio.run(body())
    finally:
        server.stop()
