"""What a face costs: bytes in the store (SQLite and PostgreSQL) and in a node's memory.

    python benchmarks/store_size.py [--faces 100000] [--real 300]

The collection is filled as benchmarks/api_load.py fills it (real LFW embeddings plus Gaussian
samples with their statistics; every face a real store row with its sealed template, image row,
change-log entry and ledger-free bulk write), once into SQLite and once into PostgreSQL (16, from
the ``pgserver`` package, started here). Printed per engine: bytes per face on disk (SQLite: the
database file after a checkpoint; PostgreSQL: ``pg_database_size`` less the empty database's),
then, in a fresh process per index kind, the growth of resident memory when the collection's
vector index is built from the store (exact below 50,000 faces, HNSW above), in bytes per face.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import fill_collection, real_embeddings  # noqa: E402

import faceledger  # noqa: E402


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def index_memory(data_dir: str, url: str | None) -> None:
    """In this (fresh) process: resident memory before and after building the index; JSON."""
    with faceledger.open(data_dir, database_url=url) as service:
        service.list_collections()
        before = resident_bytes()
        started = time.perf_counter()
        index = service.indexes.for_search("size")
        built = time.perf_counter() - started
        after = resident_bytes()
        print(json.dumps({"faces": len(index), "bytes": after - before, "approximate": index.approximate, "s": built}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=300)
    parser.add_argument("--index-memory-of", nargs=2, metavar=("DATA_DIR", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.index_memory_of:
        data_dir, url = args.index_memory_of
        index_memory(data_dir, None if url == "-" else url)
        return

    import pgserver
    import psycopg

    with tempfile.TemporaryDirectory() as root:
        server = pgserver.get_server(Path(root) / "postgresql", cleanup_mode="stop")
        admin = psycopg.connect(server.get_uri(), autocommit=True)
        admin.execute("CREATE DATABASE empty")
        admin.execute("CREATE DATABASE faces")
        with faceledger.open(Path(root) / "empty", database_url=server.get_uri("empty")):
            pass  # the schema alone
        empty = admin.execute("SELECT pg_database_size('empty')").fetchone()[0]
        for engine, url in (("SQLite", None), ("PostgreSQL", server.get_uri("faces"))):
            data_dir = Path(root) / engine
            with faceledger.open(data_dir, database_url=url) as service:
                service.create_collection(collection_id="size")
                real = real_embeddings(args.real, service)
                started = time.perf_counter()
                fill_collection(service, "size", args.faces, real)
                filled = time.perf_counter() - started
            if url is None:
                import sqlite3

                with sqlite3.connect(data_dir / "faceledger.sqlite3") as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                size = (data_dir / "faceledger.sqlite3").stat().st_size
            else:
                admin.execute("CHECKPOINT")
                size = admin.execute("SELECT pg_database_size('faces')").fetchone()[0] - empty
            measured = subprocess.run(
                [sys.executable, __file__, "--index-memory-of", str(data_dir), url or "-"],
                capture_output=True,
                text=True,
                check=True,
            )
            memory = json.loads(measured.stdout.strip().splitlines()[-1])
            kind = "HNSW" if memory["approximate"] else "exact"
            print(
                f"{engine:<10} {args.faces:,} faces written in {filled:.0f} s ({args.faces / filled:,.0f} faces/s, "
                f"one transaction each): {size / args.faces:,.0f} bytes/face on disk; "
                f"{kind} index built in {memory['s']:.1f} s, {memory['bytes'] / args.faces:,.0f} bytes/face "
                f"of memory ({args.faces / max(1, memory['bytes']) * 2**30:,.0f} faces per GiB)"
            )
        admin.close()


if __name__ == "__main__":
    main()
