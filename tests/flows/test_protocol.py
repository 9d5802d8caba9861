"""What the flow and its pool's workers share: one retry rule, and a result format that reads
back exactly what was written."""

from __future__ import annotations

from flows.execute import retryable
from flows.pool import pool_stage
from flows.protocol import parse_result, queue_gpus, result_markdown
from flows.transfer import run_stage


def test_a_result_reads_back_exactly_whatever_its_message_holds():
    entry = {"cmd": "python -m pipeline pretrain", "outs": [{"path": "a/b", "md5": "0" * 32}]}
    ran = {"ok": True, "worker": "host:clone", "ident": "pretrain@none-0", "entry": entry}
    # A message may hold fences, quotes and newlines of its own (a stage's error line).
    failed = {"ok": False, "worker": "w", "ident": "x", "exit_code": 2,
              "message": 'x: error: bad ```json\n{"ok": true}\n``` "quoted"'}  # fmt: skip
    for result in (ran, failed):
        markdown = result_markdown(result["ident"], result)
        assert parse_result(markdown) == result
        assert markdown.startswith(f"**{result['ident']}** on worker `{result['worker']}`")
    assert "failed (exit 2)" in result_markdown("x", failed)


def test_queue_names_give_the_gpus_a_run_takes():
    assert [queue_gpus(q) for q in ("cpu", "gpu1", "gpu4")] == [0, 1, 4]


def test_the_flow_and_the_pool_retry_by_one_rule():
    assert run_stage.retry_condition_fn is retryable
    assert pool_stage.retry_condition_fn is retryable
