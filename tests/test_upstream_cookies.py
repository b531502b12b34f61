"""The one shared upstream session must not carry one client's cookies to another client's call."""

from aiohttp import web

from proxy.upstream import Timeouts, UpstreamClient


async def test_a_cookie_set_by_one_answer_is_not_sent_with_the_next_request():
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("cookie"))
        response = web.json_response({"ok": True})
        response.set_cookie("affinity", "client-a-session")
        return response

    app = web.Application()
    app.router.add_post("/openai/deployments/d/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = UpstreamClient(Timeouts(), 8)
    try:
        url = f"http://localhost:{port}/openai/deployments/d/chat/completions"
        for _ in range(2):
            resp = await client.send("POST", url, headers={"content-type": "application/json"}, params=[], body=b"{}")
            assert "affinity=client-a-session" in resp.headers.get("set-cookie", "")
            await resp.read()
            resp.release()
    finally:
        await client.close()
        await runner.cleanup()
    assert seen == [None, None]
