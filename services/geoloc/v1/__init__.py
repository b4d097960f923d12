"""Generated gRPC/protobuf code for the geoloc.v1 API. Do not edit: run `python scripts/gen_protos.py`."""
