"""sipfleet-operator: reconciles SipAccounts into agent pods (kopf), keeps their status honest, repairs drift."""

__version__ = "0.1.0"
