"""`geoloc ops`: the geoloc Deployments on a Kubernetes cluster: status, scale, wait (docs/deploy.md).

The names live here, apart from the kubernetes client, so that `geoloc --help` does not import it.
The Deployments it manages are the registry's WORKLOADS (geoloc.experts): the six services and
Triton, each named as its service is.
"""

# The namespace k8s/base deploys into.
DEFAULT_NAMESPACE = "geoloc"
