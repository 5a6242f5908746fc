"""The storage layer: records, store protocols, and one folder per backend.

Shared by every backend (pure, no I/O):

* `records`: what a store keeps (serialized rows, values, list manifests,
  pending writes) and the logic every store applies the same way (write merge
  rules, writes order, the delta-history walk);
* `thread_model`: one thread in memory and every history rewrite (prune,
  delete_for_runs, copy), used by the memory store and by Redis's rewrites;
* `encoding`: binary encodings of records (Redis values, ClickHouse payloads);
* `domain_records`: sessions and run tracking as stores keep them;
* `protocols`: `CheckpointStore` and `DomainStore`, whose methods return
  operations (`ops`), run by the engine's sync or async runner.

Backends:

* `memory/`: the embedded default, in process memory (no server);
* `redis/`: the hot store on plain Redis >= 7, standalone or Cluster;
* `clickhouse/`: the cold archive (outbox, worker, restore), wrapping either.

Nothing here imports the engine, the saver or tracking.
"""
