"""`Batcher`: predict requests of several connections gathered into one model call.

With ``PolicyServer(batch_window_ms=w)``, a connection's predict waits up to ``w`` ms for others
(at most ``max_batch`` connections, each once); their steps' inputs (`F1Policy.chunk_inputs`)
are stacked along the batch, one `F1.predict` runs them on the batcher's own engine, and each
connection gets its rows back through its own postprocessor (`F1Policy.finish_chunk`). A lone
request runs as a batch of one after the window.

The draws of a batched call come from the batcher's generator, not each connection's, so a
batched server's chunks are not the unbatched ones (the same distribution, other samples); RTC
requests (a guide per connection) are not batched. Batching pays where one call of b rows costs
less than b calls: a GPU at small batch; on a 2-core CPU it mostly adds the window
(`benchmarks/serve_load.py --batch-window-ms` measures it).
"""

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import Tensor

from f1kit.model.engine import CompileMode, Engine
from f1kit.model.f1 import F1, Prediction
from f1kit.model.policy import F1Policy


@dataclass
class _Request:
    session: F1Policy
    observation: dict
    future: Future


class Batcher:
    """Gathers predict requests for ``window_ms`` and runs them as one batch; see the module
    docstring. ``lock`` is the server's model lock (a batch holds it while it runs)."""

    def __init__(
        self,
        model: F1,
        lock: threading.Lock,
        *,
        window_ms: float,
        max_batch: int = 8,
        compile: CompileMode = "eager",
        seed: int = 0,
    ) -> None:
        if window_ms <= 0 or max_batch < 1:
            raise ValueError(
                f"batching: window_ms > 0 and max_batch >= 1, got {window_ms}, {max_batch}"
            )
        self.model, self.lock = model, lock
        self.window_s, self.max_batch = window_ms / 1e3, max_batch
        self.engine = Engine(model.trunk, compile)
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.sizes: list[int] = []  # the batch size of every call, for the benchmark
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def predict(self, session: F1Policy, observation: dict) -> Tensor:
        """The raw-unit chunk [b, c, a] of ``session``'s current step, batched with others."""
        future: Future = Future()
        self._queue.put(_Request(session, observation, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    request = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if request is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if any(r.session is request.session for r in batch):
                    self._queue.put(request)  # one step per connection per call
                    break
                batch.append(request)
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        try:
            with self.lock, torch.no_grad():
                inputs = [r.session.chunk_inputs(r.observation) for r in batch]
                history = None
                if inputs[0].history is not None:
                    history = torch.cat([i.history for i in inputs])
                prediction = self.model.predict(
                    torch.cat([i.images for i in inputs]),
                    [text for i in inputs for text in i.texts],
                    torch.cat([i.state for i in inputs]),
                    history,
                    generator=self.generator,
                    engine=self.engine,
                    check_codes=False,
                )
                self.sizes.append(len(batch))
                start = 0
                for request, step in zip(batch, inputs, strict=True):
                    rows = slice(start, start + step.images.shape[0])  # a session may batch
                    start = rows.stop
                    foresight = None
                    if prediction.foresight is not None:
                        foresight = [t[rows] for t in prediction.foresight]
                    own = Prediction(prediction.actions[rows], foresight)
                    request.future.set_result(request.session.finish_chunk(own, step.embodiment))
        except Exception as err:  # every waiting connection hears of it
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(err)
