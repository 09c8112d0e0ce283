"""Shared helpers for the county hub's integration tests.

- `CountingProxy`: a tiny HTTP proxy in front of the S3 server that counts every
  request by method and object key, so a test counts the hub's GETs without trusting
  the hub's own figure (SeaweedFS keeps no reliable request count of its own).
- `real_stations`: real stations (`custody init`, each its own data folder, origin and
  key) capturing generated clips with `custody ingest` into ONE shared bucket; the
  ingest replicates the objects and mirrors the ledger (tiles, checkpoints) in one
  pass, as the daemon's mirror would.
- `Hub`: `custody hub init` in a folder, its hub.toml edited for a test, and the
  hub's commands run as real subprocesses.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.cosignature import CosignatureVerifier
from ledger.entry import decode_entry
from ledger.log import Ledger

from ..conftest import REPO, make_clip, run_cli
from .daemon import s3_store_conf

COUNTY = "custody.example/county"
HUB_NAME = "witness.example/county-hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (an unreachable store)."""
    return free_port()


# -- a counting proxy in front of S3 ----------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    key: str  # the object key (bucket name stripped), URL-decoded; "" for bucket requests
    query: str
    status: int


class CountingProxy:
    """Forwards every HTTP request to ``upstream`` unchanged (the Host header too, so
    SigV4 signatures made for the proxy's address still verify upstream) and records
    it. Path-style addressing: the first path segment is the bucket."""

    def __init__(self, upstream: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self._up = (u.hostname or "127.0.0.1", u.port or 80)
        self._lock = threading.Lock()
        self._log: list[Request] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes | None:
                n = self.headers.get("Content-Length")
                if n is not None:
                    return self.rfile.read(int(n))
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return None

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items()}
                if headers.pop("Transfer-Encoding", None) is not None:
                    headers["Content-Length"] = str(len(body or b""))
                conn = http.client.HTTPConnection(*proxy._up, timeout=60)
                try:
                    conn.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for k, v in headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    rheaders = resp.getheaders()
                finally:
                    conn.close()
                proxy._record(self.command, self.path, status)
                self.send_response_only(status)
                for k, v in rheaders:
                    if k.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(k, v)
                if self.command == "HEAD":
                    length = dict((k.lower(), v) for k, v in rheaders).get("content-length")
                    self.send_header("Content-Length", length or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _record(self, method: str, raw_path: str, status: int) -> None:
        path, _, query = raw_path.partition("?")
        parts = urllib.parse.unquote(path).lstrip("/").split("/", 1)
        key = parts[1] if len(parts) > 1 else ""
        with self._lock:
            self._log.append(Request(method, key, query, status))

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def gets(self, prefix: str = "", pattern: str | None = None) -> list[str]:
        """Keys of the object GETs (not listings) under ``prefix`` (or matching the
        regular expression ``pattern``), in order."""
        out = []
        for r in self.requests():
            if r.method != "GET" or not r.key or "list-type" in r.query:
                continue
            if not r.key.startswith(prefix):
                continue
            if pattern is not None and re.search(pattern, r.key) is None:
                continue
            out.append(r.key)
        return out

    def tile_gets(self, origin: str | None = None) -> list[str]:
        """GETs of tiles and entry bundles (of one station's log, or of any)."""
        if origin is not None:
            return self.gets(f"ledger/{origin}/tile/")
        return self.gets("ledger/", r"^ledger/.+/tile/")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- real stations ------------------------------------------------------------------------

_tones = itertools.count()
_tones_lock = threading.Lock()


def _next_tone() -> int:
    # Every clip differs (a tone of its own), so no two stations store the same object.
    with _tones_lock:
        return 220 + 3 * next(_tones)


@dataclass(frozen=True)
class RealStation:
    """A station made by `custody init`, its cold store a shared S3 bucket."""

    number: int
    data: Path
    origin: str

    @property
    def conf(self) -> Path:
        return self.data / "custody.toml"

    @property
    def vkey(self) -> str:
        return (self.data / "keys" / "station.vkey").read_text().strip()

    @property
    def dock(self) -> Path:
        return self.data.parent / f"{self.data.name}-dock"

    def capture(self, ffmpeg: str, clips: int = 2, seconds: int = 1) -> int:
        """Record ``clips`` new clips, capture them with `custody ingest` (which
        replicates them and mirrors the ledger); returns the checkpoint size."""
        slot = self.dock / "slot01"
        for _ in range(clips):
            tone = _next_tone()
            make_clip(ffmpeg, slot / f"clip-{tone}.mp4", seconds=seconds, tone=tone, size="96x64")
        mirrored = self._ingest(self.dock)
        size = self.size()
        assert mirrored == size, f"{self.origin}: mirrored {mirrored}, checkpoint {size}"
        return size

    def _ingest(self, folder: Path) -> int:
        """`custody ingest` of ``folder`` (it replicates and mirrors the ledger); returns
        the mirrored size it reports (what `custody status` reports: the same table)."""
        p = run_cli("ingest", str(folder), "--settle-ms", "0", "--json", config=self.conf)
        return int(json.loads(p.stdout)["replication"]["ledger_mirrored_size"])

    def notes(self, n: int, tag: str = "remark", mirror: bool = True) -> int:
        """Record ``n`` signed notes (one entry each, one checkpoint for all: a cheap way
        to grow the log), then mirror the ledger; returns the checkpoint size."""
        f = self.data.parent / f"{self.data.name}-notes.txt"
        f.write_text("".join(f"{tag} {i}\n" for i in range(n)))
        p = run_cli("note", "--file", str(f), "--operator", "hub-test", "--json", config=self.conf)
        size = int(json.loads(p.stdout)["checkpoint_size"])
        if mirror:
            assert self.mirror() == size
        return size

    def checkpoint(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            run_cli("ledger", "checkpoint", "--json", config=self.conf).stdout
        )
        return doc

    def size(self) -> int:
        return int(self.checkpoint()["size"])

    def mirrored_size(self) -> int:
        st = json.loads(run_cli("status", "--json", config=self.conf).stdout)
        return int(st["cold_store"]["ledger_mirrored_size"])

    def mirror(self) -> int:
        """Mirror the ledger as it stands now (an ingest of an empty folder does only
        that); returns the mirrored size."""
        empty = self.data.parent / f"{self.data.name}-empty"
        empty.mkdir(exist_ok=True)
        return self._ingest(empty)


def station_origin(i: int) -> str:
    return f"{COUNTY}/dock-{i:02d}"


def new_station(
    tmp: Path, i: int, endpoint: str, bucket: str, origin: str | None = None
) -> RealStation:
    data = tmp / f"station-{i:02d}"
    origin = origin or station_origin(i)
    run_cli("init", "--data", str(data), "--origin", origin)
    conf = data / "custody.toml"
    conf.write_text(conf.read_text() + s3_store_conf(endpoint, bucket))
    return RealStation(i, data, origin)


def real_stations(
    n: int,
    seaweed: Any,
    tmp: Path,
    ffmpeg: str,
    bucket: str | None = None,
    clips: int = 2,
    parallel: int = 2,
    first: int = 1,
) -> tuple[str, list[RealStation]]:
    """``n`` real stations in one object-locked bucket (made unless given), each having
    captured ``clips`` one-second clips. Stations are set up ``parallel`` at a time
    (each step is a subprocess: two cores are kept busy, not swamped)."""
    if bucket is None:
        bucket = seaweed.bucket(f"ev-{os.urandom(6).hex()}")

    def one(i: int) -> RealStation:
        st = new_station(tmp, i, seaweed.endpoint, bucket)
        if clips:
            st.capture(ffmpeg, clips)
        return st

    with ThreadPoolExecutor(parallel) as pool:
        stations = list(pool.map(one, range(first, first + n)))
    return bucket, stations


# -- the hub ------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)


@dataclass(frozen=True)
class Hub:
    """A hub data folder made by `custody hub init`."""

    data: Path
    name: str = HUB_NAME

    @classmethod
    def init(cls, tmp: Path, name: str = HUB_NAME, **settings: Any) -> Hub:
        data = tmp / "hub"
        run_cli("hub", "init", "--data", str(data), "--name", name)
        hub = cls(data, name)
        hub.set(listen="", **settings)
        return hub

    @property
    def cfg(self) -> Path:
        return self.data / "hub.toml"

    def set(self, **settings: Any) -> None:
        """Top-level hub.toml keys (replaced where present, else added before the first
        table)."""
        text = self.cfg.read_text()
        for k, v in settings.items():
            line = f"{k} = {_toml_value(v)}"
            pat = re.compile(rf"^{re.escape(k)}\s*=.*$", re.M)
            head_end = text.index("\n[")
            if pat.search(text[:head_end]):
                text = pat.sub(line, text, count=1)
            else:
                text = text[: head_end + 1] + line + "\n" + text[head_end + 1 :]
        self.cfg.write_text(text)

    def add_station(
        self,
        origin: str,
        vkey: str,
        endpoint: str,
        bucket: str,
        store: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        lines = ["", "[[stations]]", f"origin = {_toml_value(origin)}"]
        lines.append(f"vkey = {_toml_value(vkey)}")
        for k, v in fields.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines += ["[stations.store]", 'kind = "s3"', f"bucket = {_toml_value(bucket)}"]
        lines.append(f"endpoint_url = {_toml_value(endpoint)}")
        for k, v in {"retry_max_s": 1, **(store or {})}.items():
            lines.append(f"{k} = {_toml_value(v)}")
        with self.cfg.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def follow(
        self, stations: Iterable[RealStation], endpoint: str, bucket: str, **fields: Any
    ) -> None:
        for st in stations:
            self.add_station(st.origin, st.vkey, endpoint, bucket, **fields)

    def run(
        self, *args: str, check: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli("hub", "-c", str(self.cfg), *args, check=check, env=env)

    def sync(
        self, expect: int | None = 0, env: dict[str, str] | None = None
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """One `custody hub sync --json`; its exit code must be ``expect`` (None: any)."""
        p = self.run("sync", "--json", env=env)
        if expect is not None:
            assert p.returncode == expect, (
                f"hub sync exited {p.returncode}, not {expect}\n"
                f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
            )
        doc: dict[str, Any] = json.loads(p.stdout) if p.stdout.strip() else {}
        return p, doc

    def status(self) -> dict[str, Any]:
        p = self.run("status", "--json")
        assert p.returncode in (0, 1), p.stderr
        doc: dict[str, Any] = json.loads(p.stdout)
        return doc

    def hub_status(self) -> dict[str, Any]:
        return self.status()["hub"]  # type: ignore[no-any-return]

    def witness_vkey(self) -> str:
        return str(self.hub_status()["witness_vkey"])

    def ledger_entries(self) -> list[dict[str, Any]]:
        """Every entry of the hub's own ledger (read-only)."""
        with Ledger(self.data / "ledger", self.data / "state", self.name, None) as led:
            return [dict(decode_entry(led.entry(i)).fields) for i in range(led.next_index())]

    def alarms(self) -> list[dict[str, Any]]:
        return [e for e in self.ledger_entries() if e["type"] == "alarm"]

    def catalog(self) -> Any:
        from hub.catalog import CountyCatalog
        from hub.config import load_hub

        return CountyCatalog.open(load_hub(self.cfg).catalog)


def by_origin(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["origin"]: s for s in doc["stations"]}


def rows_by_origin(table: Any) -> dict[str, list[int]]:
    """origin -> leaf indexes of the rows, sorted (duplicates kept)."""
    out: dict[str, list[int]] = {}
    for o, i in zip(
        table.column("origin").to_pylist(), table.column("leaf_index").to_pylist(), strict=True
    ):
        out.setdefault(o, []).append(int(i))
    return {o: sorted(v) for o, v in out.items()}


def assert_exactly_once(rows: dict[str, list[int]], sizes: dict[str, int]) -> None:
    """Each origin has exactly one row per index 0..size-1, and no other origin appears."""
    assert set(rows) <= set(sizes), f"rows for origins not followed: {set(rows) - set(sizes)}"
    for origin, size in sizes.items():
        got = rows.get(origin, [])
        dup = sorted({i for i in got if got.count(i) > 1}) if len(got) != len(set(got)) else []
        assert not dup, f"{origin}: duplicated rows for indexes {dup[:10]}"
        missing = sorted(set(range(size)) - set(got))
        assert not missing, f"{origin}: rows missing for indexes {missing[:10]}"
        extra = sorted(set(got) - set(range(size)))
        assert not extra, f"{origin}: rows beyond the verified size {size}: {extra[:10]}"


def one_line(text: str) -> bool:
    """A user-facing message: non-empty, one line, no traceback."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return len(lines) >= 1 and "Traceback" not in text


def lines_naming(text: str, *words: str) -> list[str]:
    return [ln for ln in text.splitlines() if all(w in ln for w in words)]


def bucket_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    token: dict[str, Any] = {}
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **token)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = {"ContinuationToken": page["NextContinuationToken"]}


def tile_keys(client: Any, bucket: str, origin: str) -> set[str]:
    return set(bucket_keys(client, bucket, f"ledger/{origin}/tile/"))


class HubServer:
    """`custody hub run` as a subprocess (serves add-checkpoint at ``listen``)."""

    def __init__(self, hub: Hub, port: int) -> None:
        self.hub = hub
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = hub.data.parent / "hub-run.log"
        cmd = [sys.executable, "-m", "custody", "hub", "-c", str(hub.cfg), "run"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("CUSTODY_CONFIG", None)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(
                        "custody hub run did not listen:\n" + self.log.read_text()[-3000:]
                    ) from None
                time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(30)


def copy_station(st: RealStation, number: int) -> RealStation:
    """A copy of the station's data folder (same key, same origin): a second history
    once it captures something of its own."""
    data = st.data.parent / f"{st.data.name}-copy{number}"
    shutil.copytree(st.data, data)
    conf = data / "custody.toml"
    conf.write_text(conf.read_text().replace(str(st.data), str(data)))
    return RealStation(st.number, data, st.origin)


class Scene:
    """Two real stations in one bucket and a hub that has followed both once; or, from
    `County.scene`, one victim of a county whose bystander and hub other scenes share."""

    shared = False  # other victims of the same hub may be in alarm: any sync may exit 1

    def __init__(
        self,
        tmp: Path,
        seaweed: Any,
        ffmpeg: str,
        station_fields: dict[str, Any] | None = None,
        **hub_settings: Any,
    ) -> None:
        self.seaweed = seaweed
        self.s3 = seaweed.client()
        self.bucket, (self.victim, self.bystander) = real_stations(2, seaweed, tmp, ffmpeg, clips=1)
        self.hub = Hub.init(tmp, **hub_settings)
        self.hub.follow(
            [self.victim, self.bystander], seaweed.endpoint, self.bucket, **(station_fields or {})
        )
        _, doc = self.hub.sync()
        assert {s["state"] for s in doc["stations"]} == {"ok"}, doc
        self.kid = CosignatureVerifier.parse(self.hub.witness_vkey()).key_id.hex()

    def sync(self) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """A sync before the attack: exit 0, unless other victims of the county are in
        alarm already."""
        return self.hub.sync(expect=None if self.shared else 0)

    def prefix(self, st: RealStation | None = None) -> str:
        return f"ledger/{(st or self.victim).origin}/"

    def get(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def put(self, key: str, body: bytes) -> None:
        """A new version of ``key`` (object lock keeps the old one, not the name)."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def cosigned(self) -> dict[str, bytes]:
        """What the hub has cosigned for the victim, as it stands in the bucket."""
        keys = bucket_keys(self.s3, self.bucket, f"{self.prefix()}cosigned/{self.kid}/")
        return {k: self.get(k) for k in keys}

    def caught(self, state: str, *words: str) -> dict[str, Any]:
        """One sync catches the attack: exit 1, the state, a problem line naming
        ``words``, one alarm entry; nothing newly cosigned; the bystander followed."""
        cosigned = self.cosigned()
        grown = self.bystander.notes(3, "bystander")
        p, doc = self.hub.sync(expect=1)
        v = by_origin(doc)[self.victim.origin]
        assert v["state"] == state, v
        assert v["problems"], v
        text = " ".join(v["problems"])
        for w in words:
            assert w in text, (w, v["problems"])
        assert self.victim.origin in p.stderr or self.victim.origin in p.stdout
        b = by_origin(doc)[self.bystander.origin]
        assert (b["state"], b["size"], b["cosigned_size"]) == ("ok", grown, grown), b
        assert self.cosigned() == cosigned, "the hub cosigned for a station in alarm"
        alarms = [a for a in self.hub.alarms() if a["origin"] == self.victim.origin]
        assert [a["state"] for a in alarms] == [state], alarms
        assert alarms[0]["problem"] and isinstance(alarms[0]["size"], int)
        # Another sync: still in alarm, still nothing cosigned, no second alarm entry.
        _, again = self.hub.sync(expect=1)
        assert by_origin(again)[self.victim.origin]["state"] == state
        alarms = [a for a in self.hub.alarms() if a["origin"] == self.victim.origin]
        assert len(alarms) == 1, f"an alarm entry each sync: {alarms}"
        assert self.cosigned() == cosigned
        # The JSON and the text status side by side (each spends seconds importing).
        with ThreadPoolExecutor(2) as pool:
            plain = pool.submit(self.hub.run, "status")
            st = self.hub.status()
            assert plain.result().returncode == 1
        assert by_origin(st)[self.victim.origin]["state"] == state
        return v


class County:
    """Real stations in one bucket followed by one hub, set up once for a module: each
    test takes a victim of its own (`scene`), and all share the bystander and the hub.
    Setting up two stations per test would cost the suite minutes for nothing."""

    def __init__(self, tmp: Path, seaweed: Any, ffmpeg: str, victims: int) -> None:
        self.seaweed = seaweed
        self.s3 = seaweed.client()
        self.bucket, stations = real_stations(victims + 1, seaweed, tmp, ffmpeg, clips=1)
        self.bystander = stations[-1]
        self.free = list(stations[:-1])
        self.hub = Hub.init(tmp)
        self.hub.follow(stations, seaweed.endpoint, self.bucket)
        _, doc = self.hub.sync()
        assert {s["state"] for s in doc["stations"]} == {"ok"}, doc
        self.kid = CosignatureVerifier.parse(self.hub.witness_vkey()).key_id.hex()

    def scene(self) -> Scene:
        sc = Scene.__new__(Scene)
        sc.shared = True
        sc.seaweed, sc.s3, sc.bucket = self.seaweed, self.s3, self.bucket
        sc.victim, sc.bystander = self.free.pop(0), self.bystander
        sc.hub, sc.kid = self.hub, self.kid
        return sc


__all__: Sequence[str] = (
    "COUNTY",
    "HUB_NAME",
    "CountingProxy",
    "County",
    "Hub",
    "HubServer",
    "RealStation",
    "Request",
    "Scene",
    "assert_exactly_once",
    "bucket_keys",
    "by_origin",
    "closed_port",
    "copy_station",
    "free_port",
    "lines_naming",
    "new_station",
    "one_line",
    "real_stations",
    "rows_by_origin",
    "station_origin",
    "tile_keys",
)
