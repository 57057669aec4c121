"""The capacity benchmark's summary: from the steps of each run to the flat figures scripts read
in bench-results/results.json (issue 17: node CPU, Kamailio CPU, max calls/s, Redis commands,
Python callbacks, INVITE->100 p99 for A, A0, B, Bmin and C, medians over the repetitions), and
the Redis census that shows what a run leaves behind. Pure functions on made-up data."""

from __future__ import annotations

from benchmarks import capacity
from benchmarks.capacity import Step

CONFIGS = ("A", "A0", "B", "Bmin", "C")


def _steady(node_ms: float, kamailio_ms: float, redis_per_call: int | None, callbacks_per_call: int | None,
            latency_ms: float, calls: int = 600) -> Step:
    """A passing first step at 100 calls/s with the given per-call costs."""
    kamailio_s = kamailio_ms * calls / 1000
    return Step(rate=100, calls=calls, passed=True, successful=calls, wall_s=6.0,
                kamailio_cpu_s=kamailio_s, node_cpu_s=node_ms * calls / 1000,
                helper_cpu_s=(node_ms - kamailio_ms) * calls / 1000,
                family_cpu_s={"kamailio": kamailio_s, "redis": (node_ms - kamailio_ms) * calls / 1000},
                redis_commands=None if redis_per_call is None else redis_per_call * calls,
                py_callbacks=None if callbacks_per_call is None else float(callbacks_per_call * calls),
                py_callbacks_by={} if callbacks_per_call is None else {"ksr_request_route": float(calls)},
                invite_100_ms=[1.0] * 98 + [latency_ms] * 2)


def _run(name: str, rep: int) -> dict[str, object]:
    """Run ``rep`` (0, 1, 2) of a configuration: every figure grows with the run, so the
    median is run 1's."""
    python = name in ("A", "A0")
    steady = _steady(node_ms=10.0 + rep, kamailio_ms=8.0 + rep, redis_per_call=80 + rep if python or name == "B"
                     else None, callbacks_per_call=30 + rep if python else None, latency_ms=90.0 + rep)
    failed = Step(rate=200 + 100 * rep, calls=1200, passed=False, reason="failed calls")
    result = capacity.figures(name, 100 + 50 * rep, [steady, failed])
    result["processes"] = 10
    return result


def test_summary_carries_every_figure_of_every_configuration_as_the_median_of_its_runs() -> None:
    runs = {name: [_run(name, rep) for rep in (2, 0, 1)] for name in CONFIGS}

    summary = capacity.summarise(runs)

    for name in CONFIGS:
        assert summary[f"{name}_node_cpu_ms_per_call"] == 11.0
        assert summary[f"{name}_cpu_ms_per_call"] == 9.0
        assert summary[f"{name}_max_cps"] == 150
        assert summary[f"{name}_invite_100_p99_ms"] == 91.0
        assert summary[f"{name}_runs"] == 3
        assert summary["spread"][f"{name}_max_cps"] == [100, 200]
        assert summary["spread"][f"{name}_node_cpu_ms_per_call"] == [10.0, 12.0]
    assert summary["A_redis_cmds_per_call"] == summary["B_redis_cmds_per_call"] == 81
    assert summary["Bmin_redis_cmds_per_call"] == summary["C_redis_cmds_per_call"] == 0.0  # no Redis on the path
    assert summary["A_py_callbacks_per_call"] == summary["A0_py_callbacks_per_call"] == 31
    assert not any(f"{name}_py_callbacks_per_call" in summary for name in ("B", "Bmin", "C"))


def test_summary_judges_issue_17_targets_on_the_medians() -> None:
    runs = {name: [_run(name, rep) for rep in (0, 1, 2)] for name in CONFIGS}

    summary = capacity.summarise(runs)

    assert summary["target_A_node_cpu_le_B"].startswith("met")  # equal medians
    assert summary["target_A_max_cps_ge_B"].startswith("met")
    assert summary["target_A_kamailio_cpu_le_1.5C"].startswith("met")
    assert summary["target_A_py_callbacks_le_8"].startswith("MISSED")
    assert summary["A/C_cpu_ms_per_call"] == 1.0


