"""A real Prometheus for the local environment (tests and ``sipfleet demo --with-prometheus``): built from the pinned
Go module (``kubebin``, set ``prometheus``), run on the host as one process started and stopped by PID through
``procs``, listening on loopback only, discovering the operator and the agents through the cluster's API.

``config`` (the scrape configuration, pure), ``rules`` (the chart's alerts as a rules file, the dashboard's
queries), ``server`` (the process and its HTTP API).
"""
