"""Prometheus metrics on localhost (``[metrics] listen = "127.0.0.1:9108"``), read from
the running daemon at each scrape: capture counters, queue depths, the cold-store
backlog, the ledger's size and checkpoint age, free space, the witnesses. Off unless
configured."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ledger.entry import parse_time


class DaemonCollector(Collector):
    def __init__(
        self,
        cap: Any,
        rep: Any,
        ledger: Any,
        data_dir: str,
        halted: Callable[[], str] | None = None,
        witnesses: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.cap, self.rep, self.ledger, self.data_dir = cap, rep, ledger, data_dir
        self.halted = halted or (lambda: "")
        self.witnesses = witnesses or (lambda: None)

    def collect(self) -> Iterator[Any]:
        yield _gauge(
            "custody_halted",
            "1 while an integrity error has stopped capture (see custody status)",
            int(bool(self.halted())),
        )
        yield _gauge(
            "custody_capture_problems",
            "Paths capture will not or cannot take (symlinks, unreadable folders, ...)",
            self.cap.problems.total(),
        )
        s = self.cap.stats
        yield _counter("custody_captured_files", "Files recorded by ingest entries", s.captured)
        yield _counter("custody_captured_bytes", "Bytes captured", s.bytes)
        yield _counter("custody_sightings", "Files already held, seen again", s.sightings)
        yield _counter("custody_capture_failures", "Capture attempts that failed", s.failed)
        yield _gauge("custody_files_waiting", "Files queued for capture", self.cap.queued_count())
        yield _gauge("custody_files_copying", "Files being copied now", len(self.cap.copying))
        yield _gauge(
            "custody_capture_paused", "1 while capture is paused", int(bool(self.cap.paused))
        )
        latest = self.ledger.latest()
        yield _gauge("custody_ledger_entries", "Entries in the ledger", self.ledger.next_index())
        if latest is not None:
            yield _gauge("custody_checkpoint_size", "Size of the latest checkpoint", latest.size)
            age = time.time() - parse_time(latest.signed_at).timestamp()
            yield _gauge("custody_checkpoint_age_seconds", "Age of the latest checkpoint", age)
        st = os.statvfs(self.data_dir)
        yield _gauge(
            "custody_free_bytes", "Free space in the data folder", st.f_bavail * st.f_frsize
        )
        if self.rep is not None:
            r = self.rep.status()
            yield _gauge(
                "custody_cold_backlog_objects",
                "Objects waiting for the cold store",
                r.get("backlog", 0),
            )
            yield _gauge(
                "custody_cold_backlog_bytes",
                "Bytes waiting for the cold store",
                r.get("backlog_bytes", 0),
            )
            yield _counter(
                "custody_cold_uploaded_bytes",
                "Bytes uploaded since start",
                r.get("uploaded_bytes", 0),
            )
        ws = self.witnesses()
        if ws is not None:
            yield from _witness_metrics(ws)


def _witness_metrics(ws: dict[str, Any]) -> Iterator[Any]:
    """From the witness client's status (see `witness.client.read_status`)."""
    yield _gauge(
        "custody_witness_quorum_met",
        "1 while the latest checkpoint carries the cosignatures the witness policy asks for",
        int(bool(ws["quorum_met"])),
    )
    yield _gauge(
        "custody_witness_quorum_alarm",
        "1 once the witness quorum has been unmet longer than [witness] alarm_after_s",
        int(bool(ws["alarm"])),
    )
    up = GaugeMetricFamily(
        "custody_witness_up",
        "1 while the witness answers with cosignatures, 0 while it fails (down or refusing)",
        labels=["witness"],
    )
    size = GaugeMetricFamily(
        "custody_witness_cosigned_size",
        "The size of this station's log the witness last cosigned, as it said",
        labels=["witness"],
    )
    ok = GaugeMetricFamily(
        "custody_witness_last_ok_timestamp_seconds",
        "When the witness last cosigned a checkpoint of this station (POSIX seconds)",
        labels=["witness"],
    )
    for w in ws["witnesses"]:
        up.add_metric([w["name"]], 0 if w["failing_since"] is not None else 1)
        if w["size"] is not None:
            size.add_metric([w["name"]], w["size"])
        if w["last_ok"] is not None:
            ok.add_metric([w["name"]], w["last_ok"])
    yield up
    yield size
    yield ok


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def serve(
    listen: str,
    cap: Any,
    rep: Any,
    ledger: Any,
    data_dir: str,
    halted: Callable[[], str] | None = None,
    witnesses: Callable[[], dict[str, Any] | None] | None = None,
) -> Callable[[], None]:
    """Start the HTTP endpoint; returns a function that stops it."""
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(DaemonCollector(cap, rep, ledger, data_dir, halted, witnesses))
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop
