"""`geoloc ops`: the geoloc Deployments on a Kubernetes cluster: status, scale, wait (docs/deploy.md).

The names live here, apart from the kubernetes client, so that `geoloc --help` does not import it.
"""

from geoloc.experts import WORKLOADS

# The Deployments of k8s/base, named as the services are: the six services and Triton.
SERVICES = WORKLOADS
# The namespace k8s/base deploys into.
DEFAULT_NAMESPACE = "geoloc"
