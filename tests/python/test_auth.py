"""Authentication and authorization with the official Python client (nats-py).

Each test starts its own petrel (from PETREL_BIN) on a random loopback port
with a configuration file written to a temporary folder, and stops it by PID.
nkey and creds authentication in nats-py need the `nkeys` package (PyPI
`nkeys`, also pulled in by `nats-py[nkeys]`).

The operator-mode tests use the JWT fixtures made with the official Go
libraries (PETREL_JWT_FIXTURES, default `tests/fixtures/jwt`, a copy of the project's shared fixtures).
"""

import asyncio
import json
import os
import shutil
from pathlib import Path

import nats
import nkeys
import pytest

from test_nats_py import Server, ready

PETREL = os.environ.get("PETREL_BIN", "target/debug/petrel")
FIXTURES = Path(
    os.environ.get(
        "PETREL_JWT_FIXTURES",
        Path(__file__).resolve().parents[1] / "fixtures" / "jwt",
    )
)

# bcrypt (cost 10) of "bcrypt-pass", made with libxcrypt (Python's `crypt`),
# used when the `bcrypt` package is not installed. A test password's hash.
BCRYPT_PASS = "bcrypt-pass"
BCRYPT_HASH_FIXED = "$2b$10$yuwNv/fngyl/1gkNH3EbX.FEPwdwUvkX7PZWPeawogPZYhc9bwiOW"


def bcrypt_hash(password):
    try:
        import bcrypt
    except ImportError:
        assert password == BCRYPT_PASS
        return BCRYPT_HASH_FIXED
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()


def run(coro_fn, *flags, conf=None, cwd=None):
    if os.environ.get("PETREL_TEST_TRACE"):
        flags = (*flags, "-DV")
    server = Server("--shards", "2", *flags, conf=conf, cwd=cwd)
    try:
        asyncio.run(asyncio.wait_for(coro_fn(server), 60))
    except BaseException:
        print("".join(server.log))
        raise
    finally:
        server.stop()


class Errors:
    """An error_cb that keeps what it gets."""

    def __init__(self):
        self.items = []

    async def cb(self, e):
        self.items.append(str(e))

    async def wait_for(self, text, timeout=5):
        """Waits for an error containing `text`. nats-py lower-cases
        protocol errors ('nats: permissions violation for publish to "x"'),
        so the match ignores case; tests/auth_differential.rs checks the
        exact bytes."""
        for _ in range(int(timeout / 0.02)):
            if any(text.lower() in e.lower() for e in self.items):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no error containing {text!r}; got {self.items}")


async def connect(url, **opts):
    """A connection that does not retry: refusals surface at once."""
    errors = Errors()
    opts.setdefault("error_cb", errors.cb)
    nc = await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=5,
        **opts,
    )
    nc.errors = errors
    return nc


async def refused(url, **opts):
    """Connecting with `opts` fails with 'Authorization Violation'."""
    errors = Errors()
    try:
        nc = await connect(url, error_cb=errors.cb, **opts)
    except Exception as e:  # nats.errors.Error
        assert "Authorization Violation" in str(e) or "Authorization Violation" in " ".join(errors.items), (
            repr(e),
            errors.items,
        )
        return
    await nc.close()
    raise AssertionError(f"connected with {opts}")


async def roundtrip(pub, sub, subject, data=b"x"):
    """`sub` receives what `pub` publishes on `subject`."""
    got = asyncio.get_running_loop().create_future()

    async def cb(msg):
        if not got.done():
            got.set_result(msg)

    s = await sub.subscribe(subject, cb=cb)
    await ready(sub)
    await pub.publish(subject, data)
    await pub.flush()
    msg = await asyncio.wait_for(got, 5)
    assert msg.data == data
    await s.unsubscribe()


async def collect(nc, subject, **kw):
    """Subscribes and returns the list the messages land in."""
    got = []

    async def cb(msg):
        got.append((msg.subject, msg.data))

    await nc.subscribe(subject, cb=cb, **kw)
    await ready(nc)
    return got


def new_user_seed():
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def public_key(seed):
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


# ------------------------------------------------------------------ token


def test_token_auth():
    async def body(s):
        nc = await connect(s.url, token="s3cr3t")
        await roundtrip(nc, nc, "tok.ok")
        await nc.close()
        await refused(s.url, token="wrong")
        await refused(s.url)
        await refused(s.url, user="s3cr3t", password="x")

    run(body, conf='authorization { token: "s3cr3t" }\n')


def test_auth_flag_token():
    async def body(s):
        nc = await connect(s.url, token="flagtok")
        await nc.flush()
        await nc.close()
        await refused(s.url, token="nope")

    run(body, "--auth", "flagtok")


# ------------------------------------------------------------------ user/password


def test_user_password_plain_and_bcrypt():
    conf = f"""
authorization {{
  users = [
    {{user: alice, password: secret}}
    {{user: bob, password: "{bcrypt_hash(BCRYPT_PASS)}"}}
  ]
}}
"""

    async def body(s):
        alice = await connect(s.url, user="alice", password="secret")
        bob = await connect(s.url_with("bob", BCRYPT_PASS))
        await roundtrip(alice, bob, "up.a")
        await roundtrip(bob, alice, "up.b")
        await alice.close()
        await bob.close()
        await refused(s.url, user="alice", password="nope")
        await refused(s.url, user="bob", password="secret")
        # The hash itself is not the password.
        await refused(s.url, user="bob", password=bcrypt_hash(BCRYPT_PASS))
        await refused(s.url, user="carol", password="secret")
        await refused(s.url)

    run(body, conf=conf)


def test_user_pass_flags():
    async def body(s):
        nc = await connect(s.url, user="u", password="pw")
        await roundtrip(nc, nc, "flags.ok")
        await nc.close()
        await refused(s.url, user="u", password="bad")
        await refused(s.url)

    run(body, "--user", "u", "--pass", "pw")


# ------------------------------------------------------------------ nkeys


def test_nkey_user():
    seed = new_user_seed()
    other = new_user_seed()

    async def body(s):
        tmp = Path(s.tmp.name)
        (tmp / "user.nk").write_bytes(seed)
        (tmp / "other.nk").write_bytes(other)
        nc = await connect(s.url, nkeys_seed=str(tmp / "user.nk"))
        await roundtrip(nc, nc, "nk.ok")
        await nc.close()
        # A key the server does not know signs its nonce just as well.
        await refused(s.url, nkeys_seed=str(tmp / "other.nk"))
        await refused(s.url, user=public_key(seed), password="x")
        await refused(s.url)

    run(body, conf=f"authorization {{ users = [{{nkey: {public_key(seed)}}}] }}\n")


# ------------------------------------------------------------------ no_auth_user


def test_no_auth_user():
    conf = """
accounts {
  A { users: [{user: a, password: a}, {user: a2, password: a2}] }
  B { users: [{user: b, password: b}] }
}
no_auth_user: a
"""

    async def body(s):
        anon = await connect(s.url)
        a2 = await connect(s.url, user="a2", password="a2")
        b = await connect(s.url, user="b", password="b")
        # Without credentials the client is user a, in account A.
        await roundtrip(a2, anon, "same.account")
        await roundtrip(anon, a2, "same.account")
        b_got = await collect(b, ">")
        await anon.publish("same.account", b"hidden")
        await anon.flush()
        await asyncio.sleep(0.3)
        assert b_got == []
        # Credentials, when given, are still checked.
        await refused(s.url, user="a", password="wrong")
        for nc in (anon, a2, b):
            await nc.close()

    run(body, conf=conf)


# ------------------------------------------------------------------ permissions

PERMS_CONF = """
authorization {
  users = [
    {user: admin, password: admin}
    {user: limited, password: p, permissions: {
        publish: {allow: ["ok.>", "s.>"], deny: ["ok.no"]}
        subscribe: {allow: ["s.>", "ok.>", "t.x tq"], deny: ["s.secret", "s.q q"]}
    }}
    {user: resp, password: p, permissions: {subscribe: "svc", allow_responses: true}}
  ]
}
"""


