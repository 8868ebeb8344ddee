"""benchmarks/capacity.py: the model's arithmetic on known inputs, and its inputs read from the shipped
results.json (each with where it was measured)."""

from __future__ import annotations

import json

from benchmarks.capacity import RESULTS, ingest, inputs, model

ASSET = {"published_bytes": 2_000_000, "duration_s": 20.0, "published_objects": 37, "segment_objects": 16,
         "segment_duration_s": 6.4, "catalog_rows": 1, "catalog_tables": ["assets"], "catalog_info_bytes": 1800,
         "layouts": ["segmented", "single"], "rungs": ["aac_256k", "aac_128k", "aac_64k", "opus_96k"]}


def test_inputs_come_from_the_bench_run_and_say_where():
    results = json.loads((RESULTS / "results.json").read_text())
    got = inputs(results, ASSET)
    assert got["origin_rps_core"][0] == next(r["rps"] for r in results["origin"]["rows"]
                                            if (r["server"], r["scenario"], r["connections"]) ==
                                            ("tonearm-w1", "segment", 64))
    assert 0.9 < got["edge_offload"][0] < 1
    assert all(where for _, where in got.values())  # every input names where it was measured


def test_the_model_on_known_inputs():
    known = {"origin_rps_core": 10_000, "origin_Bps_core": 1e9, "edge_rps_core": 30_000, "edge_Bps_core": 3e9,
             "edge_offload": 0.99, "worker_rtf_core": 10.0, "mean_track_s": 200.0,
             "object_bytes_per_audio_s": 100_000.0, "objects_per_asset": 37, "segment_objects_per_segment": 4,
             "measured_segments": 4, "catalog_rows_per_asset": 1, "catalog_info_bytes": 1800}
    rows = {r[0]: r[1:] for r in model({k: (v, "test") for k, v in known.items()})}
    assert rows["egress to listeners"][:2] == ("128 Gb/s", "1,280 Gb/s")
    assert rows["segment requests"][:2] == ("156,250 req/s", "1,562,500 req/s")
    # 1 M: 156,250 req/s x 1 % misses = 1,563 req/s -> 0.16 cores at 60 %: the floor of 3 applies
    assert rows["origin cores, hot release"][0] == "3"
    assert rows["origin cores, every request a miss"][:2] == ("27", "261")  # ceil(156250 / 10000 / 0.6)
    got = {r[0]: r[1] for r in ingest({k: (v, "test") for k, v in known.items()})}
    assert got["worker cores (average)"] == "24"  # 100,000 x 200 s / 10 / 86,400 = 23.1
    assert got["object store per asset"] == "20.0 MB"
