"""Traces and metrics of a pull, with OpenTelemetry, against an in-process registry.

Run it: ``python examples/observability.py`` (needs ``pip install -e '.[testing,otel]'
opentelemetry-sdk``).

aociauth makes the spans itself once an OpenTelemetry SDK is set up (the
``otel`` extra brings the API it calls). Its counters are ``mw.stats``, an
``AuthStats`` of plain numbers: :func:`observe_auth_stats` turns them into
observable counters that the SDK reads at each collection. Here both go to
in-memory readers and are printed; an application would set up OTLP (or
Prometheus) exporters instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import aiohttp
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aociauth
from aociauth.testing import Registry, TokenServer

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def observe_auth_stats(
    meter: Meter, stats: aociauth.AuthStats, attributes: Mapping[str, str]
) -> None:
    """Report every counter of ``stats`` as an observable counter named ``aociauth.<field>``.

    The SDK calls the callbacks when it collects (each export interval): the
    middleware does no metrics work of its own. ``token_requests`` becomes one
    counter with an ``aociauth.grant`` attribute per kind of token request.
    """

    def reading(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(getattr(stats, name), attributes)

        return read

    def token_requests(options: CallbackOptions) -> Iterable[Observation]:
        for grant, n in stats.token_requests.items():
            yield Observation(n, {**attributes, "aociauth.grant": grant})

    for field in dataclasses.fields(stats):
        if field.name != "token_requests":
            meter.create_observable_counter(
                f"aociauth.{field.name}", callbacks=[reading(field.name)]
            )
    meter.create_observable_counter("aociauth.token_requests", callbacks=[token_requests])


async def main() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    async with (
        TokenServer(users={"alice": "alice-password"}) as token_server,
        Registry(auth="bearer", token_server=token_server) as registry,
    ):
        for i in range(5):
            registry.seed_image(f"team/app{i}", "v1")
        config = aociauth.ConfigFile.from_dict(
            {"auths": {registry.host: {"username": "alice", "password": "alice-password"}}}
        )
        params = aociauth.StdTransportParams(config=config)
        async with (
            aociauth.new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw]) as session,
        ):
            meter = metrics.get_meter("my-puller")
            observe_auth_stats(meter, mw.stats, {"registry": registry.host})
            for _ in range(3):  # every image three times: the second and third are cached
                for i in range(5):
                    url = f"{registry.url}/v2/team/app{i}/manifests/v1"
                    async with session.get(url, headers={"Accept": ACCEPT}) as resp:
                        resp.raise_for_status()

    made = Counter(span.name for span in spans.get_finished_spans())
    for name, n in sorted(made.items()):
        print(f"span {name}: {n}")
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    grant = point.attributes.get("aociauth.grant") if point.attributes else None
                    label = f"{metric.name}{{grant={grant}}}" if grant else metric.name
                    if point.value:
                        print(f"metric {label}: {point.value}")


if __name__ == "__main__":
    asyncio.run(main())
