"""The Dask client every job that fans out uses (extraction, sharded retrieval): a scheduler's address,
or a local cluster of processes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from avmatch.errors import AvmatchError

CONNECT_TIMEOUT_S = 20  # Dask retries a refused connection until this runs out


@contextlib.contextmanager
def dask_client(address: str, workers: int = 2) -> Iterator:
    """A Dask client: of the scheduler at ``address`` (``tcp://host:8786``), or with an empty address
    of a local cluster of ``workers`` processes, one thread each."""
    try:
        import dask.distributed as dd
    except ImportError:
        raise AvmatchError("a cluster needs Dask: pip install 'avmatch[cluster]'") from None
    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(dd.Client(address, timeout=f"{CONNECT_TIMEOUT_S}s"))
            except (OSError, TimeoutError) as err:
                raise AvmatchError(f"cannot reach the Dask scheduler: {str(err).splitlines()[0]}", address) from None
        else:
            cluster = stack.enter_context(dd.LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                                          processes=True, dashboard_address=None,
                                                          silence_logs=logging.ERROR))
            client = stack.enter_context(dd.Client(cluster))
        yield client
