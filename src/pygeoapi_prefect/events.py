"""Job events: every state change of a job, published on pygeoapi's pub/sub broker.

With pygeoapi's ``pubsub`` block configured, each step of each job is
published as a CloudEvent (JSON, structured mode) from wherever the step
happens: the request of a sync job, the local pool of the server, a local
worker process (progress), or the flow run on a Prefect worker::

    {"specversion": "1.0", "id": "<uuid>", "type": "org.pygeoapi.job.running",
     "source": "https://example.org/pygeoapi/jobs", "subject": "<job id>",
     "time": "...", "datacontenttype": "application/json",
     "data": {<the job's status document, as GET /jobs/{jobId} shows it>}}

``type`` is ``org.pygeoapi.job.<kind>``, one of :data:`KINDS`; the topic
is ``[<broker.channel>/]processes/<process id>/jobs/<job id>``.

A broker never holds up a job: :meth:`EventPublisher.publish` only puts the
event on a bounded queue (full: dropped and counted), and one thread per
process sends them in order, connecting at most every few seconds with a
bounded connect and publish time. MQTT brokers (``mqtt://``, ``mqtts://``)
are talked to over one kept connection (paho-mqtt, ``pip install
pygeoapi-prefect[events]``); any other pygeoapi pub/sub plugin (HTTP,
Kafka, a dotted class path) through pygeoapi's own client.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pygeoapi_prefect.jobs import runs as jobs
from pygeoapi_prefect.urls import without_credentials

if TYPE_CHECKING:
    from pygeoapi_prefect.prefect.api import PrefectAPI

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_PUBSUB",
    "ENV_PUBSUB_URL",
    "KINDS",
    "EventPublisher",
    "cloud_event",
    "publisher_for",
    "safe_settings",
    "topic_for",
    "worker_settings",
]

#: The event kinds (``type`` is ``org.pygeoapi.job.<kind>``): the OGC job
#: statuses, and ``progress`` for each progress step of a running job.
KINDS = ("accepted", "running", "progress", "successful", "failed", "dismissed")
TYPE_PREFIX = "org.pygeoapi.job."
#: On a Prefect worker: pygeoapi's whole ``pubsub`` block as JSON.
ENV_PUBSUB = "PYGEOAPI_PREFECT_PUBSUB"
#: On a Prefect worker: the broker URL with its credentials (it replaces the
#: credential-free URL that the deployment carries).
ENV_PUBSUB_URL = "PYGEOAPI_PREFECT_PUBSUB_URL"

#: Events waiting to be sent in one process; more are dropped (and counted).
QUEUE_SIZE = 1000
#: Seconds a connect, and a publish's acknowledgement, may take.
CONNECT_TIMEOUT = 3.0
#: Seconds between connection attempts to a broker that is down.
RETRY_SECONDS = 5.0


def topic_for(settings: dict[str, Any], process_id: str, job_id: str) -> str:
    """The topic of a job's events: ``[<channel>/]processes/<process>/jobs/<job>``."""
    channel = ((settings.get("broker") or {}).get("channel") or "").strip("/")
    topic = f"processes/{process_id}/jobs/{job_id}"
    return f"{channel}/{topic}" if channel else topic


