"""The Ray backend of parallel.py: the same jobs submitted to a Ray cluster (`ray.init()` starts one on this
machine; `ray:ADDRESS` joins one, `ray:auto` the one `ray start` began here). Imported only when asked for: Ray is
the optional `ray` extra, never a dependency of the core."""

from __future__ import annotations

from collections.abc import Callable

from unforced.errors import UnforcedError


def run_ray(payloads: dict, address: str | None, threads: int, retries: int, done: Callable) -> None:
    """Each job a Ray task asking for `threads` CPUs; a task whose worker dies is retried by Ray (max_retries),
    one that raises is submitted again (resumed from its checkpoints) up to `retries` times; bad input fails."""
    try:
        import ray
    except ImportError:
        raise UnforcedError("--parallel ray needs Ray: pip install 'unforced[ray]'") from None
    from unforced.parallel import run_job

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    remote = ray.remote(num_cpus=threads, max_retries=retries)(run_job)
    attempts = dict.fromkeys(payloads, 0)
    running = {remote.remote(*payloads[job], threads): job for job in payloads}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        job = running.pop(ready[0])
        try:
            ray.get(ready[0])
        except UnforcedError:  # a RayTaskError is an instance of its cause's class
            raise
        except Exception as error:  # noqa: BLE001
            attempts[job] += 1
            if attempts[job] > retries:
                raise UnforcedError(f"job {job.name()} failed {attempts[job]} times on Ray; last: {error}") from None
            running[remote.remote(*payloads[job], threads)] = job
            continue
        done(job)
