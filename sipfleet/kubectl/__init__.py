"""``kubectl sipfleet``: a kubectl plugin (console script ``kubectl-sipfleet``) for people who run a sipfleet.

It depends only on ``sipfleet.api`` and the ``kubernetes`` client. Pure modules decide and format (``fmt``,
``fleet``, ``timeline``, ``doctor``, ``agentlogs``, ``annotate``, ``rbac``); ``client`` is the only one that talks to
the API; ``main`` parses the command line and wires the two. See docs/kubectl-plugin.md.
"""
