"""nats-py over TLS against petrel (a second client language for TLS).

Certificates are made here with the openssl command (a throwaway CA and a
server certificate for 127.0.0.1), never checked in."""

import asyncio
import os
import shutil
import ssl
import subprocess
import tempfile

import pytest
import nats

from test_nats_py import Server, ready


def make_pki(d, san="IP:127.0.0.1,DNS:localhost"):
    """A throwaway CA and a server certificate for `san` in `d`."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=petrel test CA",
        "-keyout", f"{d}/ca-key.pem", "-out", f"{d}/ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=petrel", "-keyout", f"{d}/server-key.pem",
        "-out", f"{d}/server.csr")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write(f"subjectAltName={san}\n")
    run("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca-key.pem",
        "-CAcreateserial", "-days", "2", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/server.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")
def test_nats_py_pub_sub_and_request_over_tls():
    d = tempfile.mkdtemp()
    make_pki(d)
    server = Server("--tls", "--tlscert", f"{d}/server.pem", "--tlskey", f"{d}/server-key.pem", "--shards", "2")
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")

    async def body():
        nc = await nats.connect(server.url, tls=ctx, allow_reconnect=False)
        responder = await nats.connect(server.url, tls=ctx, allow_reconnect=False)
        got = []
        fut = asyncio.get_running_loop().create_future()

        async def on_msg(m):
            got.append(m.data)
            if not fut.done():
                fut.set_result(True)

        async def on_req(m):
            await responder.publish(m.reply, b"pong")

        await nc.subscribe("secure", cb=on_msg)
        await responder.subscribe("svc", cb=on_req)
        await ready(nc)
        await ready(responder)
        await nc.publish("secure", b"over tls")
        await asyncio.wait_for(fut, 5)
        assert got == [b"over tls"]
        r = await nc.request("svc", b"ping", timeout=5)
        assert r.data == b"pong"
        await nc.close()
        await responder.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 30))
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")
def test_nats_py_on_an_allow_non_tls_server():
    """nats-py starts TLS only when INFO says tls_required, so on an
    allow_non_tls server (INFO: tls_available) it stays plain even with a
    TLS context, as it does against nats-server; both kinds talk."""
    d = tempfile.mkdtemp()
    make_pki(d)
    conf = f'allow_non_tls: true\ntls {{ cert_file: "{d}/server.pem", key_file: "{d}/server-key.pem" }}\n'
    server = Server(conf=conf)
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")

    async def body():
        plain = await nats.connect(server.url, allow_reconnect=False)
        with_ctx = await nats.connect(server.url, tls=ctx, allow_reconnect=False)
        assert plain._server_info.get("tls_available") is True
        assert "tls_required" not in plain._server_info
        sub = await plain.subscribe("mixed")
        await ready(plain)
        await with_ctx.publish("mixed", b"hello")
        m = await sub.next_msg(timeout=5)
        assert m.data == b"hello"
        await plain.close()
        await with_ctx.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 30))
    finally:
        server.stop()
