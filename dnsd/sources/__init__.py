"""Sources that feed the endpoint store, each behind the Source protocol (sources/base.py)."""
