"""Prometheus metrics, one registry per server so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.associations_active = Gauge(
            "hpacs_associations_active", "DICOM associations currently open", registry=r)
        self.associations_total = Counter(
            "hpacs_associations_total", "DICOM associations by result", ["result"], registry=r)
        self.instances_total = Counter(
            "hpacs_instances_total", "Instances received, by outcome", ["outcome"], registry=r)
        self.bytes_received_total = Counter(
            "hpacs_bytes_received_total", "Bytes of data sets stored", registry=r)
        self.store_seconds = Histogram(
            "hpacs_store_seconds", "From last fragment to durable (fsync + index commit)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0), registry=r)
        self.disk_pauses_total = Counter(
            "hpacs_disk_pauses_total", "Times reading from a peer paused for the disk",
            registry=r)
        self.aborts_total = Counter(
            "hpacs_aborts_total", "Associations aborted, by reason", ["reason"], registry=r)
        self.metadata_warmed = Gauge(
            "hpacs_metadata_warmed", "Instances whose DICOM JSON was computed after ingest",
            registry=r)
        self.metadata_pending = Gauge(
            "hpacs_metadata_pending", "Instances waiting for their DICOM JSON", registry=r)
        self.tier_migrated_instances = Counter(
            "hpacs_tier_migrated_instances_total", "Instances migrated hot -> cold", registry=r)
        self.tier_migrated_bytes = Counter(
            "hpacs_tier_migrated_bytes_total", "Original bytes migrated hot -> cold", registry=r)
        self.tier_promoted_instances = Counter(
            "hpacs_tier_promoted_instances_total", "Instances promoted cold -> hot", registry=r)
        self.tier_pending_studies = Gauge(
            "hpacs_tier_pending_studies", "Studies left to migrate in the current rule pass",
            registry=r)
        self.prefetch_studies = Counter(
            "hpacs_prefetch_studies_total", "Prior studies queued for promotion by prefetch",
            registry=r)
        #: instances_total children by outcome, looked up once: ``labels()`` validates its
        #: arguments and takes a lock on every call, and this one runs for every instance.
        self._instances: dict[str, Counter] = {}

    def instances(self, outcome: str) -> Counter:
        """The ``instances_total`` child counting ``outcome``."""
        child = self._instances.get(outcome)
        if child is None:
            child = self._instances[outcome] = self.instances_total.labels(outcome)
        return child
