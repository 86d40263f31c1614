"""Where metric updates go: Ray's metrics agent under Ray, a prometheus-client HTTP endpoint without Ray."""

from __future__ import annotations

import sys

from perfray.metrics.definitions import EXPORT_PREFIX, METRICS


def warn(text: str) -> None:
    """One line on stderr; metrics problems never stop a run."""
    print(f"perfray: warning: {text}", file=sys.stderr)


class RaySink:
    """``ray.util.metrics`` objects, created on first use in this process."""

    def __init__(self) -> None:
        self._metrics: dict = {}

    def _get(self, name: str):
        metric = self._metrics.get(name)
        if metric is None:
            from ray.util import metrics

            d = METRICS[name]
            if d.kind == "counter":
                metric = metrics.Counter(d.name, description=d.description, tag_keys=d.tag_keys)
            elif d.kind == "gauge":
                metric = metrics.Gauge(d.name, description=d.description, tag_keys=d.tag_keys)
            else:
                metric = metrics.Histogram(d.name, description=d.description, boundaries=list(d.boundaries),
                                           tag_keys=d.tag_keys)
            self._metrics[name] = metric
        return metric

    def inc(self, name: str, value: float, tags: dict) -> None:
        if value > 0:
            self._get(name).inc(value, tags=tags)

    def set(self, name: str, value: float, tags: dict) -> None:
        self._get(name).set(value, tags=tags)

    def observe(self, name: str, values, tags: dict) -> None:
        histogram = self._get(name)
        for value in values:
            histogram.observe(float(value), tags=tags)


class PrometheusSink:
    """prometheus-client metrics in a private registry, served on 127.0.0.1:``port`` (0 = no server)."""

    def __init__(self, port: int = 0, addr: str = "127.0.0.1") -> None:
        import prometheus_client as pc

        self.registry = pc.CollectorRegistry()
        self._metrics = {}
        for d in METRICS.values():
            name = EXPORT_PREFIX + d.name
            if d.kind == "counter":
                self._metrics[d.name] = pc.Counter(name, d.description, d.tag_keys, registry=self.registry)
            elif d.kind == "gauge":
                self._metrics[d.name] = pc.Gauge(name, d.description, d.tag_keys, registry=self.registry)
            else:
                self._metrics[d.name] = pc.Histogram(name, d.description, d.tag_keys, buckets=d.boundaries,
                                                     registry=self.registry)
        self.port = None
        if port:
            try:
                pc.start_http_server(port, addr=addr, registry=self.registry)
                self.port = port
            except OSError as err:
                warn(f"metrics port {port} is not available ({err.strerror}); live metrics are off, the run goes on")

    def _labels(self, name: str, tags: dict):
        return self._metrics[name].labels(**{k: str(tags.get(k, "")) for k in METRICS[name].tag_keys})

    def inc(self, name: str, value: float, tags: dict) -> None:
        if value > 0:
            self._labels(name, tags).inc(value)

    def set(self, name: str, value: float, tags: dict) -> None:
        self._labels(name, tags).set(value)

    def observe(self, name: str, values, tags: dict) -> None:
        child = self._labels(name, tags)
        for value in values:
            child.observe(float(value))


class NullSink:
    def inc(self, name, value, tags):
        return None

    set = observe = inc
