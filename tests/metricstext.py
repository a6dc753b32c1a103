"""Reading the Prometheus text format in tests (prometheus_client's own parser):
values are floats (`7.0`), labels in any order, so no test matches lines."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly `labels` (None when there is none)."""
    return samples(text).get((name, frozenset(labels.items())))


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 without any)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= ls)


def label_values(text: str, name: str, label: str) -> set[str]:
    """The values label `label` takes in the samples `name`."""
    return {dict(ls)[label] for (n, ls) in samples(text) if n == name and label in dict(ls)}
