"""sipfleet: run fleets of SIP endpoints on Kubernetes and keep their proxy route honest."""

__version__ = "0.1.0"
