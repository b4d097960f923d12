"""Tools that call the running suite as a client does: `geoloc locate`, its world map, and load generation.

Nothing here is imported by a server; each talks to the orchestrator over its gRPC API.
"""
