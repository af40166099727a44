"""The supervisor: one per pod, no pjsua2. Plans workers, runs them as child processes, watches their heartbeats,
restarts them with back-off and forwards their status to an edge (stdout lines or Kubernetes)."""