def safe_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``pubsub`` block without credentials (for deployments and logs)."""
    broker = dict(settings.get("broker") or {})
    if broker.get("url"):
        broker["url"] = without_credentials(str(broker["url"]))
    return {**settings, "broker": broker}


def worker_settings(baked: dict[str, Any] | None) -> dict[str, Any] | None:
    """The broker settings on a Prefect worker: its environment over what was deployed."""
    settings = baked
    raw = os.environ.get(ENV_PUBSUB)
    if raw:
        try:
            settings = json.loads(raw)
        except ValueError:
            logger.warning("%s is not JSON: no job events from this worker", ENV_PUBSUB)
            return None
    if not settings:
        return None
    url = os.environ.get(ENV_PUBSUB_URL)
    if url:
        settings = {**settings, "broker": {**(settings.get("broker") or {}), "url": url}}
    return settings


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def status_for(
    run: dict[str, Any],
    kind: str,
    *,
    progress: int | None = None,
    message: str | None = None,
    ui_url: str | None = None,
) -> dict[str, Any]:
    """The status document of ``run`` as it was at the event ``kind``.

    The run may have been read after it moved on (events are built off the
    job's path): status, progress and message are the event's own.
    """
    job = jobs.job_from_flow_run(run)
    status = "running" if kind == "progress" else kind
    if job["status"] != status:
        job["status"] = status
        job["message"] = message or jobs.default_message(status)
        if status not in ("successful", "failed", "dismissed"):
            job["finished"] = ""
        if status == "accepted":
            job["started"] = ""
    elif message:
        job["message"] = message
    if progress is not None:
        job["progress"] = progress
    labels = run.get("labels") or {}
    return jobs.status_document(job, jobs_url=labels.get(jobs.JOBS_URL_LABEL), ui_url=ui_url)


def cloud_event(
    kind: str, job_id: str, document: dict[str, Any], source: str, event_id: str | None = None
) -> dict[str, Any]:
    """A CloudEvent 1.0 (structured mode) of a job's step (``event_id``: else a new one)."""
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "type": TYPE_PREFIX + kind,
        "source": source,
        "subject": job_id,
        "time": _now(),
        "datacontenttype": "application/json",
        "data": document,
    }


