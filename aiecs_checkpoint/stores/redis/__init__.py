"""Redis as the hot store (plain Redis >= 7, no modules; standalone or Cluster).

* `client`: settings, and the sync / asyncio executors of `Call`s (retries,
  typed errors, one asyncio client per event loop);
* `checkpoints`: the checkpoint store's operations (one script call per hot
  operation); `layout`: its key names and script arguments; `scripts`: Lua;
* `domain`, `domain_layout`, `domain_scripts`: the same for sessions,
  conversations, conversation sessions and task contexts.

Every key of a thread or a session carries the hash tag of its id, so each
lives in one Cluster slot; the key tables are in `layout` and `domain_layout`.
"""
