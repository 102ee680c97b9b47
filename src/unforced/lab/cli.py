"""`unforced lab`: serve the lab on 127.0.0.1:8765 (a warning when bound beyond loopback). The main CLI registers
this function as its `lab` command; fastapi and uvicorn (the `lab` extra) are imported only when it runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer
from rich.console import Console

from unforced.errors import UnforcedError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
stderr = Console(stderr=True)


def is_loopback(host: str) -> bool:
    """Whether `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def lab(host: str = typer.Option(DEFAULT_HOST, "--host", help="address to bind (loopback by default)"),
        port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="port to bind"),
        runs: Path = typer.Option(Path("lab-runs"), "--runs", help="folder of the lab's run directories"),
        max_jobs: int = typer.Option(2, "--max-jobs", min=1, max=16, help="training jobs allowed at once")):
    """Start the lab: a local web page that trains a model live and shows its exposure-bias gap close."""
    try:
        import torch
        import uvicorn

        from unforced.lab.app import create_app
        from unforced.lab.jobs import LAB_THREADS
    except ImportError as error:
        raise UnforcedError(f"the lab needs the 'lab' extra (pip install 'unforced[lab]'): {error}") from None
    if not is_loopback(host):
        stderr.print(f"[yellow]warning:[/yellow] binding {host}: the lab is reachable from other machines and has "
                     "no authentication; anyone who reaches it can start training jobs", highlight=False)
    torch.set_num_threads(LAB_THREADS)  # a fixed reduction order: a job's figures do not depend on the machine
    app = create_app(runs, max_jobs=max_jobs)
    stderr.print(f"lab: http://{host if ':' not in host else f'[{host}]'}:{port}/  (runs in {runs}; Ctrl-C stops)",
                 highlight=False)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                            limit_concurrency=64)
    uvicorn.Server(config).run()


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "lab"]
