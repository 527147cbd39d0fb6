"""The latency benchmark runs end to end (small n) and reports consistent figures."""

from __future__ import annotations

from benchmarks.webhook_latency import PODS, main, review, run


def test_benchmark_runs_and_reports_percentiles() -> None:
    res = run(n=100, handshakes=10)
    for key in ("keepalive", "new_connection", "in_process"):
        s = res[key]
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert res["keepalive"]["n"] == 100 and res["new_connection"]["n"] == 10
    assert set(res["keepalive_by_pod"]) == set(PODS)
    assert 1500 < res["body_bytes"] < 4000  # the size of the captured reviews
    assert res["server_cpu_ms_per_review"] > 0 and res["reviews_per_s_one_connection"] > 0


def test_benchmark_bodies_are_what_the_webhook_expects() -> None:
    from webhook.admit import Policy
    from webhook.review import decide, parse_review

    results = {k: decide(parse_review(review(k, 0)), Policy()).result for k in PODS}
    assert results == {"whole": "patched", "fraction": "patched", "deny": "denied", "cpu-only": "skipped"}
    assert main(["--n", "100", "--handshakes", "10", "--json"]) == 0
