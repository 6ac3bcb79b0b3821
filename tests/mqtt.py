"""A real MQTT broker (Debian's mosquitto) and a paho-mqtt subscriber for the event tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pygeoapi_prefect.prefect.server import free_port


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("the event tests need Debian's mosquitto: apt-get install mosquitto")
    return found


@dataclass
class Broker:
    """A mosquitto on a free loopback port, with its own config file; stop() and start() again."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        config = self.folder / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\n"
        )
        log = (self.folder / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [_mosquitto(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.folder / "mosquitto.log").read_text()
                raise RuntimeError(f"mosquitto exited: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mosquitto did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    server = Broker(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Subscriber:
    """Collects every message on ``topic`` (``#``: all) as (topic, decoded JSON)."""

    def __init__(self, broker: Broker, topic: str = "#") -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pygeoapi-prefect-tests")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        if not self._ready.wait(10):
            raise RuntimeError("subscription not acknowledged")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def job_events(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Our events (``org.pygeoapi.job.*``) about one job, as received."""
        with self._lock:
            return [
                (topic, event)
                for topic, event in self.messages
                if isinstance(event, dict)
                and str(event.get("type", "")).startswith("org.pygeoapi.job.")
                and event.get("subject") == job_id
            ]

    def wait_for(
        self, job_id: str, last_type: str, timeout: float = 60
    ) -> list[tuple[str, dict[str, Any]]]:
        """The job's events once one of type ``org.pygeoapi.job.<last_type>`` came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.job_events(job_id)
            if any(e["type"] == f"org.pygeoapi.job.{last_type}" for _, e in events):
                return events
            time.sleep(0.05)
        raise AssertionError(f"no {last_type} event for job {job_id}: {self.job_events(job_id)}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
