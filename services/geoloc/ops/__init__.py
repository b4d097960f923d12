"""`geoloc ops`: the geoloc Deployments on a Kubernetes cluster: status, scale, wait (docs/deploy.md).

The names live here, apart from the kubernetes client, so that `geoloc --help` does not import it.
"""

# The Deployments of k8s/base, named as the services are.
SERVICES = ("orchestrator", "embedding", "gallery", "sampler", "tokens", "text", "triton")
# The namespace k8s/base deploys into.
DEFAULT_NAMESPACE = "geoloc"
