"""Shared helpers for the hub test clients (hub_matrix.py, hub_checks.py).

Third-party clients only: `websockets` (WebSocket, both subprotocols), `httpx` (SSE, long-poll,
client publish and server API over HTTP/1.1 and HTTP/2), `grpcio` with stubs generated at run
time by `grpcio-tools` from the repository's proto/ files. Connection tokens are HS256 JWTs
made with the standard library.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time

import grpc
import httpx
from websockets.asyncio.client import connect as ws_connect

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
JSON_SUB = "switchboard.json"
PROTO_SUB = "switchboard.proto"


def load_stubs():
    """Generates the Python protobuf and gRPC modules from proto/ into a temp dir."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="sb-stubs-")
    proto_dir = os.path.join(ROOT, "proto")
    files = ["switchboard/v1/hub.proto", "switchboard/v1/api.proto"]
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}"] + files
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, out)
    from switchboard.v1 import api_pb2, api_pb2_grpc, hub_pb2  # noqa: E402

    return hub_pb2, api_pb2, api_pb2_grpc


pb, api_pb, api_grpc = load_stubs()


def insecure_tls():
    """TLS client context for the server's self-signed certificate (no verification)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret, sub, exp_in=3600, **claims):
    """An HS256 connection token."""
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"sub": sub, **claims}
    if exp_in is not None:
        payload["exp"] = int(time.time()) + exp_in
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


# ---------------------------------------------------------------- WebSocket


class Ws:
    """A hub client over WebSocket, JSON or protobuf subprotocol, speaking Command/ServerFrame.

    Frames are exposed as dicts in the JSON mapping shape for both subprotocols (protobuf frames
    are converted with the field names the tests need), so checks are written once.
    """

    def __init__(self, url, codec="json", **kwargs):
        self.url, self.codec, self.kwargs = url, codec, kwargs
        self.ws = None
        self.next_id = 0
        self.pushes = asyncio.Queue()
        self.replies = {}
        self.reader = None
        self.closed = asyncio.get_event_loop().create_future()

    async def open(self):
        sub = JSON_SUB if self.codec == "json" else PROTO_SUB
        if self.url.startswith("wss:"):
            self.kwargs.setdefault("ssl", insecure_tls())
        self.ws = await ws_connect(
            self.url, subprotocols=[sub], proxy=None, compression=None, **self.kwargs
        )
        assert self.ws.subprotocol == sub, self.ws.subprotocol
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            async for msg in self.ws:
                frame = self.decode(msg)
                if "reply" in frame:
                    fut = self.replies.pop(frame["reply"].get("id", 0), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame["reply"])
                elif "push" in frame:
                    await self.pushes.put(frame["push"])
        except Exception:  # noqa: BLE001 - the close code is what matters
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            result = (rcvd.code, rcvd.reason) if rcvd else (None, None)
            if not self.closed.done():
                self.closed.set_result(result)
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed {result}"))

    def decode(self, msg):
        if self.codec == "json":
            assert isinstance(msg, str), "binary frame on switchboard.json"
            return json.loads(msg)
        assert isinstance(msg, bytes), "text frame on switchboard.proto"
        f = pb.ServerFrame()
        f.ParseFromString(msg)
        return proto_frame_to_dict(f)

    async def send_raw(self, data):
        await self.ws.send(data)

    async def call(self, method, body, timeout=10):
        self.next_id += 1
        cid = self.next_id
        fut = asyncio.get_event_loop().create_future()
        self.replies[cid] = fut
        if self.codec == "json":
            await self.ws.send(json.dumps({"id": cid, method: body}))
        else:
            await self.ws.send(proto_command(cid, method, body).SerializeToString())
        return await asyncio.wait_for(fut, timeout)

    async def connect(self, token=""):
        return await self.call("connect", {"token": token} if token else {})

    async def next_push(self, timeout=10):
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def wait_closed(self, timeout=10):
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def abort(self):
        """Cuts the TCP connection without a close handshake."""
        self.ws.transport.abort()

    async def close(self):
        try:
            await self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        if self.reader:
            await asyncio.gather(self.reader, return_exceptions=True)


def proto_command(cid, method, body):
    """A protobuf Command from a JSON-mapping-like dict (the subset the tests use)."""
    cmd = pb.Command(id=cid)
    sub = getattr(cmd, snake(method))
    sub.SetInParent()
    for k, v in body.items():
        if k == "data":
            sub.data = v if isinstance(v, bytes) else json.dumps(v).encode()
        elif k == "recover":
            sub.recover.offset = int(v["offset"])
            sub.recover.epoch = v.get("epoch", "")
        else:
            setattr(sub, snake(k), v)
    return cmd


def snake(name):
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def proto_frame_to_dict(f):
    """ServerFrame -> the dict the JSON mapping would give (payloads decoded from JSON)."""
    from google.protobuf.json_format import MessageToDict

    d = MessageToDict(f, preserving_proto_field_name=False)

    def fix(node):
        if isinstance(node, dict):
            for key in list(node):
                if key in ("data", "connInfo") and isinstance(node[key], str):
                    raw = base64.b64decode(node[key])
                    try:
                        node[key] = json.loads(raw)
                    except ValueError:
                        node["b64" + key] = node.pop(key)
                else:
                    fix(node[key])
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(d)
    return d


# ---------------------------------------------------------------- HTTP


def http_client(base, http2=False):
    return httpx.AsyncClient(
        base_url=base, http1=not http2, http2=http2, verify=False, trust_env=False, timeout=30
    )


async def sse_events(client, path, headers=None, on_open=None):
    """Yields (id, data-dict or None for comments) from an SSE response."""
    async with client.stream("GET", path, headers=headers or {}) as r:
        if on_open:
            on_open(r)
        if r.status_code != 200:
            body = await r.aread()
            raise HttpError(r.status_code, body)
        event_id, data = None, []
        async for line in r.aiter_lines():
            if line == "":
                if data:
                    yield event_id, json.loads("\n".join(data))
                event_id, data = None, []
            elif line.startswith(":"):
                yield None, None
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body!r}")
        self.status, self.body = status, body


# ---------------------------------------------------------------- gRPC


def grpc_channel(addr):
    return grpc.aio.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])


class GrpcStream:
    """A hub client on the gRPC bidirectional Connect stream."""

    def __init__(self, channel, token=None):
        from switchboard.v1 import api_pb2_grpc as g

        self.stub = g.HubStub(channel)
        md = (("authorization", f"Bearer {token}"),) if token else None
        self.call = self.stub.Connect(metadata=md)
        self.next_id = 0
        self.replies = {}
        self.pushes = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                f = await self.call.read()
                if f is grpc.aio.EOF:
                    break
                d = proto_frame_to_dict(f)
                if "reply" in d:
                    fut = self.replies.pop(d["reply"].get("id", 0), None)
                    if fut and not fut.done():
                        fut.set_result(d["reply"])
                else:
                    await self.pushes.put(d["push"])
        except Exception:  # noqa: BLE001
            pass

    async def call_method(self, method, body, timeout=10):
        self.next_id += 1
        cid = self.next_id
        fut = asyncio.get_event_loop().create_future()
        self.replies[cid] = fut
        await self.call.write(proto_command(cid, method, body))
        return await asyncio.wait_for(fut, timeout)

    async def next_push(self, timeout=10):
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def close(self):
        try:
            await self.call.done_writing()
        except Exception:  # noqa: BLE001
            pass
        self.call.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


def result(d):
    """Prints a result line the Rust test asserts on."""
    print(d, flush=True)
