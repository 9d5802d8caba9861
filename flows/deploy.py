"""Deployments of the transfer flow for GPU machines: served in place, or pulled from a work pool.

Serve (one long-running process on the GPU machine; runs are started from the UI or CLI)::

    python -m flows.deploy serve --params configs/transfer-cifar10.yaml
    prefect deployment run 'transfer/transfer-cifar10' --param gpus=4

Work pool (any number of GPU machines, each running a worker; the flow's code is read from
``--source``: this checkout's path, which must exist on the workers, or a git URL)::

    prefect work-pool create gpu --type process
    python -m flows.deploy deploy --pool gpu --params configs/transfer-cifar10.yaml
    prefect worker start --pool gpu --limit 1      # on each GPU machine

A flow run hands the GPUs of the machine it runs on to its stages, so each worker should run
one flow run at a time (``--limit 1``). Building a deployment needs no server; registering or
serving it talks to the Prefect API in ``PREFECT_API_URL``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.launch import REPO_ROOT
from flows.transfer import transfer

ENTRYPOINT = "flows/transfer.py:transfer"


def default_name(params: str) -> str:
    """``configs/transfer-cifar10.yaml`` -> ``transfer-cifar10``."""
    return Path(params).stem


def flow_parameters(params: str, overrides: list[str], gpus: int | None) -> dict:
    parameters: dict = {"params": params, "overrides": list(overrides)}
    if gpus is not None:
        parameters["gpus"] = gpus
    return parameters


def build_deployment(
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    name: str | None = None,
    pool: str | None = None,
    source: str | None = None,
    gpus: int | None = None,
    tags: list[str] | None = None,
    env: dict[str, str] | None = None,
):
    """A ``RunnerDeployment`` of the transfer flow (built locally; nothing is contacted).

    Without ``pool`` it is for :meth:`serve` in this process. With ``pool`` the flow is loaded
    from ``source`` (default: this checkout) so a worker elsewhere can pull it; the run's
    working directory is the checkout, where ``data/`` and ``artifacts/`` live.
    """
    kwargs = {
        "name": name or default_name(params),
        "parameters": flow_parameters(params, overrides or [], gpus),
        "tags": ["gpu", *(tags or [])],
        "description": f"Transfer DAG of {params} (stages that are up to date are skipped)",
    }
    if pool is None:
        return transfer.to_deployment(**kwargs)
    loaded = transfer.from_source(source=source or str(REPO_ROOT), entrypoint=ENTRYPOINT)
    return loaded.to_deployment(
        work_pool_name=pool, job_variables={"env": dict(env or {})}, **kwargs
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("serve", "deploy"):
        p = sub.add_parser(command)
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--name", default=None, help="deployment name (default: the file's stem)")
        p.add_argument("--gpus", type=int, default=None, help="GPUs per flow run (default: all)")
        if command == "deploy":
            p.add_argument("--pool", required=True, help="work pool of the GPU workers")
            p.add_argument("--source", default=None, help="checkout path or git URL")
    ns = parser.parse_args(argv)
    from pipeline.core.config import load_config
    from pipeline.plan import plan

    plan(load_config(ns.params, ns.overrides))  # a bad file fails before anything is registered
    if ns.command == "serve":
        from prefect import serve

        serve(build_deployment(ns.params, ns.overrides, ns.name, gpus=ns.gpus))
        return 0
    from prefect import deploy

    deployment = build_deployment(
        ns.params, ns.overrides, ns.name, pool=ns.pool, source=ns.source, gpus=ns.gpus
    )
    deploy(deployment, work_pool_name=ns.pool, build=False, push=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
