"""The web console for reviewers, auditors and operators (docs/console.md), served by the HTTP
API's server under ``/console/``."""
