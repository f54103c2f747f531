"""aociauth.testing.redis: the real redis-server, started, killed, restarted and paused."""

from __future__ import annotations

import anyio
import pytest

from aociauth.testing import RedisServer as ExportedRedisServer
from aociauth.testing.redis import RedisServer, RedisStartError, find_redis_server

pytestmark = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not on PATH: apt-get install redis-server",
)


async def test_fixture_gives_an_empty_server_without_persistence(
    oci_redis_server: RedisServer,
) -> None:
    server = oci_redis_server
    assert await server.command("PING") == b"+PONG\r\n"
    assert await server.command("DBSIZE") == b":0\r\n"
    assert await server.command("CONFIG", "GET", "appendonly") == b"*2\r\n"
    assert await server.command("SET", "k", "v") == b"+OK\r\n"
    assert await server.command("GET", "k") == b"v"
    assert server.host == f"127.0.0.1:{server.port}"
    assert ExportedRedisServer is RedisServer


async def test_save_and_appendonly_are_off() -> None:
    async with RedisServer() as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"CONFIG GET save\r\nCONFIG GET appendonly\r\n")
            data = b""
            with anyio.fail_after(5):
                while data.count(b"\r\n") < 10:
                    data += await stream.receive()
        assert b"$4\r\nsave\r\n$0\r\n\r\n" in data
        assert b"$10\r\nappendonly\r\n$2\r\nno\r\n" in data


async def test_password_is_required_and_kept_off_the_command_line() -> None:
    async with RedisServer(password="s3cret-redis") as server:
        assert server.url == f"redis://:s3cret-redis@127.0.0.1:{server.port}/0"
        assert await server.command("PING") == b"+PONG\r\n"
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"PING\r\n")
            assert (await stream.receive()).startswith(b"-NOAUTH")
        assert server.pid is not None
        with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
            assert b"s3cret-redis" not in cmdline.read()
        assert "s3cret" not in repr(server)


async def test_kill_then_start_comes_back_empty_on_the_same_port() -> None:
    async with RedisServer() as server:
        port = server.port
        await server.command("SET", "k", "v")
        await server.kill()
        assert not server.running
        with pytest.raises(OSError, match="onnect"):
            await server.command("PING")
        await server.start()
        assert server.port == port
        assert await server.command("DBSIZE") == b":0\r\n"
    assert not server.running


async def test_paused_server_accepts_but_does_not_answer() -> None:
    async with RedisServer() as server:
        server.pause()
        try:
            with anyio.move_on_after(0.3) as scope:
                await server.command("PING")
            assert scope.cancelled_caught
        finally:
            server.resume()
        assert await server.command("PING") == b"+PONG\r\n"


async def test_a_missing_binary_says_so() -> None:
    with pytest.raises(RedisStartError, match="exited"):
        async with RedisServer(binary="/bin/false"):
            pass
