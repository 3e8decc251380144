"""`PolicyClient`: the robot side of `f1kit serve`, for scripts and for real-time loops.

Three ways to drive it:

* ``predict_action_chunk(observation) -> [c, a]``: one env step observed, one chunk back (sync).
* ``select_action(observation) -> [a]``: exactly `F1Policy.select_action` over the wire: every
  call is an env step; a chunk is asked for when the queue is empty and its first ``execute``
  actions are queued. With no delay it reproduces the in-process policy's actions.
* ``ServedAgent(client)``: ``select_action`` as observe + action (below), for `f1kit.sim`
  evaluation through a server with a simulated delay (``delay_steps``).
* ``observe(observation)`` + ``action()`` for a robot whose control loop must not wait: observe
  sends the step and returns at once; when the planned actions left fall to ``threshold`` of a
  chunk, a new chunk is asked for in the background. A chunk computed from step s holds the
  actions of steps s, s+1, ...: when it arrives, the steps already executed are dropped and the
  rest merged with the plan (``merge="latest"``: the new chunk wins; ``"average"``:
  ``merge_weight * new + (1 - merge_weight) * old`` where they overlap). ``action()`` returns
  the next step's action, waiting only when the plan has run dry.

``rtc=RTCConfig(delay, horizon)`` sends the plan's actions for the steps a new chunk will cover
with each request (observe/action loops), and the server samples the chunk with them as a
guided prefix (real-time chunking, `flow.rtc`): consecutive chunks join without a jump.
``foresight=True`` asks the server for the predicted frame with each chunk (``last_foresight``,
uint8 [H, W, 3], for display). Observations are the env dicts `F1Policy` takes, with numpy or
torch arrays; the server checks them and a refused one raises `ServerError` here.
"""

import contextlib
import itertools
import logging
import threading
from collections import deque
from concurrent.futures import Future
from typing import Literal

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from f1kit.serve.server import DEFAULT_PORT, PROTOCOL
from f1kit.serve.wire import MAX_FRAME, WireError, decode, encode
from flow import RTCConfig

log = logging.getLogger(__name__)

Merge = Literal["latest", "average"]


class ServerError(RuntimeError):
    """The server refused a request (its message says why) or went away."""


