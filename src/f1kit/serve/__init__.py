"""Serving a saved policy to robots: `f1kit serve`, `PolicyClient`, a pickle-free wire.

    PolicyServer   one policy directory served over websockets (`server.py`)
    PolicyClient   the robot side: sync chunks, select_action, or observe/action loops
    wire           msgpack frames with numpy arrays as raw buffers; nothing executable

docs/deploy.md shows a robot loop and the settings.
"""

from f1kit.serve.client import PolicyClient, ServedAgent, ServerError
from f1kit.serve.server import DEFAULT_PORT, PROTOCOL, Handshake, PolicyServer, ServeError
from f1kit.serve.wire import WireError, decode, encode

__all__ = [
    "DEFAULT_PORT",
    "PROTOCOL",
    "Handshake",
    "PolicyClient",
    "PolicyServer",
    "ServeError",
    "ServedAgent",
    "ServerError",
    "WireError",
    "decode",
    "encode",
]
