"""voicegate sandbox worker.

Hosts many primfunctions sessions on one asyncio loop. Started by the engine as
``python voicegate_runtime.py AGENT_DIR``; speaks newline-delimited JSON frames on
stdin (engine -> worker) and on the process's original stdout (worker -> engine).
Handler ``print`` output is redirected to stderr, which the engine logs. The frame
set is documented in the voicegate-engine crate docs (``src/lib.rs``).
"""

import asyncio
import contextvars
import importlib
import importlib.metadata
import inspect
import json
import os
import sys
import traceback

# The protocol channel is the original stdout; anything the handler prints goes to
# stderr instead so it can never corrupt a frame.
_PROTO_FD = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
_proto = os.fdopen(_PROTO_FD, "wb", buffering=0)

from primfunctions.events import (  # noqa: E402
    Event,
    ErrorEvent,
    LogEvent,
    MetricEvent,
    event_from_str,
    event_to_dict,
)
from primfunctions.context import Context  # noqa: E402
from primfunctions.cleanup import SessionCleanup, DEFAULT_CLEANUP_TIMEOUT_SECONDS  # noqa: E402
from primfunctions.configuration import Configuration  # noqa: E402
from primfunctions.logger import logger as _sdk_logger  # noqa: E402
from primfunctions.metrics import Metrics, metrics as _sdk_metrics  # noqa: E402

try:
    from primfunctions.utils.errors import format_error_with_filtered_traceback
except Exception:  # pragma: no cover - older SDKs
    format_error_with_filtered_traceback = None

_current = contextvars.ContextVar("voicegate_session", default=None)


def send(frame):
    data = json.dumps(frame, default=str).encode("utf-8") + b"\n"
    view = memoryview(data)
    while view:
        n = _proto.write(view)
        view = view[n:]


def describe_error(err):
    text = None
    if format_error_with_filtered_traceback is not None:
        try:
            text = format_error_with_filtered_traceback(err)
        except Exception:
            text = None
    if not text:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return text


class _SessionLogger:
    """primfunctions.logger implementation: LogEvents on the calling session."""

    def _emit(self, level, message, attributes):
        session = _current.get()
        attrs = dict(attributes or {})
        attrs.setdefault("level", level)
        if session is None:
            print(f"[{level}] {message}", file=sys.stderr)
            return
        session.emit(LogEvent(str(message), attributes=attrs))

    def info(self, message, attributes=None):
        self._emit("info", message, attributes)

    def warn(self, message, attributes=None):
        self._emit("warn", message, attributes)

    def error(self, message, attributes=None):
        self._emit("error", message, attributes)

    def debug(self, message, attributes=None):
        self._emit("debug", message, attributes)


class _SessionMetricsImpl:
    """primfunctions.metrics implementation: metrics.* events on the calling session."""

    def record(self, metric_type, name, value, tags):
        session = _current.get()
        if session is None:
            print(f"[metric:{metric_type}] {name}={value} {tags or ''}", file=sys.stderr)
            return
        session.emit(MetricEvent(str(metric_type), name, {"value": value, "tags": dict(tags or {})}))


class _SessionMetrics(Metrics):
    """The SDK keeps experiment tags on one global object; keep them per session."""

    @property
    def _experiment_tags(self):
        session = _current.get()
        return session.metric_tags if session is not None else self.__dict__.setdefault("_vg_tags", {})

    @_experiment_tags.setter
    def _experiment_tags(self, value):
        pass

    @property
    def _conversion_callbacks(self):
        session = _current.get()
        return session.conversion_callbacks if session is not None else self.__dict__.setdefault("_vg_cbs", {})

    @_conversion_callbacks.setter
    def _conversion_callbacks(self, value):
        pass


_sdk_logger._impl = _SessionLogger()
_sdk_metrics.__class__ = _SessionMetrics
_sdk_metrics._impl = _SessionMetricsImpl()


def parse_event(frame_event):
    text = json.dumps(frame_event)
    try:
        return event_from_str(text)
    except ValueError:
        # Names the SDK has no class for (external events) arrive as a base Event.
        e = Event(
            frame_event.get("name", ""),
            dict(frame_event.get("data") or {}),
            frame_event.get("timestamp"),
            frame_event.get("turn", 0),
            frame_event.get("background", False),
            frame_event.get("background_task_name"),
        )
        return e


