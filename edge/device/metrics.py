"""``/metrics``: the device's figures in Prometheus's text format, for a clinic or a
maintainer that watches several devices (Frigate offers the same). Read from the running
service at each scrape (a ``prometheus_client`` custom collector), so nothing here keeps its
own counts that could drift from ``/api/status``."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric, SummaryMetricFamily

from edge.device.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceCollector:
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        counts, reasons, stages = s.stats.totals()
        fields = CounterMetricFamily("blastscope_fields", "Fields analysed since the start, by outcome", labels=["status"])
        for status in ("classified", "rejected"):
            fields.add_metric([status], counts.get(status, 0))
        yield fields
        rejected = CounterMetricFamily("blastscope_rejections", "Reasons given for rejected fields since the start",
                                       labels=["reason"])
        for reason, n in sorted(reasons.items()):
            rejected.add_metric([reason], n)
        yield rejected
        latency = SummaryMetricFamily("blastscope_stage_seconds", "Time per pipeline stage (and storing)", labels=["stage"])
        for stage, (n, total_ms) in sorted(stages.items()):
            latency.add_metric([stage], count_value=n, sum_value=total_ms / 1000)
        yield latency
        backend = InfoMetricFamily("blastscope_backend", "The inference backend in use")
        backend.add_metric([], {"active": str(s.pipeline.backends.name)})
        yield backend
        import edge

        build = InfoMetricFamily("blastscope_build", "The software release running")
        build.add_metric([], {"version": edge.__version__})
        yield build
        if s.camera is not None:
            yield GaugeMetricFamily("blastscope_camera_fps", "Frames per second the camera delivers",
                                    value=float(s.camera.state.fps))
        inferences = CounterMetricFamily("blastscope_inferences", "Model invocations per backend since the start",
                                         labels=["backend"])
        for name, speed in s.pipeline.backends.speed.items():
            inferences.add_metric([name], speed.fields)
        yield inferences
        yield GaugeMetricFamily("blastscope_analysis_queue_depth", "Analyses waiting for the worker",
                                value=float(s.analyses.waiting()))
        waiting, oldest = s.store.outbox.waiting()
        yield GaugeMetricFamily("blastscope_district_outbox", "Cases not yet on the district server", value=float(waiting))
        yield GaugeMetricFamily("blastscope_district_outbox_age_seconds", "Age of the oldest case not yet sent",
                                value=float(oldest or 0.0))
        model = InfoMetricFamily("blastscope_model", "The model bundle running")
        model.add_metric([], {"model_id": s.bundle.model_id, "release": str(s.bundle.release),
                              "signed": "yes" if s.bundle.signer else "no"})
        yield model
        yield GaugeMetricFamily("blastscope_disk_free_bytes", "Free space where results are stored",
                                value=s.store.free_mb() * 1e6)
        yield GaugeMetricFamily("blastscope_results_stored", "Results in the record", value=s.store.count())
        site = s.site.state()  # once a scrape: it reads the record
        yield GaugeMetricFamily("blastscope_site_verified", "1 when a site verification passed for the model and "
                                "camera settings in force (a new device is 0 and not degraded)",
                                value=1.0 if site.verified else 0.0)
        yield GaugeMetricFamily("blastscope_degraded", "1 when /api/status says degraded (see its reasons)",
                                value=1.0 if s.degraded_reasons(site) else 0.0)


def render(service: Service) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))  # type: ignore[arg-type]
    return generate_latest(registry)
