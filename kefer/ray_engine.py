"""The Ray engine: a collection's units on Ray actors, each holding one loaded model.

    run_ray(collection, settings, address=None, workers=None)   # an embedded local Ray
    run_ray(collection, settings, address="auto")               # the cluster on this node
    run_ray(collection, settings, address="ray://head:10001")  # a remote cluster (Ray Client)

Without ``address`` it starts Ray inside this process's session, sized to the machine (every CPU,
every GPU), and stops it at the end. Each actor (``Analyst``) loads the model once and runs units
one at a time: a whole video (its tracks need its frames in order) or a batch of images, written to
its part file by the worker itself (the parts folder must be shared with the workers, as the
inputs are). An actor that dies is restarted and its unit retried (``RETRIES`` times): the part is
rewritten whole under the same name and recorded once, so a retry adds no duplicate row. The
driver waits until every actor has its model, keeps one unit in flight per actor, records finished
units in order of completion, and asks the busy actors for their frames once a second for the
progress display.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from .worker import Settings, Worker

log = logging.getLogger("kefer")

RETRIES = 3                      # attempts after an actor dies mid-unit
OBJECT_STORE = 256 * 1024 ** 2   # bytes: results are small (manifest entries); rows go to part files


class Analyst:
    """One Ray actor: a ``Worker`` (the model loaded once), a unit at a time, in the driver's working
    folder ``cwd`` (where the node has it: shared storage), so relative input paths mean the same."""

    def __init__(self, settings: Settings, cwd: str):
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.worker = Worker(settings)

    def run(self, unit, folder: str) -> list[dict]:
        return self.worker.run(unit, Path(folder))

    def unit_frames(self) -> int:
        return self.worker.unit_frames


def start(address: str | None) -> bool:
    """Join the cluster at ``address``, or start an embedded Ray on this machine (workers find this
    kefer through PYTHONPATH) -> whether this call started the connection (False: the caller's
    ``ray.init`` is used, and left for it to shut down)."""
    import ray

    import kefer

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return True
    root = str(Path(kefer.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=OBJECT_STORE,
             logging_level=logging.WARNING, runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True


def sizing(resources: dict, workers: int | None, device: str) -> tuple[int, dict, int]:
    """Cluster resources {"CPU": n, "GPU": m} -> (actors, each actor's Ray resources, its threads).
    Default: one actor per CPU; the CPUs (and with ``device`` cuda, the GPUs) shared out evenly."""
    cpus = max(resources.get("CPU", 1.0), 1.0)
    n = workers or int(cpus)
    need = {"num_cpus": min(1.0, cpus / n)}
    if device.startswith("cuda"):
        gpus = resources.get("GPU", 0.0)
        if not gpus:
            raise ValueError("--device cuda: the Ray cluster has no GPU")
        need["num_gpus"] = min(1.0, gpus / n)
    return n, need, max(1, int(cpus // n))


def run_ray(collection, settings: Settings, address: str | None = None, workers: int | None = None) -> None:
    """Analyse ``collection``'s units on Ray actors; see the module's docstring."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install -r requirements.txt)") from err
    started = start(address)
    try:
        n, need, threads = sizing(ray.cluster_resources(), workers, settings.device)
        threads = settings.threads or threads
        log.info("Ray: %d worker(s), each %s and %d thread(s); %d node(s)", n, need, threads, len(ray.nodes()))
        remote = ray.remote(max_restarts=-1, max_task_retries=RETRIES, max_concurrency=2, **need)(Analyst)
        actors = [remote.remote(replace(settings, threads=threads), os.getcwd()) for _ in range(n)]
        ready(actors)
        collection.progress.started()
        drive(collection, actors, deque(collection.units(settings.batch)))
    finally:
        if started:
            ray.shutdown()


def ready(actors: list) -> None:
    """Wait until every actor has loaded its model (RuntimeError with the first actor's reason when
    one cannot: a model or an input folder that a node does not have, say). The frames/s after
    start-up are counted from here, not from the first actor's first frames."""
    import ray
    from ray.exceptions import RayError

    start = time.monotonic()
    try:
        ray.get([actor.unit_frames.remote() for actor in actors])
    except RayError as err:
        reason = str(err).strip().splitlines()
        raise RuntimeError(f"a Ray worker could not start: {reason[-1] if reason else err}") from err
    log.info("Ray: %d worker(s) ready in %.1f s", len(actors), time.monotonic() - start)


def drive(collection, actors: list, todo: deque) -> None:
    """One unit in flight per actor; record each as it finishes; poll progress once a second."""
    import ray
    from ray.exceptions import RayError

    folder = str(collection.folder.resolve())
    busy = {}

    def submit(actor) -> None:
        if todo:
            unit = todo.popleft()
            busy[actor.run.remote(unit, folder)] = (actor, unit)

    for actor in actors:
        submit(actor)
    while busy:
        done, _ = ray.wait(list(busy), num_returns=1, timeout=1.0)
        for ref in done:
            actor, unit = busy.pop(ref)
            try:
                entries = ray.get(ref)
            except RayError as err:   # the actor died on this unit more often than it is retried
                reason = str(err).strip().splitlines()[0][:200]
                entries = [Worker.failed_entry(p, unit.kind, f"{Path(p).name}: its worker died {RETRIES + 1} times "
                                                             f"({reason})") for p in unit.paths]
            collection.record(entries)
            submit(actor)
        collection.progress.frames(collection.summary.frames + in_flight(busy))


def in_flight(busy: dict) -> int:
    """Frames the busy actors have analysed of their current units (0 for any that does not answer)."""
    import ray
    from ray.exceptions import RayError

    refs = [actor.unit_frames.remote() for actor, _ in busy.values()]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5) if refs else ([], [])
    total = 0
    for ref in ready:
        try:
            total += ray.get(ref)
        except RayError:
            pass
    return total
