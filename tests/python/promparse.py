"""Reading metrics output the way Prometheus does, for the metrics tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def prom_samples(text: str) -> dict[str, list]:
    """{metric name: [(labels, value)]} as Prometheus' own parser reads the text."""
    parsed: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed.setdefault(sample.name, []).append((sample.labels, sample.value))
    return parsed