class Session:
    def __init__(self, worker, sid, spec):
        self.worker = worker
        self.sid = sid
        self.turn = 0
        self.turn_tasks = set()
        self.metric_tags = {}
        self.conversion_callbacks = {}
        self.closing = False
        config = spec.get("configuration") or {}
        try:
            configuration = Configuration(**config)
        except Exception:
            configuration = Configuration()
        self.context = Context(
            organization_id=spec.get("organization_id", ""),
            agent_id=spec.get("agent_id", ""),
            environment_id=spec.get("environment_id", ""),
            session_id=sid,
            environment=spec.get("environment", ""),
            configuration=configuration,
            # Fresh dicts: the SDK's defaults are shared mutable objects.
            data=dict(spec.get("data") or {}),
            input_data=dict(spec.get("input_data") or {}),
            variables=dict(spec.get("variables") or {}),
            on_event=self._on_context_event,
        )
        self.cleanup = SessionCleanup(self.context)

    def _on_context_event(self, event):
        self.emit(event)

    def emit(self, event, turn=None):
        if not isinstance(event, Event):
            event = ErrorEvent(f"handler yielded {type(event).__name__}, not a primfunctions Event: {event!r}")
        if not self.cleanup.allows(event):
            return
        event.turn = self.turn if turn is None else turn
        send({"type": "event", "session": self.sid, "event": event_to_dict(event)})

    async def _drive(self, event):
        turn = event.turn
        result = self.worker.handler(event, self.context)
        if hasattr(result, "__aiter__"):
            async for out in result:
                self.emit(out, turn)
        elif inspect.isawaitable(result):
            await result

    async def run_turn(self, event):
        token = _current.set(self)
        turn = event.turn
        try:
            await self._drive(event)
        except asyncio.CancelledError:
            pass
        except Exception as err:  # the call goes on
            self.emit(ErrorEvent(describe_error(err)), turn)
        finally:
            send({"type": "event", "session": self.sid,
                  "event": event_to_dict(_handler_end(turn))})
            _current.reset(token)

    def deliver(self, event):
        self.turn = event.turn
        task = asyncio.get_running_loop().create_task(self.run_turn(event), context=contextvars.copy_context())
        self.turn_tasks.add(task)
        task.add_done_callback(self.turn_tasks.discard)

    def cancel(self):
        for task in list(self.turn_tasks):
            task.cancel()
        self.context.cancel_interruptible_tasks()

    async def stop(self, event, timeout):
        _current.set(self)
        self.closing = True
        for task in list(self.turn_tasks):
            task.cancel()
        self.turn = event.turn

        async def finalizer():
            try:
                await self._drive(event)
            except Exception as err:
                self.emit(ErrorEvent(describe_error(err)), event.turn)

        snapshot = await self.cleanup.run(finalizer, timeout)
        self.worker.sessions.pop(self.sid, None)
        send({
            "type": "closed",
            "session": self.sid,
            "output_data": (snapshot or {}).get("output_data", {}),
            "timed_out": bool(self.cleanup.timed_out),
        })


def _handler_end(turn):
    from primfunctions.events import HandlerEndEvent
    e = HandlerEndEvent()
    e.turn = turn
    return e


class Worker:
    def __init__(self, handler):
        self.handler = handler
        self.sessions = {}

    async def on_frame(self, frame):
        kind = frame.get("type")
        sid = frame.get("session")
        if kind == "ping":
            send({"type": "pong", "id": frame.get("id")})
        elif kind == "open":
            if sid in self.sessions:
                return
            self.sessions[sid] = Session(self, sid, frame.get("context") or {})
        elif kind == "event":
            session = self.sessions.get(sid)
            if session is None or session.closing:
                send({"type": "protocol_error", "session": sid, "message": "unknown session"})
                return
            session.deliver(parse_event(frame.get("event") or {}))
        elif kind == "cancel":
            session = self.sessions.get(sid)
            if session is not None:
                session.cancel()
        elif kind == "stop":
            session = self.sessions.get(sid)
            if session is None:
                send({"type": "closed", "session": sid, "output_data": {}, "timed_out": False})
                return
            timeout = float(frame.get("timeout_s") or DEFAULT_CLEANUP_TIMEOUT_SECONDS)
            asyncio.get_running_loop().create_task(
                session.stop(parse_event(frame.get("event") or {"name": "stop"}), timeout),
                context=contextvars.Context(),
            )
        elif kind == "drop":
            session = self.sessions.pop(sid, None)
            if session is not None:
                for task in list(session.turn_tasks):
                    task.cancel()
                session.context.cancel_all_tasks()
        elif kind == "shutdown":
            raise SystemExit(0)
        else:
            send({"type": "protocol_error", "session": sid, "message": f"unknown frame type {kind!r}"})


def load_handler(agent_dir):
    agent_dir = os.path.abspath(agent_dir)
    sys.path.insert(0, agent_dir)
    os.chdir(agent_dir)
    path = os.path.join(agent_dir, "handler.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    module = importlib.import_module("handler")
    fn = getattr(module, "handler", None)
    if fn is None or not callable(fn):
        raise AttributeError(f"{path} defines no callable `handler(event, context)`")
    return fn


async def main(agent_dir):
    try:
        handler = load_handler(agent_dir)
    except BaseException as err:  # noqa: BLE001 - report every load failure
        send({"type": "load_error", "message": "".join(
            traceback.format_exception(type(err), err, err.__traceback__))})
        return 3
    worker = Worker(handler)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        sdk_version = importlib.metadata.version("primfunctions")
    except Exception:
        sdk_version = "unknown"
    send({"type": "ready", "pid": os.getpid(), "sdk_version": sdk_version})
    while True:
        line = await reader.readline()
        if not line:
            return 0
        try:
            frame = json.loads(line)
        except ValueError as err:
            send({"type": "protocol_error", "message": f"bad frame: {err}"})
            continue
        try:
            await worker.on_frame(frame)
        except SystemExit:
            return 0
        except Exception as err:  # a bad frame never kills the worker
            send({"type": "protocol_error", "session": frame.get("session"), "message": describe_error(err)})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: voicegate_runtime.py AGENT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1])))