def test_publish_permission_violation_keeps_connection():
    async def body(s):
        admin = await connect(s.url, user="admin", password="admin")
        seen = await collect(admin, ">")
        nc = await connect(s.url, user="limited", password="p")
        await nc.publish("ok.no", b"x")
        await nc.flush()
        await nc.errors.wait_for('Permissions Violation for Publish to "ok.no"')
        await nc.publish("elsewhere", b"x")
        await nc.flush()
        await nc.errors.wait_for('Permissions Violation for Publish to "elsewhere"')
        assert nc.is_connected
        # Still usable: allowed traffic flows both ways.
        await roundtrip(nc, nc, "ok.yes")
        await roundtrip(admin, nc, "s.fine")
        await asyncio.sleep(0.2)
        subjects = [subj for subj, _ in seen]
        assert "ok.no" not in subjects and "elsewhere" not in subjects, subjects
        assert "ok.yes" in subjects, subjects
        await nc.close()
        await admin.close()

    run(body, conf=PERMS_CONF)


def test_subscribe_permission_violations():
    async def body(s):
        admin = await connect(s.url, user="admin", password="admin")
        nc = await connect(s.url, user="limited", password="p")
        denied = await collect(nc, "s.secret")
        await nc.errors.wait_for('Permissions Violation for Subscription to "s.secret"')
        await collect(nc, "nope")
        await nc.errors.wait_for('Permissions Violation for Subscription to "nope"')
        await collect(nc, "s.q", queue="q")
        await nc.errors.wait_for('Permissions Violation for Subscription to "s.q" using queue "q"')
        # The queue allow entry "t.x tq" allows that queue only.
        tq = await collect(nc, "t.x", queue="tq")
        await collect(nc, "t.x")
        await nc.errors.wait_for('Permissions Violation for Subscription to "t.x"')
        assert nc.is_connected
        await admin.publish("s.secret", b"no")
        await admin.publish("t.x", b"yes")
        await admin.flush()
        await asyncio.sleep(0.3)
        assert denied == []
        assert tq == [("t.x", b"yes")]
        await nc.close()
        await admin.close()

    run(body, conf=PERMS_CONF)


def test_allow_responses():
    async def body(s):
        responder = await connect(s.url, user="resp", password="p")

        async def answer(msg):
            await msg.respond(b"answer:" + msg.data)

        await responder.subscribe("svc", cb=answer)
        await ready(responder)
        client = await connect(s.url, user="admin", password="admin")
        reply = await client.request("svc", b"q1", timeout=5)
        assert reply.data == b"answer:q1"
        # Only responses: anything else is refused, and it stays connected.
        await responder.publish("elsewhere", b"x")
        await responder.flush()
        await responder.errors.wait_for('Permissions Violation for Publish to "elsewhere"')
        await responder.publish("svc", b"x")
        await responder.flush()
        await responder.errors.wait_for('Permissions Violation for Publish to "svc"')
        assert responder.is_connected
        reply = await client.request("svc", b"q2", timeout=5)
        assert reply.data == b"answer:q2"
        await responder.close()
        await client.close()

    run(body, conf=PERMS_CONF)


# ------------------------------------------------------------------ accounts

ACCOUNTS_CONF = """
accounts {
  A {
    users: [{user: a, password: a}, {user: a2, password: a2}]
    exports: [{stream: "news.>"}, {service: "help"}]
  }
  B {
    users: [{user: b, password: b}]
    imports: [
      {stream: {account: A, subject: "news.>"}, prefix: imp}
      {service: {account: A, subject: "help"}, to: "ask"}
    ]
  }
}
"""


def test_accounts_isolation():
    async def body(s):
        a = await connect(s.url, user="a", password="a")
        a2 = await connect(s.url, user="a2", password="a2")
        b = await connect(s.url, user="b", password="b")
        b_got = await collect(b, ">")
        a2_got = await collect(a2, ">")
        await a.publish("private", b"from A")
        await a.flush()
        await b.publish("private", b"from B")
        await b.flush()
        await asyncio.sleep(0.3)
        assert ("private", b"from A") not in b_got, b_got
        assert ("private", b"from B") not in a2_got, a2_got
        assert ("private", b"from A") in a2_got, a2_got
        for nc in (a, a2, b):
            await nc.close()

    run(body, conf=ACCOUNTS_CONF)


def test_stream_import_with_prefix():
    async def body(s):
        a = await connect(s.url, user="a", password="a")
        b = await connect(s.url, user="b", password="b")
        got = await collect(b, ">")
        await a.publish("news.sport", b"goal")
        await a.publish("other", b"not exported")
        await a.flush()
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert got == [("imp.news.sport", b"goal")], got
        await a.close()
        await b.close()

    run(body, conf=ACCOUNTS_CONF)