class PolicyClient:
    """A connection to a policy server; see the module docstring.

    Example::

        with PolicyClient("127.0.0.1", 8765) as client:
            client.spec["chunk"], client.spec["cameras"]
            chunk = client.predict_action_chunk(observation)      # np.ndarray [c, a]
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        threshold: float = 0.5,
        merge: Merge = "latest",
        merge_weight: float = 0.5,
        foresight: bool = False,
        rtc: RTCConfig | None = None,
        delay_steps: int = 0,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(
                f"threshold: expected a fraction of the chunk in [0, 1], got {threshold}"
            )
        if merge not in ("latest", "average"):
            raise ValueError(f"merge: expected 'latest' or 'average', got {merge!r}")
        if not 0.0 <= merge_weight <= 1.0:
            raise ValueError(f"merge_weight: expected [0, 1], got {merge_weight}")
        self.timeout, self.threshold = timeout, threshold
        self.merge, self.merge_weight, self.foresight = merge, merge_weight, foresight
        self.rtc = rtc
        if delay_steps < 0:
            raise ValueError(f"delay_steps: expected >= 0, got {delay_steps}")
        self.delay_steps = delay_steps
        self._ids = itertools.count()
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._closed: str | None = None
        self._stack = contextlib.ExitStack()  # websockets wants its connection entered
        self._ws: ClientConnection = self._stack.enter_context(
            connect(
                f"ws://{host}:{port}", max_size=MAX_FRAME, compression=None, open_timeout=timeout
            )
        )
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()
        try:
            ready = self._call({"type": "hello", "version": PROTOCOL, "token": token})
        except ServerError:
            self.close()
            raise
        self.spec: dict = ready["policy"]
        self.server: dict = ready["server"]
        if rtc is not None and rtc.delay > int(threshold * self.spec["chunk"]):
            log.warning(
                "rtc: a chunk is asked for when %d planned actions are left, fewer than the RTC "
                "delay %d: RTC will not guide (raise threshold)",
                int(threshold * self.spec["chunk"]),
                rtc.delay,
            )
        self.last_foresight: np.ndarray | None = None
        self.stalls = 0  # action() calls that waited for a chunk (not an episode's first)
        self.requests = 0  # chunks asked for
        self._reset_plan()

    # ---- requests ------------------------------------------------------------------------------

    def _send(self, message: dict) -> Future:
        if self._closed is not None:
            raise ServerError(f"connection closed: {self._closed}")
        rid = next(self._ids)
        future: Future = Future()
        with self._lock:
            self._pending[rid] = future
            self._ws.send(encode({**message, "id": rid}))
        return future

    def _call(self, message: dict) -> dict:
        return self._result(self._send(message))

    def _result(self, future: Future) -> dict:
        try:
            reply = future.result(timeout=self.timeout)
        except TimeoutError:
            raise ServerError(f"no reply within {self.timeout} s") from None
        if reply["type"] == "error":
            raise ServerError(reply["message"])
        return reply

    def _receive(self) -> None:
        try:
            for frame in self._ws:
                reply = decode(frame)
                with self._lock:
                    future = self._pending.pop(reply.get("id"), None)
                if future is not None:
                    future.set_result(reply)
                elif reply["type"] == "error":  # an error about no request (a bad hello)
                    log.warning("server: %s", reply["message"])
        except ConnectionClosed as err:
            self._closed = str(err)
        except WireError as err:  # a server speaking something else: fail every request
            self._closed = f"unreadable reply ({err})"
            self._ws.close()
        finally:
            self._closed = self._closed or "closed"
            with self._lock:
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_result(
                    {"type": "error", "message": f"connection closed: {self._closed}"}
                )

    # ---- scripts --------------------------------------------------------------------------------

    def reset(self) -> None:
        """A new episode on both sides: the server's history and this client's plan."""
        self._call({"type": "reset"})
        self._reset_plan()

    def predict_action_chunk(self, observation: dict) -> np.ndarray:
        """Observe one env step and return the chunk planned there, [c, a] (or [b, c, a])."""
        self._call({"type": "observe", "observation": _plain(observation)})
        self._step += 1
        return self._chunk(self._call(self._predict_request()))

    def select_action(self, observation: dict) -> np.ndarray:
        """`F1Policy.select_action` over the wire (execute ``spec['execute']`` of each chunk)."""
        if self._queue:
            self._call({"type": "observe", "observation": _plain(observation)})
            self._step += 1
            return self._queue.popleft()
        chunk = self.predict_action_chunk(observation)
        steps = chunk if chunk.ndim == 2 else np.swapaxes(chunk, 0, 1)
        self._queue.extend(steps[: self.spec["execute"]])
        return self._queue.popleft()

    def _predict_request(self) -> dict:
        self.requests += 1
        request: dict = {"type": "predict", "foresight": self.foresight}
        if self.rtc is not None:
            # The plan's actions for the steps the new chunk will cover, from this step on.
            prefix = []
            while self._step + len(prefix) in self._plan:
                prefix.append(self._plan[self._step + len(prefix)])
            if prefix and len(prefix) >= self.rtc.delay:
                request["rtc"] = {
                    "prefix": np.stack(prefix).astype(np.float32),
                    "delay": self.rtc.delay,
                    "horizon": min(self.rtc.horizon, len(prefix)),
                    "schedule": self.rtc.schedule,
                    "max_guidance": self.rtc.max_guidance,
                }
        return request

    def _chunk(self, reply: dict) -> np.ndarray:
        if "foresight" in reply:
            self.last_foresight = reply["foresight"]
        self.server_ms = reply["server_ms"]
        return reply["actions"]

    # ---- real-time loops ---------------------------------------------------------------------

    def _reset_plan(self) -> None:
        self._step = -1  # the env step last observed
        self._acted = 0  # the env step the next action() serves
        self._plan: dict[int, np.ndarray] = {}
        self._inflight: Future | None = None
        self._inflight_step = -1
        self._observed: list[Future] = []  # observe requests not yet known to have succeeded
        self._queue: deque[np.ndarray] = deque()
        self.server_ms = float("nan")

    def observe(self, observation: dict) -> None:
        """Send one env step (no wait for the server) and ask for a chunk when the plan is low.

        One robot (unbatched observations). A step the server refuses raises `ServerError` at
        the next ``observe`` or ``action`` (it is checked without waiting); ``reset()`` then
        starts over on both sides.
        """
        self._check_observed()
        images = [v for k, v in observation.items() if k.startswith("observation.images.")]
        if any(np.ndim(v) == 4 for v in images):
            raise ValueError(
                "observation: the observe/action loop drives one robot: unbatched (H, W, 3) "
                "frames (predict_action_chunk and select_action take batches)"
            )
        self._observed.append(self._send({"type": "observe", "observation": _plain(observation)}))
        self._step += 1
        self._absorb()
        left = sum(1 for t in self._plan if t >= self._step)
        if self._inflight is None and left <= self.threshold * self.spec["chunk"]:
            self._inflight = self._send(self._predict_request())
            self._inflight_step = self._step

    def action(self) -> np.ndarray:
        """The action of the next env step; waits only when no planned action is left for it."""
        step = self._acted
        self._check_observed()
        self._absorb()
        if step not in self._plan:
            if step > 0:
                self.stalls += 1  # the plan ran dry: a real robot would idle here
            if self._inflight is None:
                self._inflight = self._send(self._predict_request())
                self._inflight_step = self._step
            self._absorb(wait=True)
            if step not in self._plan:
                raise ServerError(
                    f"action: the chunk planned at step {self._inflight_step} does not reach "
                    f"step {step} (observe each env step before asking for its action)"
                )
        self._acted += 1
        for t in [t for t in self._plan if t < self._acted]:
            action = self._plan.pop(t)
            if t == step:
                chosen = action
        return chosen

    def _check_observed(self, wait: bool = False) -> None:
        """Raise if the server refused an observed step (checks the answered ones, or waits)."""
        pending = []
        for future in self._observed:
            if not (wait or future.done()):
                pending.append(future)
                continue
            try:
                self._result(future)
            except ServerError as err:
                raise ServerError(f"observe refused: {err}; reset() to start over") from None
        self._observed = pending

    def _absorb(self, wait: bool = False) -> None:
        """Merge the in-flight chunk into the plan once it has arrived (or wait for it).

        With ``delay_steps`` (a simulated inference delay, for evaluation) a chunk asked for at
        step s is merged from step s + delay_steps on, however fast the server answered.
        """
        if self._inflight is None:
            return
        due = self._step >= self._inflight_step + self.delay_steps
        if not wait and not (due and (self.delay_steps or self._inflight.done())):
            return
        future, start = self._inflight, self._inflight_step
        self._inflight = None
        self._check_observed(wait=True)  # answered before the chunk: a refusal shows first
        reply = self._result(future)
        if reply["step"] != start:  # the server's step count must be ours
            raise ServerError(
                f"chunk planned at server step {reply['step']}, expected {start}; reset()"
            )
        chunk = self._chunk(reply)
        for i, action in enumerate(chunk):
            t = start + i
            if t < self._acted:
                continue  # executed while the chunk was computed
            old = self._plan.get(t)
            if old is None or self.merge == "latest":
                self._plan[t] = action
            else:
                self._plan[t] = self.merge_weight * action + (1 - self.merge_weight) * old

    # ---- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._stack.close()
        self._receiver.join(timeout=self.timeout)

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(observation: dict) -> dict:
    """Torch tensors as numpy arrays; everything else as it is (the wire refuses the rest)."""
    out = {}
    for key, value in observation.items():
        if hasattr(value, "detach") and hasattr(value, "cpu"):
            value = value.detach().cpu().numpy()
        out[key] = value
    return out


class ServedAgent:
    """A policy for `f1kit.sim.evaluate` that acts through ``client``'s real-time loop: each
    env step is ``observe`` then ``action`` (chunks asked for at the client's threshold, merged,
    RTC-guided when the client has an ``rtc`` config, delayed by its ``delay_steps``)."""

    def __init__(self, client: PolicyClient) -> None:
        self.client = client

    def reset(self) -> None:
        self.client.reset()

    def select_action(self, observation: dict) -> np.ndarray:
        self.client.observe(observation)
        return self.client.action()

    def predicted_frame(self) -> np.ndarray | None:
        return self.client.last_foresight
