"""The ClickHouse cold archive, fed by dual-write, able to restore the hot store.

* `archive`: `ArchiveSettings` and `Archive`, the bounded outbox and the
  background worker writing batches (retries, overflow policy, metrics);
* `layout`: table schemas (ReplacingMergeTree, keyed by identity) and the row
  builders; payloads are `stores.encoding` blobs;
* `tiered`: `ArchivedStore`, a checkpoint store over a hot store (memory or
  Redis) that queues every write for the archive and restores threads the hot
  store lost.
"""
