"""The ceiling for this stack: an aiohttp handler that reads the body and answers 202."""

import sys

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "OK"})


app = web.Application()
app.add_routes([web.post("/api/client/metrics", accept), web.get("/internal-backstage/health", health)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
