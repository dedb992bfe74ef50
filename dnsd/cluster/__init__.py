"""The cluster link: Kubernetes DNS-Based Service Discovery 1.1.0 records from the endpoint store."""