def test_runs_whose_common_rate_step_failed_are_counted() -> None:
    failing = _run("A", 1)
    failing["common_rate_passed"] = False

    summary = capacity.summarise({"A": [_run("A", 0), failing], "B": [_run("B", 0)]})

    assert summary["A_runs_failing_the_common_rate"] == 1
    assert "B_runs_failing_the_common_rate" not in summary


def test_one_run_is_its_own_median_and_a_missing_figure_is_left_out() -> None:
    run = _run("A", 0)
    run["invite_100_p99_ms"] = None  # too few samples for a percentile

    summary = capacity.summarise({"A": [run]})

    assert summary["A_max_cps"] == 100
    assert summary["spread"]["A_max_cps"] == [100, 100]
    assert "A_invite_100_p99_ms" not in summary


def test_redis_keys_are_grouped_by_family_with_identities_left_out() -> None:
    assert capacity.key_family("warp:active:trunk:6f1c2a9e-0f5b-4d3e-9a51-3f0f7c1d2e4b") == "warp:active:trunk:*"
    assert capacity.key_family("warp:lrn:12125550100") == "warp:lrn:*"
    assert capacity.key_family("warp:ledger") == "warp:ledger"
    assert capacity.key_family("warp:qp:bench-vendor-01:1212") == "warp:qp:bench-vendor-01:*"
    # topos_redis: a branch record per Call-ID, From tag and tpsh id; a dialog record per tpsh id
    assert capacity.key_family("b:x:INVITE:A1-1-13286@127.0.0.121:13285SIPpTag011:xtpsh-6b0f0349-33c9-92") \
        == "b:x:INVITE:*"
    assert capacity.key_family("d:z:atpsh-6b0f0349-33cd-1") == "d:z:*"


def test_census_growth_names_the_families_that_grew_and_only_those() -> None:
    before = {"warp:lrn:*": {"keys": 10, "members": 10, "bytes": 800},
              "warp:resv:*": {"keys": 1, "members": 0, "bytes": 100}}
    after = {"warp:lrn:*": {"keys": 10, "members": 10, "bytes": 800},
             "warp:resv:*": {"keys": 1, "members": 258, "bytes": 9000},
             "_tps:*": {"keys": 40, "members": 400, "bytes": 4000}}

    growth = capacity.census_growth(before, after)

    assert set(growth) == {"warp:resv:*", "_tps:*"}
    assert growth["warp:resv:*"]["members_delta"] == 258
    assert growth["_tps:*"]["keys_after"] == 40


def test_the_latency_at_80_percent_and_the_python_cpu_are_medians_and_judged() -> None:
    runs = {name: [_run(name, rep) for rep in (0, 1, 2)] for name in CONFIGS}
    for rep, result in enumerate(runs["A"]):
        result.update({"invite_100_p99_ms_at_80pct": 8.0 + 2 * rep, "rate_80pct": 80})
        result["py_cpu_ms_per_call"] = 3.0 + rep

    summary = capacity.summarise(runs)

    assert summary["A_invite_100_p99_ms_at_80pct"] == 10.0 and summary["A_py_cpu_ms_per_call"] == 4.0
    assert summary["target_A_invite_100_p99_le_10ms_at_80pct"].startswith("met")
    runs["A"][1]["invite_100_p99_ms_at_80pct"] = 12.5
    assert capacity.summarise(runs)["target_A_invite_100_p99_le_10ms_at_80pct"].startswith("MISSED")


def test_a_step_s_python_cpu_by_callback_becomes_ms_per_call() -> None:
    steady = _steady(10.0, 8.0, 80, 7, 1.0)
    steady.py_cpu_s_by = {"ksr_request_route": 1.2, "ksr_dialog_event": 0.6}  # over its 600 calls
    result = capacity.figures("A", 100, [steady])
    assert result["py_cpu_ms_per_call"] == 3.0
    assert result["py_cpu_ms_per_call_by"] == {"ksr_dialog_event": 1.0, "ksr_request_route": 2.0}
