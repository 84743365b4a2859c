"""Download progress kept on disk, one Parquet shard per finished batch, so a killed run resumes.

Every finished batch writes its failures shard and then its results shard, each atomically
(temporary file, then rename); a batch counts as stored only once its results shard exists, so a
kill at any moment loses at most the batches in flight. Shard names are a sequence number and a
hash of the batch's keys, never anything taken from the data (file names from the graph cannot
reach the file system). On restart the stored keys are skipped; failures whose trouble was
transient are tried again: retries ran out on 429s, timeouts, or on answers too large or damaged
that differed between attempts (a fault on the way, not the item). Permanent ones are kept: a 404,
a missing page, or the same verdict on the same bytes at every attempt (a file that really is too
large); the settings behind such a verdict (size limits) are part of the staging folder's name.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

import duckdb
import pyarrow as pa

from mlm_pipeline import sql
from mlm_pipeline.download.progress import Progress
from mlm_pipeline.shards import write_parquet
from mlm_pipeline.endpoints import ConfigError

STR = pa.string()

STAGED_FAILURES = pa.schema(
    [
        ("key", STR),
        ("reason", STR),
        ("detail", STR),
        ("transient", pa.bool_()),  # retries ran out on trouble a later run may not meet
    ]
)

K = TypeVar("K")


@dataclass
class BatchOutcome:
    results: pa.Table  # the stage's staged schema; its "key" column names the item
    failures: pa.Table  # STAGED_FAILURES


@dataclass
class Stored:
    results: pa.Table  # one row per key
    failures: pa.Table  # one row per key not in results: the latest failure


class Staging:
    """The shards of one download (one release, one configuration) in one folder."""

    def __init__(self, folder: Path, result_schema: pa.Schema) -> None:
        if result_schema.names[0] != "key":
            raise ValueError("a staged result schema starts with its 'key' column")
        self.folder = folder
        self.result_schema = result_schema
        self.folder.mkdir(parents=True, exist_ok=True)
        self._next = 1 + max((self._seq(p) for p in self._result_paths()), default=0)

    @staticmethod
    def _seq(path: Path) -> int:
        return int(path.name.split("-", 1)[0])

    def _result_paths(self) -> list[Path]:
        return sorted(self.folder.glob("*.results.parquet"), key=self._seq)

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Views of what is stored, read from the shards in place: ``staged_results``, one row
        per key (the first stored), and ``staged_failures``, for each key without a result its
        latest failure. Only batches whose results shard exists count."""
        paths = self._result_paths()
        if not paths:
            sql.register(con, staged_results=self.result_schema.empty_table(),
                         staged_failures=STAGED_FAILURES.empty_table())
            return
        results = _file_list(paths)
        failures = _file_list([p.with_name(p.name.replace(".results.", ".failures.")) for p in paths])
        shard = r"regexp_extract(filename, '(\d+)-[0-9a-f]+\.\w+\.parquet$', 1)::BIGINT"
        con.execute(f"""
            CREATE OR REPLACE VIEW staged_results AS
            SELECT {', '.join(f'"{name}"' for name in self.result_schema.names)} FROM (
                SELECT *, row_number() OVER (PARTITION BY key ORDER BY {shard}, file_row_number) AS _n
                FROM read_parquet({results}, filename = true, file_row_number = true)
            ) WHERE _n = 1""")
        # A key is only fetched while it has no result, so one writer never stores two; the
        # first wins anyway, so that two racing writers still give one row per key.
        con.execute(f"""
            CREATE OR REPLACE VIEW staged_failures AS
            SELECT key, reason, detail, transient FROM (
                SELECT *, row_number() OVER (PARTITION BY key ORDER BY {shard} DESC, file_row_number DESC) AS _n
                FROM read_parquet({failures}, filename = true, file_row_number = true)
            ) WHERE _n = 1 AND key NOT IN (SELECT key FROM staged_results)""")

    def load(self, keys_only: bool = False) -> Stored:
        """Everything stored so far (``keys_only``: without the payload, to decide what is left);
        a key's later failure supersedes its earlier one."""
        schema = pa.schema([self.result_schema.field("key")]) if keys_only else self.result_schema
        columns = ", ".join(f'"{name}"' for name in schema.names)
        with sql.connect() as con:
            self.register(con)
            return Stored(sql.table(con, f"SELECT {columns} FROM staged_results ORDER BY key", schema),
                          sql.table(con, "SELECT * FROM staged_failures ORDER BY key", STAGED_FAILURES))

    def write(self, outcome: BatchOutcome) -> None:
        keys = sorted([*outcome.results["key"].to_pylist(), *outcome.failures["key"].to_pylist()])
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        stem = f"{self._next:06d}-{digest}"
        self._next += 1
        write_parquet(outcome.failures.cast(STAGED_FAILURES), self.folder / f"{stem}.failures.parquet")
        write_parquet(outcome.results.cast(self.result_schema), self.folder / f"{stem}.results.parquet")


def pending_keys(wanted: Sequence[str], stored: Stored) -> list[str]:
    """Keys still to fetch: neither a result nor a permanent failure stored, in ``wanted``'s order."""
    done = set(stored.results["key"].to_pylist())
    failures = stored.failures.to_pydict()
    done.update(k for k, transient in zip(failures["key"], failures["transient"]) if not transient)
    return [k for k in wanted if k not in done]


def _file_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(sql.quoted(str(p)) for p in paths) + "]"


class BatchRunner(Generic[K]):
    """Runs batches with a bounded number in flight, storing each as soon as it finishes.

    The hosts' own gates bound the requests; ``parallel`` bounds how much work a kill can lose
    and how much memory unfinished batches hold.
    """

    def __init__(self, staging: Staging, progress: Progress, parallel: int) -> None:
        self.staging = staging
        self.progress = progress
        self.parallel = parallel

    async def run(self, batches: Sequence[K], work: Callable[[K], Awaitable[BatchOutcome]]) -> None:
        queue: asyncio.Queue[K] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        async def worker() -> None:
            while not queue.empty():
                outcome = await work(queue.get_nowait())
                self.staging.write(outcome)
                self.progress.add(done=outcome.results.num_rows, failed=outcome.failures.num_rows)

        self.progress.log(self.progress.line())
        reporter = asyncio.create_task(self.progress.report_every())
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.parallel, len(batches))):
                    group.create_task(worker())
        except* ConfigError as refused:  # e.g. the server refuses our User-Agent: say so, not "TaskGroup"
            raise refused.exceptions[0] from None
        finally:
            reporter.cancel()
        self.progress.log(self.progress.line())


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
