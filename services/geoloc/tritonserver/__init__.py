"""The development launcher of the real `tritonserver` binary (`geoloc triton`, the suite, the tests).

Production runs NVIDIA's Triton image (docs/triton.md); what the embedding service needs of a
model repository (a config read as Triton serves it) is geoloc.embedding.model_config.
"""
