"""`PolicyServer`: one saved policy served over websockets to robot-side `PolicyClient`s.

Each connection is one robot episode stream with its own `F1Policy` state (frame history, seeded
draws, KV caches), all sharing the one model; model calls are serialised by a lock (one GPU).
Messages are `wire` frames; every request carries an ``id`` and gets exactly one reply with it:

    hello    {version, token?}            -> ready {policy: the handshake, server: {...}}
    reset    {}                           -> ok            (a new episode)
    observe  {observation}                -> ok            (one env step: its frame joins the
                                                            history; sent at the robot's rate)
    predict  {foresight?: bool, rtc?}     -> chunk {actions [c, a] float32, step, server_ms,
                                                    foresight?: uint8 [H, W, 3]}
                                             (at the last observed step; rtc: real-time
                                              chunking, {prefix [p, a] raw units, delay,
                                              horizon, schedule?, max_guidance?})

A request the policy refuses (missing key, wrong shape or dtype, NaN: `F1Policy`'s own checks)
or a frame that is not a message (a pickle, say) gets ``error {id, message}`` and the connection
keeps being served; so do the other connections. Nothing a client sends is executed or
unpickled (`wire`). A client that disconnects mid-request ends its connection's handler and its
policy state; the model and the other connections are untouched.

``batch_window_ms`` > 0 gathers the predicts of several connections into one model call
(`batcher.Batcher`: other random draws than unbatched calls; RTC requests run alone).

Binding: loopback (127.0.0.1) by default. Any other host requires a token, given to the server
(``token``) and sent by clients in their hello; a wrong or missing token closes the connection.
"""

import hmac
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from f1kit.model.engine import CompileMode
from f1kit.model.policy import F1Policy
from f1kit.serve.batcher import Batcher
from f1kit.serve.wire import MAX_FRAME, WireError, decode, encode
from flow import RTCConfig, RTCGuide

log = logging.getLogger(__name__)

PROTOCOL = 1
DEFAULT_PORT = 8765
HELLO_MAX = 4096  # bytes: a hello is decoded before its token is checked, so it stays small


