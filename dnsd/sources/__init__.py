"""Where cluster objects come from: one interface per backend (files now; the Kubernetes API and etcd later)."""
