"""The ceiling for this stack: an aiohttp handler that reads the body and answers 202.

Runs on the same event loop as the proxy (argument 2, default the proxy's default), so that the
ratio compares the proxy's own work and not a loop choice.
"""

import sys

from aiohttp import web

from proxy.cli import new_event_loop
from proxy.config import Settings


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "OK"})


app = web.Application()
app.add_routes([web.post("/api/client/metrics", accept), web.post("/bulk", accept),
                web.get("/internal-backstage/health", health)])
loop_kind = sys.argv[2] if len(sys.argv) > 2 else Settings().event_loop
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=new_event_loop(loop_kind))
