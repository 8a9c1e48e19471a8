"""Reading a /metrics page, the one way: Prometheus' own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import call

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(url: str) -> dict[Sample, float]:
    """Every sample on a /metrics page (`http://host:port/metrics`), by name and sorted labels."""
    status, headers, body = call(url.removeprefix("http://").split("/", 1)[0], "GET",
                                 "/" + url.removeprefix("http://").split("/", 1)[1], timeout=10)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), (status, headers)
    text = body.decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus reads a series not yet moved)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))
