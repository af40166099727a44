"""sipfleet-agent: a pjsua2 SIP endpoint that registers through its configured route, answers calls,
measures the route its REGISTERs really take and repairs route drift (PJSIP issue 4066).

Modules: ``siplog`` (pure parsing of pjsip's transmit log, URI normalisation, credential scrubbing),
``config`` (assignment loading, credentials), ``engine`` (the pjsua thread, accounts, calls, repairs),
``status`` (status documents, debounce, merge patches), ``netaddr`` (local addresses and link states), ``httpserver``,
``metrics``, ``cluster`` (Kubernetes mode) and ``main`` (the ``sipfleet-agent`` command).
"""

__version__ = "0.1.0"
