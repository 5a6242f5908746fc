"""The embedded in-process store (the default: no server, no configuration).

* `checkpoints.MemoryStore`: threads in `stores.thread_model` form, a run-id
  index for `delete_for_runs`, and an activity index for thread listing;
* `domain.MemoryDomainStore`: one group per session id (session, conversation,
  task context, conversation sessions), each with its own TTL deadline.

Data lives as long as the process: nothing survives a restart.
"""