class ServeError(ValueError):
    """A server that cannot start as asked (e.g. a public bind without a token)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Handshake:
    """What a client learns at connection: enough to build observations and pace a robot."""

    cameras: list[str]
    image_size: int
    state_dim: int | None
    action_dim: int
    action_dims: dict[str, int]
    chunk: int
    execute: int
    fps: float | None
    foresight: bool
    embodiments: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, policy: F1Policy, fps: float | None) -> "Handshake":
        cfg = policy.model.config
        dims: dict[str, int] = {}
        post = policy.postprocessor
        if post is not None:
            for step in post.steps:
                for emb in getattr(step, "embodiments", []):
                    norm = step.normalizer(emb, "action")
                    dims[emb] = cfg.action.action_dim if norm is None else norm.dim
        return cls(
            cameras=list(policy.cameras),
            image_size=policy.model.understanding.vision.image_size,
            state_dim=cfg.action.state_dim,
            action_dim=cfg.action.action_dim,
            action_dims=dims,
            chunk=cfg.action.chunk,
            execute=cfg.action.execute,
            fps=fps,
            foresight=policy.model.generator is not None,
            embodiments=list(dims),
        )


class PolicyServer:
    """Serve ``policy``'s model; see the module docstring.

    Example::

        server = PolicyServer(F1Policy.from_pretrained("runs/f1/policy"), port=8765)
        server.serve_forever()        # or: with server.running(): ...  (a background thread)
    """

    def __init__(
        self,
        policy: F1Policy,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        fps: float | None = None,
        compile: CompileMode = "eager",
        max_connections: int = 16,
        batch_window_ms: float = 0.0,
        max_batch: int = 8,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ServeError(
                f"host {host!r}: binding beyond loopback needs a token (F1KIT_SERVE_TOKEN or "
                "--token-file); clients send it in their hello"
            )
        self.policy = policy
        self.host, self.port, self.token = host, port, token
        self.compile = compile
        self.handshake = Handshake.of(policy, fps)
        self._lock = threading.Lock()  # one model, one device: calls run one at a time
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.connections = 0  # currently open, for tests and logs
        self.max_connections = max_connections
        self._count = threading.Lock()
        self.batcher = None
        if batch_window_ms > 0:
            self.batcher = Batcher(
                policy.model,
                self._lock,
                window_ms=batch_window_ms,
                max_batch=max_batch,
                compile=compile,
                seed=policy.seed,
            )

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "PolicyServer":
        """Bind and serve in a background thread (``port=0`` picks a free port: see ``port``)."""
        self._server = serve(
            self._handle, self.host, self.port, max_size=MAX_FRAME, compression=None
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        log.info("serving on ws://%s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> "PolicyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self.start()
        try:
            assert self._thread is not None
            while self._thread.is_alive():
                self._thread.join(timeout=1.0)
        finally:
            self.stop()

    # ---- one connection -------------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        with self._count:
            full = self.connections >= self.max_connections
            if not full:
                self.connections += 1
        if full:
            ws.close(1013, f"server full ({self.max_connections} connections)")
            return
        try:
            session = self._greet(ws)
            if session is None:
                return
            for frame in ws:
                ws.send(encode(self._reply(session, frame)))
        except ConnectionClosed:
            log.info("client %s went away", ws.id)
        finally:
            with self._count:
                self.connections -= 1

    def _greet(self, ws: ServerConnection) -> F1Policy | None:
        """The hello exchange; the connection's own policy, or None when it was refused."""
        try:
            hello = decode(ws.recv(timeout=30), max_frame=HELLO_MAX)
        except (WireError, TimeoutError) as err:
            ws.send(encode({"type": "error", "id": None, "message": f"hello: {err}"}))
            ws.close(1008, "expected a hello")
            return None
        rid = hello.get("id")
        if hello.get("type") != "hello" or hello.get("version") != PROTOCOL:
            got = (hello.get("type"), hello.get("version"))  # not the rest: it may hold a token
            message = f"hello: expected type 'hello', version {PROTOCOL}; got {got}"
            ws.send(encode({"type": "error", "id": rid, "message": message}))
            ws.close(1008, "bad hello")
            return None
        sent = str(hello.get("token") or "").encode()
        if self.token and not hmac.compare_digest(sent, self.token.encode()):
            ws.send(encode({"type": "error", "id": rid, "message": "hello: wrong or no token"}))
            ws.close(1008, "token")
            return None
        p = self.policy
        session = F1Policy(
            p.model,
            cameras=p.cameras,
            preprocessor=p.preprocessor,
            postprocessor=p.postprocessor,
            history_offsets=p.offsets,
            seed=p.seed,
            embodiment=p.embodiment,
            compile=self.compile,
        )
        server = {"protocol": PROTOCOL, "device": str(p.device), "compile": self.compile}
        ready = {"type": "ready", "id": rid, "policy": self.handshake.__dict__, "server": server}
        ws.send(encode(ready))
        return session

    def _reply(self, session: F1Policy, frame: bytes | str) -> dict:
        rid = None
        try:
            if isinstance(frame, str):
                raise WireError("frame: expected a binary msgpack frame, got text")
            message = decode(frame)
            rid = message.get("id")
            kind = message["type"]
            if kind == "reset":
                session.reset()
                return {"type": "ok", "id": rid}
            if kind == "observe":
                observation = _observation(message)
                with self._lock:
                    session.observe(observation)
                return {"type": "ok", "id": rid, "step": session.step}
            if kind == "predict":
                guide = _guide(message.get("rtc"))
                return self._predict(session, rid, bool(message.get("foresight", False)), guide)
            raise WireError(f"type: expected reset, observe or predict, got {kind!r}")
        except (ValueError, KeyError, TypeError) as err:  # refused input: tell, keep serving
            return {"type": "error", "id": rid, "message": str(err)}

    def _predict(
        self, session: F1Policy, rid: object, foresight: bool, guide: RTCGuide | None
    ) -> dict:
        observation = session.last_observation
        if observation is None:
            raise ValueError("predict: observe at least one step first (nothing to act on)")
        start = time.perf_counter()
        # no_grad (the policy's), not inference_mode: real-time chunking differentiates the
        # action steps, and inference tensors cannot enter autograd.
        session.decode = foresight and self.handshake.foresight  # decoding costs: on ask
        if self.batcher is not None and guide is None:
            actions = self.batcher.predict(session, observation)  # takes the lock itself
        else:
            with self._lock:
                actions = session.predict_action_chunk(observation, rtc=guide)
        actions = actions.float().cpu().numpy()
        frame = session.predicted_frame() if session.decode else None
        reply = {
            "type": "chunk",
            "id": rid,
            "actions": actions[0] if actions.shape[0] == 1 else actions,
            "step": session.step,
            "server_ms": (time.perf_counter() - start) * 1e3,
        }
        if frame is not None:
            reply["foresight"] = frame
        return reply


def _guide(rtc: object) -> RTCGuide | None:
    """A predict request's real-time chunking: {prefix [p, a] or [b, p, a], delay, horizon,
    schedule?, max_guidance?}, raw action units (the policy normalises them)."""
    if rtc is None:
        return None
    if not isinstance(rtc, dict) or not isinstance(rtc.get("prefix"), np.ndarray):
        raise ValueError("rtc: expected {prefix: array [p, a], delay, horizon, ...}")
    unknown = sorted(set(rtc) - {"prefix", "delay", "horizon", "schedule", "max_guidance"})
    if unknown:
        raise ValueError(f"rtc: unknown keys {unknown}")
    prefix = torch.from_numpy(rtc["prefix"].astype(np.float32))
    if prefix.ndim == 2:
        prefix = prefix.unsqueeze(0)
    if not bool(torch.isfinite(prefix).all()):
        raise ValueError("rtc.prefix: holds NaN or inf")
    settings = {k: v for k, v in rtc.items() if k != "prefix"}
    try:
        return RTCGuide(prefix, RTCConfig(**settings))
    except TypeError as err:
        raise ValueError(f"rtc: {err}") from None


def _observation(message: dict) -> dict:
    """The observation map of an observe request, as sent (the policy converts and checks it)."""
    observation = message.get("observation")
    if not isinstance(observation, dict):
        raise ValueError("observation: expected a map of 'observation.*' keys and 'task'")
    return observation