@dataclass
class _Event:
    kind: str
    job_id: str
    run: dict[str, Any] | None
    progress: int | None
    message: str | None
    event_id: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _MQTT:
    """One kept connection to an MQTT broker."""

    def __init__(self, url: str) -> None:
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pygeoapi-prefect-{uuid.uuid4().hex[:12]}"
        )
        self.client.connect_timeout = CONNECT_TIMEOUT
        if parts.username:
            self.client.username_pw_set(parts.username, parts.password)
        if parts.scheme == "mqtts":
            self.client.tls_set()
        self.connected = False
        self._acked = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, *args: Any) -> None:
        # (client, userdata, flags, reason code, properties)
        if not getattr(args[3], "is_failure", False):
            self._acked.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.connected = False

    def connect(self) -> None:
        self._acked.clear()
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._acked.wait(CONNECT_TIMEOUT):
            self.client.loop_stop()
            self.client.disconnect()
            raise OSError(f"no CONNACK within {CONNECT_TIMEOUT:g} s")
        self.connected = True

    def publish(self, topic: str, payload: str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(CONNECT_TIMEOUT)
        if not info.is_published():
            raise OSError(f"not acknowledged within {CONNECT_TIMEOUT:g} s (rc {info.rc})")

    def close(self) -> None:
        if self.connected:
            self.client.disconnect()
            self.client.loop_stop()
        self.connected = False


class _Plugin:
    """Any other pygeoapi pub/sub client (HTTP, Kafka, a class path)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from pygeoapi.plugin import load_plugin

        self.client = load_plugin("pubsub", settings)
        self.connected = False

    def connect(self) -> None:
        self.client.connect()
        self.connected = True

    def publish(self, topic: str, payload: str) -> None:
        if self.client.pub(topic, payload) is False:
            raise OSError("the pub/sub client did not publish")

    def close(self) -> None:
        self.connected = False


class EventPublisher:
    """Publishes one process's job events, in order, off the jobs' path.

    Args:
        settings: pygeoapi's ``pubsub`` block (``name``, ``broker.url``,
            ``broker.channel``).
        read_run: reads a flow run (``None`` if gone), for events given no run.
        source: the CloudEvents ``source`` of jobs without a ``pygeoapi.jobs_url``.

    """

    def __init__(
        self,
        settings: dict[str, Any],
        read_run: Callable[[str], dict[str, Any] | None],
        *,
        source: str = "urn:pygeoapi-prefect:jobs",
        ui_url: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.read_run = read_run
        self.source = source
        self.ui_url = ui_url
        self.dropped = 0
        self.published = 0
        self._queue: queue.Queue[_Event | None] = queue.Queue(QUEUE_SIZE)
        self._broker: _MQTT | _Plugin | None = None
        self._next_connect = 0.0
        self._thread = threading.Thread(
            target=self._loop, name="pygeoapi-prefect-events", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        url = (self.settings.get("broker") or {}).get("url", "")
        return f"<EventPublisher {without_credentials(str(url))}>"

    def publish(
        self,
        kind: str,
        job_id: str,
        *,
        run: dict[str, Any] | None = None,
        progress: int | None = None,
        message: str | None = None,
        event_id: str | None = None,
    ) -> threading.Event | None:
        """Queue a job's event (never blocks); returns what is set once it was handled.

        ``event_id``: the CloudEvent's id, when it must be the same wherever the
        event is made (the watcher's come from Prefect's event ids); else a new one.
        """
        event = _Event(kind, job_id, run, progress, message, event_id)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning("job events queue full: %d event(s) dropped", self.dropped)
            return None
        return event.done

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the events queued so far to be handled."""
        marker = _Event("flush", "", None, None, None)
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self) -> None:
        """Stop the thread (queued events are dropped) and disconnect."""
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    # -- the sending thread ---------------------------------------------------

    def _loop(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                break
            try:
                if event.kind != "flush":
                    self._send(event)
            except Exception:  # noqa: BLE001 - an event never stops the publisher
                logger.exception("job %s: %s event not published", event.job_id, event.kind)
            finally:
                event.done.set()
        if self._broker is not None:
            self._broker.close()

    def _send(self, event: _Event) -> None:
        run = event.run if event.run is not None else self.read_run(event.job_id)
        if run is None:
            logger.info("job %s is gone: no %s event", event.job_id, event.kind)
            return
        ui_url = self.ui_url(event.job_id) if self.ui_url else None
        document = status_for(
            run, event.kind, progress=event.progress, message=event.message, ui_url=ui_url
        )
        source = (run.get("labels") or {}).get(jobs.JOBS_URL_LABEL) or self.source
        message = cloud_event(event.kind, event.job_id, document, source, event.event_id)
        topic = topic_for(self.settings, document.get("processID") or "unknown", event.job_id)
        broker = self._connected()
        if broker is None:
            self.dropped += 1
            logger.info("broker down: job %s %s event dropped", event.job_id, event.kind)
            return
        try:
            broker.publish(topic, json.dumps(message, default=str))
            self.published += 1
        except Exception as exc:  # noqa: BLE001 - the broker went away
            self.dropped += 1
            logger.warning("job %s: %s event not published: %s", event.job_id, event.kind, exc)
            broker.close()
            self._next_connect = time.monotonic() + RETRY_SECONDS

    def _connected(self) -> _MQTT | _Plugin | None:
        if self._broker is not None and self._broker.connected:
            return self._broker
        if time.monotonic() < self._next_connect:
            return None
        url = str((self.settings.get("broker") or {}).get("url") or "")
        try:
            if self._broker is None:
                mqtt = urlsplit(url).scheme in ("mqtt", "mqtts")
                self._broker = _MQTT(url) if mqtt else _Plugin(self.settings)
            self._broker.connect()
            return self._broker
        except Exception as exc:  # noqa: BLE001 - a broker down never fails a job
            self._next_connect = time.monotonic() + RETRY_SECONDS
            logger.warning(
                "job events: broker %s unreachable (next try in %g s): %s",
                without_credentials(url),
                RETRY_SECONDS,
                exc,
            )
            return None


_PUBLISHERS: dict[tuple[int, str], EventPublisher] = {}
_LOCK = threading.Lock()


def publisher_for(settings: dict[str, Any], api: PrefectAPI | str) -> EventPublisher:
    """This process's publisher for a broker, reading runs through ``api`` (workers, job processes).

    ``api``: the client of the process (a local job's, shared with its
    heartbeats and log shipping), or the API URL (a client of its own).
    """
    api_url = api if isinstance(api, str) else api.api_url
    key = (os.getpid(), json.dumps(settings, sort_keys=True, default=str) + api_url)
    with _LOCK:
        publisher = _PUBLISHERS.get(key)
        if publisher is None:
            from pygeoapi_prefect.prefect.api import client_of

            client = client_of(api)
            publisher = _PUBLISHERS[key] = EventPublisher(
                settings, client.read_flow_run, ui_url=client.flow_run_url
            )
    return publisher