def test_service_import():
    async def body(s):
        a = await connect(s.url, user="a", password="a")
        seen = []

        async def helper(msg):
            seen.append(msg.subject)
            await msg.respond(b"help:" + msg.data)

        await a.subscribe("help", cb=helper)
        await ready(a)
        b = await connect(s.url, user="b", password="b")
        reply = await b.request("ask", b"please", timeout=5)
        assert reply.data == b"help:please"
        assert seen == ["help"], seen
        # Not imported under its own name.
        with pytest.raises(Exception):
            await b.request("help", b"direct", timeout=1)
        await a.close()
        await b.close()

    run(body, conf=ACCOUNTS_CONF)


# ------------------------------------------------------------------ operator mode


@pytest.fixture
def jwt_dir(tmp_path):
    """A writable copy of the JWT fixtures (their config paths are relative)."""
    assert FIXTURES.is_dir(), f"JWT fixtures not found at {FIXTURES} (set PETREL_JWT_FIXTURES)"
    dst = tmp_path / "jwt"
    shutil.copytree(FIXTURES, dst, ignore=shutil.ignore_patterns(".*"))
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | 0o200)
    os.chmod(dst, os.stat(dst).st_mode | 0o200)
    return dst


def manifest(jwt_dir):
    return json.loads((jwt_dir / "manifest.json").read_text())


def run_operator(jwt_dir, coro_fn):
    # -p -1 (from Server) wins over the file's listen port.
    run(coro_fn, "-c", "server_memory.conf", cwd=str(jwt_dir))


def test_operator_manifest_outcomes(jwt_dir):
    users = manifest(jwt_dir)["users"]
    assert {u["expect"] for u in users} == {"ok", "refused"}

    async def body(s):
        for u in users:
            creds = str(jwt_dir / u["creds"])
            if u["expect"] == "ok":
                nc = await connect(s.url, user_credentials=creds)
                await nc.flush()
                assert nc.is_connected, u["name"]
                await nc.close()
            else:
                await refused(s.url, user_credentials=creds)
        # No credentials at all.
        await refused(s.url)

    run_operator(jwt_dir, body)


def test_operator_restricted_user(jwt_dir):
    async def body(s):
        creds = lambda name: str(jwt_dir / "creds" / f"{name}.creds")  # noqa: E731
        a = await connect(s.url, user_credentials=creds("a"))
        seen = await collect(a, ">")
        r = await connect(s.url, user_credentials=creds("a_restricted"))
        await r.publish("foo.secret", b"x")
        await r.flush()
        await r.errors.wait_for('Permissions Violation for Publish to "foo.secret"')
        await r.publish("bar.x", b"x")
        await r.flush()
        await r.errors.wait_for('Permissions Violation for Publish to "bar.x"')
        assert r.is_connected
        await roundtrip(r, r, "foo.ok")
        await asyncio.sleep(0.2)
        subjects = [subj for subj, _ in seen]
        assert "foo.ok" in subjects and "foo.secret" not in subjects and "bar.x" not in subjects, subjects
        await r.close()
        await a.close()

    run_operator(jwt_dir, body)


def test_operator_system_account_does_not_see_other_accounts(jwt_dir):
    async def body(s):
        creds = lambda name: str(jwt_dir / "creds" / f"{name}.creds")  # noqa: E731
        sys_nc = await connect(s.url, user_credentials=creds("sys"))
        sys_seen = await collect(sys_nc, ">")
        a = await connect(s.url, user_credentials=creds("a"))
        a_sk = await connect(s.url, user_credentials=creds("a_sk"))
        # a and a_sk share account A: the message does flow there.
        await roundtrip(a, a_sk, "foo.traffic", b"for A")
        await asyncio.sleep(0.3)
        leaked = [(subj, d) for subj, d in sys_seen if not subj.startswith("$SYS.")]
        assert leaked == [], leaked
        assert all(d != b"for A" for _, d in sys_seen)
        for nc in (sys_nc, a, a_sk):
            await nc.close()

    run_operator(jwt_dir, body)
