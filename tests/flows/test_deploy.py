"""Deployment definitions build offline, with the parameters a GPU worker's run needs."""

from __future__ import annotations

from flows.deploy import ENTRYPOINT, build_deployment
from flows.launch import REPO_ROOT


def test_served_deployment_carries_the_params_file_and_overrides():
    d = build_deployment("configs/transfer-cifar10.yaml", ["attack.iterations=10"], gpus=4)
    assert d.name == "transfer-cifar10"
    assert d.parameters == {
        "params": "configs/transfer-cifar10.yaml",
        "overrides": ["attack.iterations=10"],
        "gpus": 4,
    }
    assert "gpu" in d.tags and d.work_pool_name is None


def test_work_pool_deployment_pulls_this_checkout():
    d = build_deployment("configs/imagenet-resnet50.yaml", pool="gpu", env={"NCCL_DEBUG": "WARN"})
    assert (d.work_pool_name, d.entrypoint) == ("gpu", ENTRYPOINT)
    assert d.job_variables == {"env": {"NCCL_DEBUG": "WARN"}}
    # The worker's run starts in the checkout, where data/ and artifacts/ are.
    step = d.storage.to_pull_step()["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == str(REPO_ROOT)
