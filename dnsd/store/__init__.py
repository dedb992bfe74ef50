"""The endpoint store: slim Kubernetes objects, their indexes, and the change events that invalidate answers."""
