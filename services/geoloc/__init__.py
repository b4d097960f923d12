"""geoloc: worldwide image geolocation served as gRPC services.

This folder is the `geoloc` import package (setup.py maps it): each service is a
subpackage (`geoloc.gallery`, ...), shared mechanics live in `geoloc.common`, and the
generated API stubs in `geoloc.v1`.
"""

__version__ = "0.1.0"
