"""Geo maths every expert and the fusion share: the sphere, vMF kernels and their mixtures, S2 cells, GeoScore."""
