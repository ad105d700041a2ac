"""The report's statuses, JSON round trip and Markdown table."""
import json

import pytest

from kerascompress.pipeline.report import Metrics, Report, StepRecord


def _report():
    base = Metrics(params=1000, macs=50000, precision="float32", size_bytes=4000, gzip_bytes=3700,
                   latency_ms=1.0, accuracy=0.91, top1_agreement=1.0)
    after = Metrics(params=1000, macs=50000, precision="int8", size_bytes=1100, gzip_bytes=900,
                    latency_ms=0.4, accuracy=0.905, top1_agreement=0.99)
    r = Report("m", {"name": "x86", "runtime": "litert", "device": "cpu", "arch": "x86_64"}, {}, baseline=base)
    r.steps.append(StepRecord("quantize:int8", {"mode": "int8"}, "applied", "fast int8", "size+latency", base, after, 0.4))
    r.steps.append(StepRecord("quantize:fp16", {"mode": "fp16"}, "skipped", "already int8 | done", "none", after))
    r.final = after
    return r


def test_markdown_lists_every_step_with_status_and_reason():
    md = _report().to_markdown()
    assert "| quantize:int8 | applied | int8 | 1,000 | 50,000 | 1,100 | 900 | 0.400 | 0.40x | 0.9050 | 0.9900 |" in md
    assert "| quantize:fp16 | skipped |" in md and "already int8 / done" in md  # pipes escaped


def test_json_round_trip_keeps_numbers():
    data = json.loads(_report().to_json())
    assert data["steps"][0]["after"]["size_bytes"] == 1100
    assert data["steps"][1]["status"] == "skipped"
    assert data["baseline"]["accuracy"] == pytest.approx(0.91)


def test_step_lookup_and_bad_status():
    r = _report()
    assert r.step("quantize:fp16").status == "skipped"
    with pytest.raises(KeyError):
        r.step("nope")
    with pytest.raises(ValueError):
        StepRecord("x", {}, "maybe")
